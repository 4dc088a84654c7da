"""Cross-silo runs end to end (--partition=silo; data/silos.py)."""

import csv
import dataclasses
import json
import os

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from research.fedrec.algorithms import sampling
from research.fedrec.algorithms import sparse_uploads
from research.fedrec.data import corpus
from research.fedrec.data import ratings
from research.fedrec.data import silos
from research.fedrec.data import synthetic
from research.fedrec.privacy import accounting
from research.fedrec.privacy import aggregation
from research.fedrec.privacy import settings
from research.fedrec.training import centralized
from research.fedrec.training import experiment
from research.fedrec.training import loop
from research.fedrec.training import runtime
from research.fedrec.training import trained

_DATA = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
    num_users=30, num_items=40, num_ratings=900, min_ratings_per_user=20))
_SILOS = silos.SiloConfig(partition='silo', num_silos=3)
_DP = dict(mechanism=settings.Mechanism.FIXED, noise_multiplier=1.0,
           clip=0.5)


def _config(root, name, **overrides):
  values = dict(
      root_output_dir=root, experiment_name=name, data=_DATA,
      loop=loop.LoopConfig(total_rounds=2, eval_every=1, progress=False),
      clients_per_round=3, run_centralized_baseline=False,
      centralized=centralized.CentralizedConfig(epochs=1, batch_size=64))
  values.update(overrides)
  return experiment.ExperimentConfig(**values)


def _rows(root, name):
  with open(os.path.join(root, name, 'metrics.csv')) as f:
    return list(csv.DictReader(f))


class RefusalTest(absltest.TestCase):

  def test_what_cannot_train_in_silos_is_one_line(self):
    for overrides, message in (
        (dict(algorithm='fedavg'), "--partition=silo: --algorithm=fedavg "
         "cannot train in silos \\(its global user table would carry every "
         "silo's user embeddings to the server\\); these can: .*fedmf"),
        (dict(execution='per_client'), 'drop --execution=per_client'),
        (dict(sampling=sampling.SamplingScheme.POISSON,
              dp=settings.DPConfig(**_DP),
              silos=silos.SiloConfig(partition='silo', num_silos=3,
                                     dp_unit='silo')),
         '--dp_unit=silo: every silo takes part in every round .*drop '
         '--client_sampling=poisson'),
        (dict(silos=silos.SiloConfig(partition='silo', num_silos=3,
                                     dp_unit='silo')),
         '--dp_unit=silo needs --dp'),
        (dict(silos=silos.SiloConfig(partition='silo', num_silos=3,
                                     weighting='uniform'),
              dp=settings.DPConfig(**_DP)),
         '--silo_weighting applies without DP'),
        (dict(silos=silos.SiloConfig(partition='silo', num_silos=3,
                                     sparsify='topk'),
              dp=settings.DPConfig(**_DP)),
         '--sparsify=topk with --dp: the rows a silo sends would be chosen by '
         'its users\' ratings, and their ids, sent in the clear, would '
         'reveal which items they rated'),
        (dict(silos=silos.SiloConfig(partition='silo', num_silos=3,
                                     sparsify='randomk'),
              dp=settings.DPConfig(**_DP)),
         '--sparsify=randomk with --dp needs --noerror_feedback: error '
         'feedback would carry a record\'s clipped update into later '
         'releases'),
        (dict(silos=silos.SiloConfig(partition='silo', num_silos=3,
                                     sparsify='topk'),
              aggregation=settings.AggregationConfig(
                  compression=settings.Compression.QUANTIZE)),
         '--sparsify=topk with --compression: choose one')):
      with self.subTest(overrides=list(overrides)):
        with self.assertRaisesRegex(ValueError, message):
          _config('/nonexistent', 'x', **{'silos': _SILOS, **overrides})

  def test_sparsify_settings_are_checked(self):
    for kwargs, message in (
        (dict(sparsify='topk'), '--sparsify need --partition=silo'),
        (dict(partition='silo', num_silos=2, sparsify='top'),
         '--sparsify=top: expected one of none, topk, randomk'),
        (dict(partition='silo', num_silos=2, sparsify='topk',
              sparsify_fraction=0.0), '--sparsify_fraction=0: expected a '
         'share of rows in \\(0, 1\\]'),
        (dict(partition='silo', num_silos=2, error_feedback=False),
         '--sparsify_fraction and --error_feedback need --sparsify=topk or '
         'randomk')):
      with self.subTest(kwargs=kwargs):
        with self.assertRaisesRegex(ValueError, message):
          silos.SiloConfig(**kwargs)

  def test_a_field_key_needs_a_user_file(self):
    root = self.create_tempdir().full_path
    config = _config(root, 'field', silos=silos.SiloConfig(
        partition='silo', num_silos=2, key='occupation'))
    with self.assertRaisesRegex(ratings.DataError,
                                'has no user demographics'):
      experiment.run_experiment(config, log=lambda _: None)
    self.assertEmpty(os.listdir(root))  # Nothing half-written.


