"""Runs this project's binaries in a subprocess, as from a user's shell."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Set in the environment of every binary a test starts, and so inherited by
# every process those start: `leftover_workers` finds only those.
TOKEN_VARIABLE = 'FEDREC_TEST_TOKEN'


def leftover_workers(token: str) -> list:
  """Live TFF workers (and guards) whose environment carries `token`.

  Other processes on the machine, other people's workers included, are never
  counted.
  """
  import psutil  # pylint: disable=g-import-not-at-top
  found = []
  for process in psutil.process_iter(['cmdline', 'status']):
    try:
      command = ' '.join(process.info['cmdline'] or [])[:400]
      if (('worker_binary' in command or 'worker_guard.py' in command) and
          process.info['status'] != psutil.STATUS_ZOMBIE and
          process.environ().get(TOKEN_VARIABLE) == token):
        found.append(process)
    except psutil.Error:
      continue
  return found


def run_binary(name: str, *args: str, timeout: float = 600,
               token: str = '') -> subprocess.CompletedProcess:
  """`python -m research.fedrec.<name> ARGS` from the repo root, captured.

  With `token`, the binary's environment carries it (see `leftover_workers`).
  """
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  if token:
    env[TOKEN_VARIABLE] = token
  # As from a user's shell: jax, imported by the test process, sets it.
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.run(
      [sys.executable, '-m', f'research.fedrec.{name}', *args],
      capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout,
      check=False)
