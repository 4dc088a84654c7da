"""The cohort packer: the per-client batch order, cohort limits, refusals."""

import collections
import os
import shutil
import tempfile
import threading
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import client_data
from research.fedrec.algorithms import cohorts
from research.fedrec.algorithms import fed_avg_cohort
from research.fedrec.algorithms import fed_recon
from research.fedrec.data import client_store
from research.fedrec.data import corpus
from research.fedrec.data import pipelines
from research.fedrec.data import splits
from research.fedrec.models import autorec
from research.fedrec.models import ncf
from research.fedrec.privacy import settings
from research.fedrec.training import experiment
from tests.algorithms import testing_data

# Users 0..9 with 1, 3, 5, ..., 19 ratings each.
_COUNTS = list(range(1, 20, 2))
_NUM_ITEMS = 25


def _corpus(duplicate=False):
  rng = np.random.default_rng(0)
  users, items, values = [], [], []
  for user, count in enumerate(_COUNTS):
    users += [user] * count
    items += rng.choice(_NUM_ITEMS, count, replace=False).tolist()
    values += rng.integers(1, 6, count).tolist()
  if duplicate:
    users.append(4)
    items.append(items[users.index(4)])
    values.append(1)
  train = testing_data.table(users, items, values)
  return splits.Split(train, testing_data.TEST, testing_data.TEST)


def _pipeline_batches(store, client_id, pipeline):
  """The per-client pipeline's training batches, built as the runtime does.

  In a fresh graph with no global seed, like the TFF runtime's.
  """
  graph = tf.Graph()
  with graph.as_default():
    dataset = client_data.create_recon_train_fn(pipeline)(
        client_store._build_dataset_fn(store, client_store.TRAIN)(  # pylint: disable=protected-access
            tf.constant(client_id)))
    # Batches of the pipeline's size, the last one partial.
    sizes = dataset.map(lambda b: tf.size(b['y'])).batch(1000)
    batches = (dataset.unbatch().batch(1000).get_single_element(),
               sizes.get_single_element())
  with tf.compat.v1.Session(graph=graph) as session:
    elements, sizes = session.run(batches)
  return elements, sizes


class CohortPackerTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.cache_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.cache_dir)
    self.store = client_store.create_client_store(_corpus(), self.cache_dir,
                                                  log=lambda _: None)

  def test_each_user_is_laid_out_in_the_per_client_batch_order(self):
    for pipeline in (pipelines.PipelineConfig(batch_size=4, seed=3),
                     pipelines.PipelineConfig(batch_size=3, seed=11,
                                              max_examples_per_user=7)):
      packer = cohorts.CohortPacker(self.store, pipeline)
      users = [str(u) for u in range(len(_COUNTS))]
      (cohort,) = packer.cohorts(users)
      # Sorted by size, largest first; L is a multiple of the batch size.
      order = sorted(users, key=lambda c: -packer.examples(c))
      self.assertEqual(cohort['items'].shape[1] % pipeline.batch_size, 0)
      for row, user in enumerate(order):
        expected, sizes = _pipeline_batches(self.store, user, pipeline)
        count = len(expected['x'])
        # Full batches but the last: packed rows cut at the batch size are
        # the pipeline's batches.
        self.assertTrue(all(s == pipeline.batch_size for s in sizes[:-1]))
        self.assertEqual(cohort['counts'][row], count)
        self.assertEqual(count, min(_COUNTS[int(user)],
                                    pipeline.max_examples_per_user or 99))
        np.testing.assert_array_equal(cohort['items'][row, :count],
                                      expected['x'])
        np.testing.assert_array_equal(cohort['ratings'][row, :count],
                                      expected['y'])
        # Padding is zeros (masked out by the client work).
        self.assertFalse(np.any(cohort['items'][row, count:]))

  def test_a_global_seed_does_not_change_the_order(self):
    pipeline = pipelines.PipelineConfig(batch_size=4, seed=3)
    before = cohorts.CohortPacker(self.store, pipeline).cohorts(['9'])
    tf.random.set_seed(1234)
    after = cohorts.CohortPacker(self.store, pipeline).cohorts(['9'])
    np.testing.assert_array_equal(before[0]['items'], after[0]['items'])

  def test_cohorts_respect_the_size_limits_and_are_never_empty(self):
    pipeline = pipelines.PipelineConfig(batch_size=2)
    users = [str(u) for u in range(len(_COUNTS))]
    packer = cohorts.CohortPacker(self.store, pipeline, cohort_size=3)
    packed = packer.cohorts(users)
    self.assertEqual([len(c['counts']) for c in packed], [3, 3, 3, 1])
    self.assertEqual(sorted(np.concatenate([c['counts'] for c in packed])),
                     sorted(_COUNTS))
    # The padded length is that of each cohort's largest user: 19 -> 20, ...
    self.assertEqual([c['items'].shape[1] for c in packed], [20, 14, 8, 2])
    # At most COHORT_RATINGS padded ratings, unless one user holds more.
    with mock.patch.object(cohorts, 'COHORT_RATINGS', 30):
      packed = cohorts.CohortPacker(self.store, pipeline).cohorts(users)
    self.assertEqual([c['counts'].tolist() for c in packed],
                     [[19], [17], [15], [13, 11], [9, 7, 5], [3, 1]])
    self.assertTrue(all(len(c['counts']) * c['items'].shape[1] <= 30 or
                        len(c['counts']) == 1 for c in packed))
    self.assertEqual(packer.cohorts([]), [])
    with self.assertRaisesRegex(ValueError, '--cohort_size=-1: expected >= 0'):
      cohorts.CohortPacker(self.store, pipeline, cohort_size=-1)

  def test_a_repeated_rating_is_refused_in_one_line(self):
    store = client_store.create_client_store(
        _corpus(duplicate=True), os.path.join(self.cache_dir, 'dup'),
        log=lambda _: None)
    with self.assertRaisesRegex(
        ValueError, r'^--execution=cohort: a user rated an item more than '
        r'once in the training split; use --execution=per_client[^\n]*$'):
      cohorts.CohortPacker(store, pipelines.PipelineConfig())