class CrossSiloTest(absltest.TestCase):

  def _assert_server_holds_items_only(self, run_dir):
    """The latest checkpoint's tensors: item embeddings, item biases and
    scalars (40 items), never a user's."""
    checkpoints = os.path.join(run_dir, 'checkpoints')
    (latest,) = os.listdir(checkpoints)
    shapes = {tuple(np.shape(leaf)) for leaf in tf.nest.flatten(
        tf.saved_model.load(os.path.join(checkpoints, latest))())}
    dim = _config('/x', 'x').model.embedding_dim
    self.assertEmpty(shapes - {(40, dim), (40, 1), ()})

  @pytest.mark.slow
  def test_silos_by_ratings_train_as_every_user_every_round(self):
    """Without DP a silo's record is its users' weighted mean, weighted by
    their ratings: the round is the one of every user as its own record."""
    root = self.create_tempdir().full_path
    silo = experiment.run_experiment(
        _config(root, 'silo', silos=_SILOS, run_centralized_baseline=True),
        log=lambda _: None)
    every = experiment.run_experiment(
        _config(root, 'every', clients_per_round=30), log=lambda _: None)
    for a, b in zip(_rows(root, 'silo'), _rows(root, 'every')):
      for key in ('train/loss', 'train/rmse', 'val/rmse'):
        self.assertAlmostEqual(float(a[key]), float(b[key]), delta=1e-5 *
                               abs(float(b[key])))
      self.assertEqual(a['clients'], '30')
    self.assertAlmostEqual(silo['test_metrics']['fedrecon']['rmse'],
                           every['test_metrics']['fedrecon']['rmse'], places=5)
    with open(os.path.join(root, 'silo', 'hparams.json')) as f:
      recorded = json.load(f)['config']['silos']
    self.assertEqual(recorded['partition'], 'silo')
    self.assertEqual(recorded['num_silos'], 3)
    # No user embedding reaches the server: the checkpoint's tensors are
    # item embeddings, item biases and scalars.
    self._assert_server_holds_items_only(os.path.join(root, 'silo'))
    # evaluate.py: every user took part; one row per silo, which recombine.
    with runtime.local_runtime(False):
      run = trained.load_run(os.path.join(root, 'silo'))
    report = trained.evaluate_run(run, 'test')
    rows = {(r['slice_kind'], r['slice']): r for r in report.slices}
    self.assertAlmostEqual(report.overall['rmse'],
                           silo['test_metrics']['fedrecon']['rmse'], places=6)
    self.assertEqual(rows['participation', 'unseen']['users'], 0)
    silo_rows = [rows['silo', k] for k in '012']
    self.assertEqual(sum(r['users'] for r in silo_rows),
                     report.overall['users'])
    self.assertAlmostEqual(
        sum(r['mse'] * r['ratings'] for r in silo_rows) /
        report.overall['ratings'], report.overall['mse'], places=5)
    # Bytes: every user (or silo) sends the rows it changed, 4 bytes of id
    # each, or a table whole where smaller, and the global bias.
    dim = _config(root, 'x').model.embedding_dim
    train_rows = run.split.train

    def sparse_bytes(groups):
      return sum(min(len(g) * (4 * dim + 4), 40 * dim * 4) +
                 min(len(g) * 8, 40 * 4) + 4 for g in groups)

    by_user = [set(train_rows.items[train_rows.users == u]) for u in range(30)]
    by_silo = [set().union(*(by_user[u] for u in range(30)
                             if run.silo_of[u] == k)) for k in range(3)]
    for name, groups in (('every', by_user), ('silo', by_silo)):
      for row in _rows(root, name):
        self.assertEqual(float(row['bytes_per_round_row_sparse']),
                         sparse_bytes(groups))
        self.assertEqual(float(row['bytes_per_round']),
                         float(row['bytes_per_client']) * len(groups))
    # train.py's comparison per silo: its test users under the federated,
    # the pooled centralized and the silo's own local-only model.
    rows = silo['silos']
    self.assertEqual([r['silo'] for r in rows], [0, 1, 2])
    self.assertEqual(sum(r['training_users'] for r in rows), 30)
    self.assertEqual(sum(r['training_ratings'] for r in rows),
                     len(run.split.train))
    for model in ('fedrecon', 'centralized'):
      self.assertAlmostEqual(
          sum(r[model]['mse'] * r['test_ratings'] for r in rows) /
          sum(r['test_ratings'] for r in rows),
          silo['test_metrics'][model]['mse'], places=5)
    for row in rows:
      self.assertNotEqual(row['local_only']['rmse'], row['centralized']['rmse'])
    brief = silo['silo_summary']
    self.assertAlmostEqual(brief['fedrecon_rmse'],
                           silo['test_metrics']['fedrecon']['rmse'], places=5)
    self.assertAlmostEqual(brief['centralized_rmse'],
                           silo['test_metrics']['centralized']['rmse'],
                           places=5)
    gains = [r['local_only']['rmse'] - r['fedrecon']['rmse'] for r in rows]
    self.assertEqual((brief['min_gain'], brief['silos_beaten'],
                      brief['silos']),
                     (min(gains), sum(g > 0 for g in gains), 3))
    self.assertAlmostEqual(brief['mean_gain'], sum(gains) / 3)
    table = experiment.format_silos(silo).splitlines()
    self.assertEqual(table[0].split(), [
        'silo', 'training', 'users', 'test', 'ratings', 'local_only', 'rmse',
        'fedrecon', 'rmse', 'centralized', 'rmse'])
    self.assertEqual(table[2].split()[0], '1')
    self.assertEqual(float(table[2].split()[4]),
                     round(rows[1]['fedrecon']['rmse'], 4))
    with open(os.path.join(root, 'silo', 'silos.png'), 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    # Weighing silos equally changes the round.
    experiment.run_experiment(
        _config(root, 'uniform', silos=silos.SiloConfig(
            partition='silo', num_silos=3, weighting='uniform')),
        log=lambda _: None)
    self.assertNotAlmostEqual(float(_rows(root, 'uniform')[1]['train/loss']),
                              float(_rows(root, 'silo')[1]['train/loss']),
                              places=6)

  @pytest.mark.slow
  def test_a_stateful_method_keeps_its_users_states_in_the_silos(self):
    root = self.create_tempdir().full_path
    summary = experiment.run_experiment(
        _config(root, 'fedmf', algorithm='fedmf', silos=_SILOS,
                run_centralized_baseline=True), log=lambda _: None)
    self.assertEqual([list(r)[5:] for r in summary['silos']],
                     [['local_only', 'fedmf', 'centralized']] * 3)
    self.assertAlmostEqual(summary['silo_summary']['fedmf_rmse'],
                           summary['test_metrics']['fedmf']['rmse'], places=5)
    self._assert_server_holds_items_only(os.path.join(root, 'fedmf'))
    # Each user's vector is kept beside the run, in its silo's custody.
    self.assertTrue(os.path.isdir(os.path.join(
        root, 'fedmf', experiment.CLIENT_STATES_DIRNAME)))

  @pytest.mark.slow
  def test_users_drawn_inside_silos_by_poisson_sampling(self):
    root = self.create_tempdir().full_path
    summary = experiment.run_experiment(
        _config(root, 'poisson', silos=_SILOS, clients_per_round=15,
                sampling=sampling.SamplingScheme.POISSON,
                dp=settings.DPConfig(**_DP),
                optimizers=experiment.OptimizerConfig(
                    server_learning_rate=0.1)), log=lambda _: None)
    sampler = sampling.ClientSampler([str(u) for u in range(30)], 15,
                                     sampling.SamplingScheme.POISSON, 0)
    self.assertEqual([int(r['clients']) for r in _rows(root, 'poisson')],
                     [len(sampler.sample(r)) for r in (1, 2)])
    setting = accounting.PrivacySetting(
        num_users=30, clients_per_round=15,
        sampling=sampling.SamplingScheme.POISSON,
        delta=accounting.default_delta(30))
    privacy = summary['privacy']
    self.assertEqual(privacy['sampling_probability'], 0.5)
    self.assertAlmostEqual(privacy['epsilon'], setting.epsilon(1.0, 2))
    self.assertIn('each user drawn inside its silo by Poisson sampling',
                  privacy['statement'])

  @pytest.mark.slow
  def test_dp_protects_a_user_or_a_silo_as_accounted(self):
    root = self.create_tempdir().full_path
    users = 30
    delta = accounting.default_delta(users)
    for unit, units in (('user', users), ('silo', 3)):
      config = _config(root, unit, dp=settings.DPConfig(**_DP),
                       optimizers=experiment.OptimizerConfig(
                           server_learning_rate=0.1),
                       silos=silos.SiloConfig(partition='silo', num_silos=3,
                                              dp_unit=unit))
      privacy = experiment.run_experiment(config,
                                          log=lambda _: None)['privacy']
      setting = accounting.PrivacySetting(
          num_users=units, clients_per_round=units,
          sampling=sampling.SamplingScheme.UNIFORM, delta=delta)
      self.assertEqual(privacy['unit'], unit)
      self.assertAlmostEqual(privacy['epsilon'], setting.epsilon(1.0, 2))
      self.assertEqual(privacy['sampling_probability'], 1.0)
      self.assertEqual(privacy['delta'], delta)
      self.assertTrue(privacy['statement'].startswith(
          'User-level' if unit == 'user' else 'Silo-level'), unit)


class QuantizedSiloUploadsTest(absltest.TestCase):

  def test_each_silo_update_is_quantized_as_one_record(self):
    """--compression in silo runs: the aggregator quantizes each silo's
    update (a record), as it would a client's; users are not quantized
    one by one, so nothing per user is needed."""
    root = self.create_tempdir().full_path
    quantized = settings.AggregationConfig(
        compression=settings.Compression.QUANTIZE, quantization_bits=4)
    model = dataclasses.replace(_config('/x', 'x').model, embedding_dim=512)
    runs = {}
    for name, uploads in (('dense', settings.AggregationConfig()),
                          ('quantized', quantized)):
      runs[name] = experiment.run_experiment(
          _config(root, name, silos=_SILOS, model=model,
                  aggregation=uploads), log=lambda _: None)
    # The item table (40 x 512 > the threshold) goes as TFF's encoder
    # packs it; the biases stay float32; a silo's weight and zeroing
    # indicator 4 bytes each.
    expected = (aggregation._quantized_bytes((40, 512), 4) +  # pylint: disable=protected-access
                4 * (40 + 1) + 4 + 4)
    for row in _rows(root, 'quantized'):
      self.assertEqual(float(row['bytes_per_client']), expected)
      self.assertEqual(float(row['bytes_per_round']), 3 * expected)
    self.assertLess(expected, 4 * 40 * 512 / 6)  # 4 bits: about 1/7.
    dense, lossy = (runs[n]['test_metrics']['fedrecon']['rmse']
                    for n in ('dense', 'quantized'))
    self.assertNotEqual(dense, lossy)
    self.assertAlmostEqual(dense, lossy, delta=0.05)


class SparsifiedUploadsTest(absltest.TestCase):

  def _run(self, root, name, rounds=2, overrides=None, **silo_settings):
    config = _config(
        root, name, silos=silos.SiloConfig(partition='silo', num_silos=3,
                                           **silo_settings),
        **{'loop': loop.LoopConfig(total_rounds=rounds, eval_every=1,
                                   progress=False), **(overrides or {})})
    return experiment.run_experiment(config, log=lambda _: None)

  def test_under_dp_every_silo_sends_the_same_public_rows(self):
    """randomk under user-level DP: the rows are drawn from the seed and the
    round, sent by every silo after its users' clip, and the server keeps
    only them of the noised mean; the accounting is the dense run's."""
    root = self.create_tempdir().full_path
    summary = self._run(
        root, 'dp', overrides=dict(
            dp=settings.DPConfig(**_DP), seed=7,
            loop=loop.LoopConfig(total_rounds=2, checkpoint_every=1,
                                 progress=False),
            optimizers=experiment.OptimizerConfig(server_learning_rate=0.1)),
        sparsify='randomk', error_feedback=False)
    checkpoints = os.path.join(root, 'dp', 'checkpoints')
    weights = []
    for name in sorted(os.listdir(checkpoints)):
      state = tf.saved_model.load(os.path.join(checkpoints, name))()
      weights.append([np.asarray(leaf) for leaf in tf.nest.flatten(state)
                      if np.ndim(leaf) == 2 and np.shape(leaf)[0] == 40])
    self.assertLen(weights, 2)
    self.assertLen(weights[0], 2)  # The item embeddings and biases.
    # Round 2 (round index 1) moved exactly the 4 rows drawn from (7, 1).
    drawn = sparse_uploads.random_rows(tf.ones([40, 1]), 4,
                                       tf.constant([7, 1], tf.int64))
    expected = np.flatnonzero(drawn.numpy()[:, 0])
    self.assertLen(expected, 4)
    for before, after in zip(*weights):
      np.testing.assert_array_equal(
          np.flatnonzero(np.any(before != after, axis=1)), expected)
    setting = accounting.PrivacySetting(
        num_users=30, clients_per_round=30,
        sampling=sampling.SamplingScheme.UNIFORM,
        delta=accounting.default_delta(30))
    self.assertAlmostEqual(summary['privacy']['epsilon'],
                           setting.epsilon(1.0, 2))
    self.assertIn('drawn from public randomness',
                  summary['privacy']['statement'])
    # No ids are sent: the server draws the same rows.
    dim = _config('/x', 'x').model.embedding_dim
    for row in _rows(root, 'dp'):
      self.assertEqual(float(row['bytes_per_client_sparsified']),
                       4 * 4 * dim + 4 * 4 + 4)

  def test_top_rows_cost_their_bytes_and_all_rows_are_the_dense_round(self):
    root = self.create_tempdir().full_path
    dense = self._run(root, 'dense')
    every = self._run(root, 'every', sparsify='topk', sparsify_fraction=1.0)
    topk = self._run(root, 'topk', sparsify='topk')
    # Every row chosen: the dense round exactly.
    for a, b in zip(_rows(root, 'dense'), _rows(root, 'every')):
      for key in ('train/loss', 'val/rmse', 'bytes_per_round_row_sparse'):
        self.assertEqual(a[key], b[key])
      self.assertEqual(b['bytes_per_round_sparsified'],
                       b['bytes_per_round_row_sparse'])
    self.assertEqual(dense['test_metrics'], every['test_metrics'])
    # 10% of 40 rows: 4 rows of the embedding (dim values and an id) and
    # of the biases (a value and an id), and the global bias, per silo.
    dim = _config('/x', 'x').model.embedding_dim
    for row in _rows(root, 'topk'):
      self.assertEqual(float(row['bytes_per_client_sparsified']),
                       4 * (4 * dim + 4) + 4 * 8 + 4)
      self.assertEqual(float(row['bytes_per_round_sparsified']),
                       3 * (4 * (4 * dim + 4) + 4 * 8 + 4))
    self.assertNotEqual(topk['test_metrics'], dense['test_metrics'])
    # The residuals stay on the silos' side, never in the server's
    # checkpoint.
    CrossSiloTest._assert_server_holds_items_only(
        self, os.path.join(root, 'topk'))
    self.assertTrue(os.path.isdir(os.path.join(root, 'topk',
                                               'silo_residuals')))

  @pytest.mark.slow
  def test_a_resumed_run_keeps_the_silos_residuals(self):
    root = self.create_tempdir().full_path
    settings_ = dict(sparsify='randomk', sparsify_fraction=0.2)
    whole = self._run(root, 'whole', rounds=3, **settings_)
    self._run(root, 'resumed', rounds=2, **settings_)
    resumed = self._run(root, 'resumed', rounds=3, **settings_)
    for a, b in zip(_rows(root, 'whole'), _rows(root, 'resumed')):
      for key in ('train/loss', 'val/rmse'):
        self.assertEqual(a[key], b[key])
    self.assertEqual(whole['test_metrics'], resumed['test_metrics'])
    # Without error feedback the rows left unsent are lost: another run.
    dropped = self._run(root, 'dropped', rounds=3, error_feedback=False,
                        **settings_)
    self.assertNotEqual(dropped['test_metrics'], whole['test_metrics'])


if __name__ == '__main__':
  absltest.main()
