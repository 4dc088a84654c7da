"""The training loop: checkpoints, released metrics, and exact resumption."""

import csv
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow_federated as tff

from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import optimizers
from research.fedrec.algorithms import sampling
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.models import mf
from research.fedrec.training import loop
from research.fedrec.training import runtime
from tests.algorithms import testing_data

_ROUNDS = 4


def setUpModule():
  runtime.start()


def tearDownModule():
  runtime.release()


class _Killed(Exception):
  """Stands in for the process being killed."""


class LoopTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cache_dir = tempfile.mkdtemp()
    store = client_store.create_client_store(testing_data.create_split(),
                                             cls.cache_dir)
    cls.store = store
    cls.process = cls._build_process(server_learning_rate=1.0)
    cls.sampler = sampling.ClientSampler(['0', '1'], 1, seed=5)

  @classmethod
  def _build_process(cls, server_learning_rate):
    return fed_recon.build_training_process(
        mf.MFConfig(embedding_dim=2), testing_data.NUM_ITEMS,
        fed_recon.ReconConfig(),
        fed_recon.Optimizers(
            optimizers.create_optimizer('sgd', 0.2),
            optimizers.create_optimizer('sgd', server_learning_rate),
            optimizers.create_optimizer('sgd', 0.1)),
        pipelines.PipelineConfig(batch_size=1), cls.store)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.cache_dir)
    super().tearDownClass()

  def _run(self, output_dir, kill_at_round=None, process=None,
           prepare_round=None, scores=None, evaluated_weights=None):
    """(final state, evaluated rounds); with `scores` (round -> val/hr),
    selects by val/hr and returns the selection as well."""
    process = process or self.process

    def sample(round_num):
      if round_num == kill_at_round:
        raise _Killed()
      return self.sampler.sample(round_num)

    evaluations = []

    def evaluate(weights, round_num):
      evaluations.append(round_num)
      metrics = {'val/norm': float(np.linalg.norm(weights.trainable[0]))}
      if scores is not None:
        metrics['val/sampled/hr@10'] = scores[round_num]
        if evaluated_weights is not None:
          evaluated_weights[round_num] = weights
      return metrics

    state, _, selection = loop.run_training_loop(
        process, sample, lambda clients: 2 * len(clients), evaluate,
        loop.LoopConfig(total_rounds=_ROUNDS, eval_every=2,
                        checkpoint_every=2, progress=False,
                        select_by='' if scores is None else 'sampled/hr@10'),
        tff.program.FileProgramStateManager(
            os.path.join(output_dir, 'checkpoints')),
        [tff.program.CSVFileReleaseManager(
            os.path.join(output_dir, 'metrics.csv'), key_fieldname='round')],
        prepare_round=prepare_round)
    if scores is not None:
      return state, evaluations, selection
    self.assertEqual(selection.round, _ROUNDS)  # The last round's model.
    for a, b in zip(selection.weights.trainable,
                    process.get_model_weights(state).trainable):
      np.testing.assert_array_equal(a, b)
    return state, evaluations

  @pytest.mark.slow
  def test_a_cohort_process_is_told_the_next_rounds_users(self):
    calls = []

    class _Announced:  # A process that packs ahead, as CohortProcess does.

      def __init__(self, process):
        self._process = process

      def prefetch(self, client_ids):
        calls.append(('prefetch', list(client_ids)))

      def next(self, state, client_ids):
        calls.append(('next', list(client_ids)))
        return self._process.next(state, client_ids)

      def __getattr__(self, name):
        return getattr(self._process, name)

    self._run(self.create_tempdir().full_path,
              process=_Announced(self.process))
    rounds = [list(self.sampler.sample(r)) for r in range(1, _ROUNDS + 1)]
    expected = []
    for r in range(_ROUNDS):
      if r + 1 < _ROUNDS:
        expected.append(('prefetch', rounds[r + 1]))
      expected.append(('next', rounds[r]))
    self.assertEqual(calls, expected)

  def _rows(self, output_dir):
    with open(os.path.join(output_dir, 'metrics.csv')) as f:
      return list(csv.DictReader(f))

  @pytest.mark.slow
  def test_metrics_rows_and_evaluation_cadence(self):
    out = self.create_tempdir().full_path
    _, evaluations = self._run(out)
    self.assertEqual(evaluations, [2, 4])
    rows = self._rows(out)
    self.assertEqual([r['round'] for r in rows], ['1', '2', '3', '4'])
    self.assertEqual([r['val/norm'] != '' for r in rows],
                     [False, True, False, True])
    self.assertEqual({r['clients'] for r in rows}, {'1'})
    for column in ('train/rmse', 'train/mae', 'round_seconds',
                   'examples_per_second'):
      self.assertTrue(all(float(r[column]) > 0 for r in rows), column)

  @pytest.mark.slow
  def test_killed_run_resumes_to_the_same_result(self):
    straight, killed = (self.create_tempdir().full_path for _ in range(2))
    final_straight, _ = self._run(straight)
    with self.assertRaises(_Killed):
      self._run(killed, kill_at_round=4)  # Checkpoint at 2, row 3 written.
    self.assertLen(self._rows(killed), 3)
    final_resumed, evaluations = self._run(killed)
    self.assertEqual(evaluations, [4])  # Rounds 3 and 4 only.
    for a, b in zip(self.process.get_model_weights(final_straight).trainable,
                    self.process.get_model_weights(final_resumed).trainable):
      np.testing.assert_array_equal(a, b)
    deterministic = ('round', 'clients', 'train/rmse', 'train/mse',
                     'train/mae', 'train/rating_accuracy', 'val/norm')
    self.assertEqual(
        [[r[c] for c in deterministic] for r in self._rows(killed)],
        [[r[c] for c in deterministic] for r in self._rows(straight)])

  @pytest.mark.slow
  def test_selects_the_round_best_on_validation_and_resumes_it(self):
    scores = {2: 0.4, 4: 0.3}
    straight, killed = (self.create_tempdir().full_path for _ in range(2))
    weights = {}
    final, _, selection = self._run(straight, scores=scores,
                                    evaluated_weights=weights)
    self.assertEqual((selection.round, selection.value), (2, 0.4))
    for a, b in zip(selection.weights.trainable, weights[2].trainable):
      np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(
        selection.weights.trainable[0],
        self.process.get_model_weights(final).trainable[0]))
    self.assertEqual([r['selected_round'] for r in self._rows(straight)],
                     ['', '2', '', '2'])
    # Killed after the checkpoint of round 2: the resumed run restores the
    # selection from the checkpoint, evaluates round 4 only, and ends alike.
    with self.assertRaises(_Killed):
      self._run(killed, kill_at_round=4, scores=scores)
    _, evaluations, resumed = self._run(killed, scores=scores)
    self.assertEqual(evaluations, [4])
    self.assertEqual((resumed.round, resumed.value), (2, 0.4))
    for a, b in zip(resumed.weights.trainable, selection.weights.trainable):
      np.testing.assert_array_equal(a, b)
    # A later round only replaces it when strictly better.
    _, _, tied = self._run(self.create_tempdir().full_path,
                           scores={2: 0.4, 4: 0.4})
    self.assertEqual(tied.round, 2)
    _, _, later = self._run(self.create_tempdir().full_path,
                            scores={2: 0.1, 4: 0.3})
    self.assertEqual(later.round, 4)

  def test_better(self):
    self.assertTrue(loop.better('sampled/hr@10', 0.5, 0.4))
    self.assertFalse(loop.better('sampled/hr@10', 0.4, 0.4))
    self.assertTrue(loop.better('rmse', 0.9, 1.0))
    self.assertFalse(loop.better('mae', 1.1, 1.0))
    self.assertTrue(loop.better('full/ndcg@10', 0.0, float('nan')))
    self.assertFalse(loop.better('rmse', float('nan'), 1.0))

  @pytest.mark.slow
  def test_server_learning_rate_set_each_round(self):
    # Server SGD at 1.0 with every round's rate set to 0.5 is server SGD 0.5.
    halved, built = (self.create_tempdir().full_path for _ in range(2))
    final_set, _ = self._run(
        halved, prepare_round=loop.server_learning_rate_setter(
            self.process, lambda r: 0.5))
    final_built, _ = self._run(built, process=self._build_process(0.5))
    for a, b in zip(self.process.get_model_weights(final_set).trainable,
                    self.process.get_model_weights(final_built).trainable):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(
        [r['server_learning_rate'] for r in self._rows(halved)],
        ['0.5'] * _ROUNDS)
    hparams = self.process.get_hparams(final_set)
    self.assertEqual(float(hparams['finalizer']['learning_rate']), 0.5)

  @pytest.mark.slow
  def test_killed_scheduled_run_resumes_to_the_same_result(self):
    schedule = lambda r: optimizers.scheduled_learning_rate(
        'cosine', 1.0, r, _ROUNDS)
    straight, killed = (self.create_tempdir().full_path for _ in range(2))
    prepare = loop.server_learning_rate_setter(self.process, schedule)
    final_straight, _ = self._run(straight, prepare_round=prepare)
    with self.assertRaises(_Killed):
      self._run(killed, kill_at_round=4, prepare_round=prepare)
    final_resumed, _ = self._run(killed, prepare_round=prepare)
    for a, b in zip(self.process.get_model_weights(final_straight).trainable,
                    self.process.get_model_weights(final_resumed).trainable):
      np.testing.assert_array_equal(a, b)
    rates = [float(r['server_learning_rate']) for r in self._rows(killed)]
    self.assertEqual(rates, [schedule(r) for r in range(1, _ROUNDS + 1)])
    self.assertEqual(rates, [float(r['server_learning_rate'])
                             for r in self._rows(straight)])

  @pytest.mark.slow
  def test_finished_run_is_not_rerun(self):
    out = self.create_tempdir().full_path
    first, _ = self._run(out)
    again, evaluations = self._run(out)
    self.assertEmpty(evaluations)
    np.testing.assert_array_equal(
        self.process.get_model_weights(first).trainable[0],
        self.process.get_model_weights(again).trainable[0])

  @pytest.mark.slow
  def test_checkpoint_of_another_state_is_one_clear_error(self):
    directory = self.create_tempdir().full_path
    manager = tff.program.FileProgramStateManager(directory)
    loop._run(manager.save({'state': np.zeros(2, np.float32)}, 1))
    with self.assertRaisesRegex(
        ValueError, f'^{directory}: the latest checkpoint does not match'):
      loop.load_latest(manager, {'state': np.zeros(2, np.float32),
                                 'privacy_rounds': 0}, directory)
    saved, version = loop.load_latest(manager,
                                      {'state': np.ones(2, np.float32)})
    np.testing.assert_array_equal(saved['state'], [0, 0])
    self.assertEqual(version, 1)

  def test_flatten_metrics(self):
    self.assertEqual(
        loop.flatten_metrics({'a': {'b': np.float32(1.5), 'c': 'text'},
                              'd': 2}, 'p/'),
        {'p/a/b': 1.5, 'p/d': 2.0})


if __name__ == '__main__':
  absltest.main()