class DistinctSlotsTest(absltest.TestCase):

  def _check(self, items, counts, num_items):
    slots, slot_items = cohorts.distinct_slots(items, counts, num_items)
    self.assertEqual(slots.shape, items.shape)
    width = 1
    for k, count in enumerate(counts):
      # The definition: np.unique of the user's examples, with inverse.
      touched, inverse = np.unique(items[k, :, :count], return_inverse=True)
      width = max(width, len(touched))
      np.testing.assert_array_equal(slots[k, :, :count],
                                    inverse.reshape(items.shape[1], count))
      np.testing.assert_array_equal(slots[k, :, count:], 0)
      np.testing.assert_array_equal(slot_items[k, :len(touched)], touched)
      np.testing.assert_array_equal(slot_items[k, len(touched):], 0)
    self.assertEqual(slot_items.shape, (len(counts), width))

  def test_equals_each_users_unique(self):
    rng = np.random.default_rng(3)
    num_items = 40
    counts = np.array([7, 0, 12, 1, 12], np.int32)
    items = rng.integers(0, num_items, (5, 2, 12)).astype(np.int32)
    for k, count in enumerate(counts):  # Padding: any value, ignored.
      items[k, :, count:] = rng.integers(0, num_items)
    self._check(items, counts, num_items)
    # A cohort too large for the [K, items] table: sorted per user.
    with mock.patch.object(cohorts, '_SLOT_TABLE_CELLS', 10):
      self._check(items, counts, num_items)
    # Nobody with an example.
    slots, slot_items = cohorts.distinct_slots(
        items[:2, :, :3] * 0, np.zeros(2, np.int32), num_items)
    np.testing.assert_array_equal(slots, 0)
    np.testing.assert_array_equal(slot_items, np.zeros((2, 1)))


class _RecordingPacker:
  """Packs each user as a one-user cohort, recording the calls' threads."""

  def __init__(self, fail_on=()):
    self.calls = []
    self._fail_on = fail_on

  def cohorts(self, client_ids):
    self.calls.append((list(client_ids), threading.current_thread().name))
    if set(client_ids) & set(self._fail_on):
      raise ValueError('no such user')
    return [collections.OrderedDict(users=np.array([int(c)], np.int32))
            for c in client_ids]


