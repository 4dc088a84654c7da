"""The binaries' start-up: one line for an unexpected failure, with its log."""

import os
import re
import subprocess
import sys

from absl.testing import absltest

from research.fedrec.utils import phases
from tests import binaries

# A binary whose main fails unexpectedly inside a phase (no TensorFlow).
_FAILING_BINARY = """
from research.fedrec.utils import cli
from research.fedrec.utils import phases

def main(argv):
  with phases.phase('outer'):
    with phases.phase('counting sheep'):
      1 / 0

cli.run(main, 'sheep.py', preload='')
"""


class PhasesTest(absltest.TestCase):

  def test_the_innermost_phase_names_the_failure(self):
    with self.assertRaises(KeyError) as caught:
      with phases.phase('outer'):
        with phases.phase('inner'):
          raise KeyError('x')
    self.assertEqual(phases.phase_of(caught.exception), 'inner')
    self.assertIsNone(phases.phase_of(ValueError('never raised in one')))


# A binary interrupted while a garbage-collector callback runs (as jax's
# `_xla_gc_callback` can be): the callback signals its own process.
_INTERRUPTED_IN_GC_BINARY = """
import gc, os, signal, time
from research.fedrec.utils import cli

def callback(phase, info):
  if phase == 'start' and not callback.done:
    callback.done = True
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # The handler runs here, inside the callback.
callback.done = False

def main(argv):
  gc.callbacks.append(callback)
  gc.collect()
  time.sleep(5)
  print('not interrupted')

cli.run(main, 'gc.py', preload='')
"""


class SignalTest(absltest.TestCase):

  def test_a_signal_inside_a_gc_callback_still_exits_cleanly(self):
    # Raised inside the callback, SystemExit would be printed with a
    # traceback ("Exception ignored in ...") and lost.
    tmp = self.create_tempdir().full_path
    script = os.path.join(tmp, 'gc.py')
    with open(script, 'w') as f:
      f.write(_INTERRUPTED_IN_GC_BINARY)
    result = subprocess.run(
        [sys.executable, script], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=binaries.REPO_ROOT), cwd=tmp,
        timeout=60, check=False)
    self.assertEqual(result.returncode, 130, result.stderr)
    self.assertNotIn('Traceback', result.stderr)
    self.assertNotIn('not interrupted', result.stdout)


class UnexpectedFailureTest(absltest.TestCase):

  def test_one_line_naming_the_phase_and_a_log_with_the_traceback(self):
    tmp = self.create_tempdir().full_path
    env = dict(os.environ, PYTHONPATH=binaries.REPO_ROOT, TMPDIR=tmp)
    script = os.path.join(tmp, 'sheep.py')
    with open(script, 'w') as f:
      f.write(_FAILING_BINARY)
    result = subprocess.run([sys.executable, script],
                            capture_output=True, text=True, env=env,
                            cwd=tmp, timeout=60, check=False)
    self.assertEqual(result.returncode, 1)
    (line,) = result.stderr.strip().splitlines()
    match = re.fullmatch(
        r'sheep.py: error: unexpected ZeroDivisionError while counting sheep: '
        r'division by zero \(the full traceback is in (\S+); please report it '
        r'with that file\).', line)
    self.assertIsNotNone(match, line)
    log = match.group(1)
    self.assertEqual(os.path.dirname(log), tmp)  # The system's temp folder.
    self.assertStartsWith(os.path.basename(log), 'fedrec-sheep-')
    with open(log) as f:
      text = f.read()
    self.assertIn('Traceback (most recent call last)', text)
    self.assertIn('1 / 0', text)
    self.assertTrue(text.endswith('ZeroDivisionError: division by zero\n'))


if __name__ == '__main__':
  absltest.main()
