"""Runs this project's binaries in a subprocess, as from a user's shell."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_binary(name: str, *args: str,
               timeout: float = 600) -> subprocess.CompletedProcess:
  """`python -m research.fedrec.<name> ARGS` from the repo root, captured."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  # As from a user's shell: jax, imported by the test process, sets it.
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.run(
      [sys.executable, '-m', f'research.fedrec.{name}', *args],
      capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout,
      check=False)