class _EchoProcess:
  """`next` returns the users of the cohorts it was given."""

  def next(self, state, datasets):
    del state
    return [int(d.get_single_element()['users'][0]) for d in datasets]


class PrefetchTest(absltest.TestCase):

  def test_the_next_round_is_packed_while_this_one_runs(self):
    packer = _RecordingPacker()
    process = cohorts.CohortProcess(_EchoProcess(), packer)
    with mock.patch.object(cohorts, 'zeroing_measured_by_aggregator',
                           lambda output: output):
      process.prefetch(['3', '4'])
      self.assertEqual(process.next(None, ['1', '2']), [1, 2])
      # Round 2 was packed in the packing thread, not again now.
      self.assertEqual(process.next(None, ['3', '4']), [3, 4])
      self.assertEqual(packer.calls, [(['1', '2'], 'MainThread'),
                                      (['3', '4'], 'cohort-packer')])
      # A round other than the one announced is packed when it comes.
      process.prefetch(['5'])
      self.assertEqual(process.next(None, ['6']), [6])
      self.assertEqual(process.next(None, ['7']), [7])
      self.assertEqual([ids for ids, _ in packer.calls[2:]],
                       [['6'], ['5'], ['7']])

  def test_a_packing_error_is_raised_at_its_round(self):
    process = cohorts.CohortProcess(_EchoProcess(),
                                    _RecordingPacker(fail_on=['9']))
    with mock.patch.object(cohorts, 'zeroing_measured_by_aggregator',
                           lambda output: output):
      process.prefetch(['9'])
      self.assertEqual(process.next(None, ['1']), [1])  # Not this round's.
      with self.assertRaisesRegex(ValueError, '^no such user$'):
        process.next(None, ['9'])


class CohortSizeTest(absltest.TestCase):

  def test_models_with_large_dense_layers_come_in_smaller_cohorts(self):
    # U-AutoRec holds two [items, hidden] kernels and both biases per user:
    # 2 * 1682 * 500 + 500 + 1682 = 1,684,182 floats on ML-100K, so
    # 2^25 // 1,684,182 = 19 users per cohort at most (ML-1M: 3706 items,
    # 3,708,206 floats, 9 users).
    big = autorec.AutoRecConfig(hidden_units=500)
    self.assertEqual(fed_avg_cohort.users_per_cohort(big, 1682, 943, 0), 19)
    self.assertEqual(fed_avg_cohort.users_per_cohort(big, 1682, 943, 5), 5)
    self.assertEqual(fed_avg_cohort.users_per_cohort(big, 3706, 6040, 64), 9)
    # NCF's dense layers are small: the --cohort_size (or its default).
    self.assertEqual(fed_avg_cohort.users_per_cohort(ncf.NeuMFConfig(), 3706,
                                                     6040, 0),
                     cohorts.DEFAULT_COHORT_SIZE)
    with mock.patch.object(fed_avg_cohort, 'COPY_FLOATS', 10):
      self.assertEqual(fed_avg_cohort.users_per_cohort(big, 1682, 943, 0), 1)
    # A negative size is the packer's to refuse.
    self.assertEqual(fed_avg_cohort.users_per_cohort(big, 1682, 943, -1), -1)


