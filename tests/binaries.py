"""Runs this project's binaries in a subprocess, as from a user's shell."""

import contextlib
import io
import os
import subprocess
import sys
import warnings

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


def run_main(module, *args: str) -> tuple[int, str, str]:
  """Runs a binary's `main` in this process: (exit code, stdout, stderr).

  For mistakes the library reports through the binary's one-line handler:
  as from the shell, without the cost of a new process importing TensorFlow.
  The binary's flags are restored afterwards.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  name = module.__name__.rsplit('.', 1)[-1]
  out, err = io.StringIO(), io.StringIO()
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS([name, *args])
    code = 0
    # Library deprecation warnings (printed once per process) are not ours.
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
        warnings.catch_warnings():
      warnings.simplefilter('ignore')
      try:
        module.main([name])
      except SystemExit as e:
        code = e.code
  return code, out.getvalue(), err.getvalue()
