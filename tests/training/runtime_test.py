"""TFF's runtime: shut down where SIGINT is ignored, and several workers.

A runtime whose SIGINT is ignored still stops its worker; a round spread over
several TFF workers (local processes or workers reached by address) gives the
one-worker result, and restarting the worker between rounds changes nothing.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest
import numpy as np
import portpicker
import psutil
import pytest

from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import optimizers
from research.fedrec.data import client_store
from research.fedrec.data import corpus
from research.fedrec.data import pipelines
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.models import mf
from research.fedrec.training import runtime

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

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

_NUM_ITEMS = 60


def _store(cache_dir: str) -> str:
  data = corpus.load_corpus(corpus.DataConfig(
      synthetic_config=synthetic.SyntheticConfig(
          num_users=30, num_items=_NUM_ITEMS, num_ratings=900,
          min_ratings_per_user=20)))
  return client_store.create_client_store(
      splits.split(data.ratings, splits.SplitConfig()), cache_dir)


def _round(store: str, workers: runtime.Workers, worker_pids=None):
  """Metrics and item weights after two rounds of 30 clients on `workers`.

  With `worker_pids` (a list), the training loop's `round_done` follows each
  round, and the pids of the workers that ran each round are appended.
  """
  with runtime.local_runtime(workers=workers) as tff_runtime:
    process = fed_recon.build_training_process(
        mf.MFConfig(embedding_dim=4, global_mean=3.5, seed=2), _NUM_ITEMS,
        fed_recon.ReconConfig(),
        fed_recon.Optimizers(
            client=optimizers.create_optimizer('sgd', 0.2),
            server=optimizers.create_optimizer('sgd', 1.0),
            reconstruction=optimizers.create_optimizer('sgd', 0.2)),
        pipelines.PipelineConfig(batch_size=4), store)
    clients = client_store.get_client_ids(store, client_store.TRAIN)
    state = process.initialize()
    for _ in range(2):
      output = process.next(state, clients)
      state = output.state
      if worker_pids is not None:
        worker_pids.append(
            [(w.pid, {k: v for k, v in psutil.Process(w.pid).environ().items()
                      if k.startswith('TF_NUM_')})
             for w in runtime._worker_children()])  # pylint: disable=protected-access
        tff_runtime.round_done()
    metrics = {k: float(v) for k, v in
               output.metrics['client_work']['train'].items()}
    weights = [np.asarray(w) for w in
               process.get_model_weights(state).trainable]
    num_workers = len(runtime._worker_children())  # pylint: disable=protected-access
  return metrics, weights, num_workers


class WorkersTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    runtime.release()  # Each case starts its own runtime.
    cls.cache_dir = tempfile.mkdtemp()
    cls.store = _store(cls.cache_dir)
    cls.expected = _round(cls.store, runtime.Workers())

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.cache_dir)
    super().tearDownClass()

  def _assert_same_as_one_worker(self, result):
    metrics, weights, num_workers = result
    expected_metrics, expected_weights, expected_workers = self.expected
    self.assertEqual((expected_workers, num_workers), (1, 2))
    self.assertEqual(metrics.keys(), expected_metrics.keys())
    for name, value in metrics.items():
      # Partial sums are merged in another order: float32 rounding only.
      self.assertAlmostEqual(value, expected_metrics[name], delta=1e-6 * abs(
          expected_metrics[name]), msg=name)
    self.assertIn('rmse', metrics)
    for actual, expected in zip(weights, expected_weights):
      np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    self.assertEmpty(runtime._worker_children())  # pylint: disable=protected-access

  def test_two_local_workers_give_the_one_worker_result(self):
    self._assert_same_as_one_worker(
        _round(self.store, runtime.Workers(num_workers=2)))

  def test_workers_by_address_give_the_one_worker_result(self):
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    servers = [subprocess.Popen(runtime.guarded_command(
        [runtime.worker_binary_path(), f'--port={p}'])) for p in ports]
    try:
      result = _round(self.store, runtime.Workers(
          addresses=tuple(f'localhost:{p}' for p in ports)))
    finally:
      for server in servers:
        server.terminate()  # The guard passes it on to its worker.
        server.wait()
    self._assert_same_as_one_worker(result)

  def test_restarting_the_worker_between_rounds_changes_nothing(self):
    pids = []
    with mock.patch.object(runtime, 'RESTART_EVERY_ROUNDS', 1):
      metrics, weights, num_workers = _round(self.store, runtime.Workers(),
                                             pids)
    # Each round ran on a worker of its own: the first was restarted.
    self.assertLen(pids, 2)
    self.assertTrue(all(len(p) == 1 for p in pids), pids)
    self.assertNotEqual(pids[0][0][0], pids[1][0][0])
    # Each worker ran with one thread per op, as many ops as cores.
    threads = {'TF_NUM_INTRAOP_THREADS': '1',
               'TF_NUM_INTEROP_THREADS': str(os.cpu_count())}
    self.assertEqual([p[0][1] for p in pids], [threads, threads])
    expected_metrics, expected_weights, _ = self.expected
    self.assertEqual(metrics, expected_metrics)  # Bit for bit.
    for actual, expected in zip(weights, expected_weights):
      np.testing.assert_array_equal(actual, expected)
    self.assertEqual(num_workers, 1)
    self.assertEmpty(runtime._worker_children())  # pylint: disable=protected-access

  def test_worker_environment_keeps_what_the_user_set(self):
    env = runtime.worker_environment({'PATH': '/bin',
                                      'TF_NUM_INTRAOP_THREADS': '4'})
    self.assertEqual(env, {'PATH': '/bin', 'TF_NUM_INTRAOP_THREADS': '4',
                           'TF_NUM_INTEROP_THREADS': str(os.cpu_count())})

  def test_workers_at_addresses_are_never_restarted(self):
    remote = runtime.Runtime(workers=runtime.Workers(addresses=('host:1',)))
    remote.running = True  # As if started (nothing listens at host:1).
    idle = runtime.Runtime()  # Never started.
    with mock.patch.object(runtime, 'RESTART_EVERY_ROUNDS', 1), \
        mock.patch.object(runtime, 'release') as release:
      self.assertFalse(remote.round_done())
      self.assertFalse(idle.round_done())
    release.assert_not_called()
    self.assertEqual((remote.rounds_since_start, idle.rounds_since_start),
                     (1, 1))

  def test_unreachable_worker_is_one_line(self):
    port = portpicker.pick_unused_port()
    with mock.patch.object(runtime, '_CONNECT_SECONDS', 1.0):
      with self.assertRaisesRegex(
          ValueError, f'^--worker_addresses: no TFF worker answers at '
          f'localhost:{port} within 1 s'):
        runtime.start(workers=runtime.Workers(addresses=(f'localhost:{port}',)))

  def test_invalid_settings(self):
    for kwargs, message in (
        (dict(num_workers=0), '--num_workers must be >= 1.'),
        (dict(num_workers=2, addresses=('a:1',)), '--num_workers starts'),
        (dict(addresses=('nohost',)), "'nohost' is not host:port"),
    ):
      with self.assertRaisesRegex(ValueError, message):
        runtime.Workers(**kwargs)
    with self.assertRaisesRegex(ValueError, '--secure_aggregation runs on one'):
      runtime.start(True, runtime.Workers(num_workers=2))


if __name__ == '__main__':
  absltest.main()