class ExecutionSettingTest(absltest.TestCase):

  def _config(self, **overrides):
    return experiment.default_config('/tmp/unused', 'run', **overrides)

  def test_auto_runs_in_cohorts_where_supported(self):
    # The main job's defaults (adaptive zeroing, per user in cohorts) and
    # without zeroing.
    self.assertTrue(self._config().in_cohorts)
    self.assertTrue(self._config(aggregation=settings.AggregationConfig(
        zeroing=False)).in_cohorts)
    # User-level DP, fixed and adaptive clipping (clipped per user); secure
    # aggregation (its bound scaled to the cohort).
    for mechanism in (settings.Mechanism.FIXED, settings.Mechanism.ADAPTIVE):
      self.assertTrue(self._config(dp=settings.DPConfig(
          mechanism=mechanism, noise_multiplier=1.0)).in_cohorts)
    self.assertTrue(self._config(
        dp=settings.DPConfig(mechanism=settings.Mechanism.FIXED,
                             noise_multiplier=1.0),
        aggregation=settings.AggregationConfig(
            secure_aggregation=True)).in_cohorts)
    self.assertFalse(self._config(execution='per_client').in_cohorts)
    # Implicit MF with SGD, and with the implicit defaults (Adam).
    sgd = experiment.OptimizerConfig(client='sgd', reconstruction='sgd')
    self.assertTrue(self._config(feedback=corpus.Feedback.IMPLICIT,
                                 optimizers=sgd).in_cohorts)
    self.assertTrue(self._config(feedback=corpus.Feedback.IMPLICIT
                                 ).in_cohorts)
    # FedAvg and FedProx of MF and NCF with SGD, explicit and implicit.
    self.assertTrue(self._config(algorithm='fedavg').in_cohorts)
    self.assertTrue(self._config(algorithm='fedprox',
                                 feedback=corpus.Feedback.IMPLICIT,
                                 optimizers=sgd).in_cohorts)
    self.assertTrue(self._config(algorithm='fedavg', model=ncf.NeuMFConfig(),
                                 feedback=corpus.Feedback.IMPLICIT,
                                 optimizers=sgd).in_cohorts)
    # FedRecon of NCF, implicit feedback; with --split_dataset.
    self.assertTrue(self._config(model=ncf.GMFConfig(), optimizers=sgd,
                                 feedback=corpus.Feedback.IMPLICIT).in_cohorts)
    self.assertTrue(self._config(
        feedback=corpus.Feedback.IMPLICIT,
        recon=fed_recon.ReconConfig(split_dataset=True)).in_cohorts)
    # U-AutoRec under FedAvg and FedProx (implicit feedback only).
    for algorithm in ('fedavg', 'fedprox'):
      self.assertTrue(self._config(
          algorithm=algorithm, model=autorec.AutoRecConfig(),
          feedback=corpus.Feedback.IMPLICIT).in_cohorts)
    # Stateful client optimizers: FedAvg (any feedback), FedRecon of NCF
    # under implicit feedback with its defaults (Adam).
    self.assertTrue(self._config(algorithm='fedavg', optimizers=(
        experiment.OptimizerConfig(client='adam'))).in_cohorts)
    self.assertTrue(self._config(
        model=ncf.NeuMFConfig(), feedback=corpus.Feedback.IMPLICIT,
        optimizers=experiment.OptimizerConfig(
            client='adam', reconstruction='adam')).in_cohorts)
    # FedRecon of MF under explicit feedback with stateful optimizers.
    self.assertTrue(self._config(optimizers=(
        experiment.OptimizerConfig(reconstruction='sgdm'))).in_cohorts)
    self.assertTrue(self._config(optimizers=experiment.OptimizerConfig(
        client='adam', reconstruction='adam')).in_cohorts)
    # Unsupported under auto: per_client, silently (the reference).
    self.assertFalse(self._config(aggregation=settings.AggregationConfig(
        compression=settings.Compression.QUANTIZE)).in_cohorts)

  def test_an_unsupported_combination_is_refused_in_one_line(self):
    implicit = corpus.Feedback.IMPLICIT
    for overrides, reason in (
        (dict(aggregation=settings.AggregationConfig(
            compression=settings.Compression.QUANTIZE)),
         '--compression has no per-user form in cohorts yet'),
        (dict(algorithm='centralized'),
         'centralized trains no learning process'),
    ):
      with self.subTest(reason):
        given = dict(execution='cohort')
        given.update(overrides)
        with self.assertRaisesRegex(
            ValueError, r'^--execution=cohort: [^\n]*' + reason +
            r'[^\n]*; use --execution=per_client or auto\.$'):
          experiment.default_config('/tmp/unused', 'run', **given)
    # Every registered model has a cohort client work; a model that had
    # none would be named.
    self.assertEqual(
        cohorts.common_unsupported(self._config(
            algorithm='fedavg', feedback=implicit,
            model=autorec.AutoRecConfig()), ('mf', 'neumf'))[0],
        '--model=autorec has no cohort client work yet (only mf, neumf)')
    with self.assertRaisesRegex(ValueError, '--execution=fast: expected one '
                                'of auto, cohort, per_client'):
      self._config(execution='fast')
    with self.assertRaisesRegex(ValueError, '--cohort_size=-2'):
      self._config(cohort_size=-2)


if __name__ == '__main__':
  absltest.main()
