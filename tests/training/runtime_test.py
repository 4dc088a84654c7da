"""The TFF runtime shuts down even where SIGINT is ignored, leaving no worker."""

import os
import signal
import subprocess
import sys
import textwrap

from absl.testing import absltest
import psutil

_SCRIPT = textwrap.dedent("""
    import os
    import tensorflow as tf
    import tensorflow_federated as tff
    from research.fedrec.training import runtime

    with runtime.local_runtime():
      computation = tff.tensorflow.computation(lambda: tf.constant(7))
      assert computation() == 7
      print('worker', runtime._worker_children()[0].pid, flush=True)
    assert not runtime._worker_children()
    print('done', flush=True)
""")


def _ignore_sigint():
  signal.signal(signal.SIGINT, signal.SIG_IGN)


class RuntimeTest(absltest.TestCase):

  def test_shutdown_where_sigint_is_ignored(self):
    # Background jobs of a non-interactive shell start with SIGINT ignored;
    # TFF's own shutdown would then wait forever on its worker.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path),
               TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, '-c', _SCRIPT], env=env,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=_ignore_sigint, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    lines = result.stdout.split()
    self.assertEqual(lines[0], 'worker')
    self.assertEqual(lines[-1], 'done')
    self.assertFalse(psutil.pid_exists(int(lines[1])) and
                     psutil.Process(int(lines[1])).status() !=
                     psutil.STATUS_ZOMBIE)


if __name__ == '__main__':
  absltest.main()
