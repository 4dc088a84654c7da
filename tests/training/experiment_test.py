"""End-to-end experiments on a tiny synthetic corpus: outputs and invariants."""

import csv
import dataclasses
import json
import os
import re
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from research.fedrec.algorithms import sampling
from research.fedrec.data import corpus
from research.fedrec.data import ratings
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.privacy import accounting
from research.fedrec.privacy import aggregation
from research.fedrec.models import mf_features
from research.fedrec.training import centralized
from research.fedrec.training import experiment
from research.fedrec.training import loop
from research.fedrec.training import runtime
from research.fedrec.training import trained
from research.fedrec.utils import phases

_DATA = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
    num_users=30, num_items=40, num_ratings=900, min_ratings_per_user=20))


def _config(root, name, **overrides):
  settings = dict(
      root_output_dir=root, experiment_name=name, data=_DATA,
      loop=loop.LoopConfig(total_rounds=2, eval_every=1, progress=False),
      clients_per_round=3,
      centralized=centralized.CentralizedConfig(epochs=2, batch_size=64))
  settings.update(overrides)
  return experiment.ExperimentConfig(**settings)


class ExperimentTest(absltest.TestCase):

  @pytest.mark.slow
  def test_fedrecon_run_writes_every_output(self):
    root = self.create_tempdir().full_path
    config = _config(root, 'recon')
    summary = experiment.run_experiment(config, flag_values={'rounds': 2},
                                        log=lambda _: None)
    out = os.path.join(root, 'recon')
    self.assertCountEqual(
        os.listdir(out), ['hparams.json', 'metrics.csv', 'summary.json',
                          'learning_curves.png', 'tensorboard', 'checkpoints',
                          'export'])
    with open(os.path.join(out, 'summary.json')) as f:
      self.assertEqual(json.load(f), json.loads(json.dumps(summary)))
    self.assertEqual(list(summary['test_metrics']), ['fedrecon', 'centralized'])
    for metrics in summary['test_metrics'].values():
      self.assertEqual(list(metrics), ['rmse', 'mse', 'mae', 'rating_accuracy'])
      self.assertAlmostEqual(metrics['rmse']**2, metrics['mse'], places=5)
    self.assertGreater(summary['noise_floor_test_rmse'], 0.5)
    # The baseline's epoch, chosen on validation, and its validation metrics.
    validation = summary['centralized_validation']
    self.assertIn(validation['epoch'], (1, 2))
    self.assertEqual(list(validation['metrics']),
                     ['rmse', 'mse', 'mae', 'rating_accuracy'])
    with open(os.path.join(out, 'hparams.json')) as f:
      hparams = json.load(f)
    self.assertEqual(hparams['flags'], {'rounds': 2})
    self.assertEqual(hparams['config']['clients_per_round'], 3)
    self.assertEqual(hparams['config']['split']['seed'], 0)
    with open(os.path.join(out, 'metrics.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([r['round'] for r in rows], ['1', '2'])
    self.assertTrue(all(r['val/rmse'] for r in rows))
    with open(os.path.join(out, 'learning_curves.png'), 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')

  @pytest.mark.slow
  def test_checkpoint_holds_no_user_embedding(self):
    root = self.create_tempdir().full_path
    experiment.run_experiment(
        _config(root, 'audit', run_centralized_baseline=False),
        log=lambda _: None)
    checkpoints = os.path.join(root, 'audit', 'checkpoints')
    (latest,) = os.listdir(checkpoints)
    leaves = tf.nest.flatten(tf.saved_model.load(
        os.path.join(checkpoints, latest))())
    shapes = {tuple(np.shape(leaf)) for leaf in leaves}
    num_items = 40
    dim = _config(root, 'x').model.embedding_dim
    # Item embeddings, item biases and scalars only: never (1, dim) or (1, 1).
    self.assertContainsSubset({(num_items, dim), (num_items, 1)}, shapes)
    self.assertEmpty(shapes - {(num_items, dim), (num_items, 1), ()})

  @pytest.mark.slow
  def test_same_seed_same_metrics(self):
    root = self.create_tempdir().full_path
    first = experiment.run_experiment(
        _config(root, 'a', run_centralized_baseline=False), log=lambda _: None)
    second = experiment.run_experiment(
        _config(root, 'b', run_centralized_baseline=False), log=lambda _: None)
    self.assertEqual(first['test_metrics'], second['test_metrics'])

  @pytest.mark.slow
  def test_fedavg_and_centralized_only(self):
    root = self.create_tempdir().full_path
    summary = experiment.run_experiment(
        _config(root, 'avg', algorithm='fedavg',
                run_centralized_baseline=False), log=lambda _: None)
    self.assertEqual(list(summary['test_metrics']), ['fedavg'])
    summary = experiment.run_experiment(
        _config(root, 'central', algorithm='centralized'),
        log=lambda _: None)
    self.assertEqual(list(summary['test_metrics']), ['centralized'])
    self.assertFalse(os.path.exists(os.path.join(root, 'central',
                                                 'metrics.csv')))

  @pytest.mark.slow
  def test_fedavg_with_fine_tuning_on_unseen_users(self):
    root = self.create_tempdir().full_path
    # 30 test users, each fine-tuned on half its ratings, scored on the rest.
    data = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
        num_users=150, num_items=40, num_ratings=4500, min_ratings_per_user=20))
    summaries = {}
    for learning_rate in (1e-9, 0.2):
      summaries[learning_rate] = experiment.run_experiment(
          _config(root, f'ft{learning_rate}', data=data,
                  algorithm='fedavg', finetune=True,
                  split=splits.SplitConfig(kind=splits.SplitKind.USER_DISJOINT,
                                           test_fraction=0.2),
                  optimizers=experiment.OptimizerConfig(
                      reconstruction_learning_rate=learning_rate),
                  run_centralized_baseline=False), log=lambda _: None)
    frozen = summaries[1e-9]['test_metrics']
    self.assertEqual(list(frozen), ['fedavg', 'fedavg_finetuned'])
    # Steps of size 1e-9 leave every row as FedAvg trained it.
    for name, value in frozen['fedavg'].items():
      self.assertAlmostEqual(frozen['fedavg_finetuned'][name], value,
                             delta=1e-6, msg=name)
    tuned = summaries[0.2]['test_metrics']
    self.assertEqual(tuned['fedavg'], frozen['fedavg'])
    # The untrained rows of unseen users give way to rows fit to their ratings.
    self.assertLess(tuned['fedavg_finetuned']['rmse'],
                    tuned['fedavg']['rmse'] - 0.02)

  @pytest.mark.slow
  def test_rerun_with_other_settings_is_refused(self):
    root = self.create_tempdir().full_path
    config = _config(root, 'run', run_centralized_baseline=False)
    experiment.run_experiment(config, log=lambda _: None)
    with self.assertRaisesRegex(
        ValueError, r'holds a run with other settings \(clients_per_round, '
        r'seed\); rerun it with its own settings, or choose another '
        r'--experiment_name for these.$'):
      experiment.run_experiment(
          _config(root, 'run', run_centralized_baseline=False,
                  clients_per_round=2, seed=1), log=lambda _: None)
    # More rounds is fine: the run resumes after its last checkpoint.
    longer = _config(root, 'run', run_centralized_baseline=False,
                     loop=loop.LoopConfig(total_rounds=3, eval_every=1,
                                          progress=False))
    experiment.run_experiment(longer, log=lambda _: None)
    with open(os.path.join(root, 'run', 'metrics.csv')) as f:
      self.assertEqual([r['round'] for r in csv.DictReader(f)],
                       ['1', '2', '3'])

  def test_settings_added_since_a_run_take_their_defaults(self):
    root = self.create_tempdir().full_path
    config = _config(root, 'old')
    recorded = json.loads(json.dumps(experiment.to_jsonable(config)))
    del recorded['dp'], recorded['aggregation']  # Written before they existed.
    path = os.path.join(root, 'hparams.json')
    with open(path, 'w') as f:
      json.dump({'flags': {}, 'config': recorded}, f)
    experiment.check_same_settings(path, config)  # Resumable.
    with self.assertRaisesRegex(ValueError, r'other settings \(dp/mechanism'):
      experiment.check_same_settings(path, dataclasses.replace(
          config, dp=aggregation.DPConfig(
              mechanism=aggregation.Mechanism.FIXED, noise_multiplier=1.0)))

  def test_the_run_directory_is_the_run_however_its_root_is_spelled(self):
    root = self.create_tempdir().full_path
    run_dir = os.path.join(root, 'runs', 'run')
    os.makedirs(run_dir)
    os.symlink(os.path.join(root, 'runs'), os.path.join(root, 'link'))
    config = _config(os.path.join(root, 'runs'), 'run')
    path = os.path.join(run_dir, 'hparams.json')
    with open(path, 'w') as f:
      json.dump({'flags': {}, 'config': experiment.to_jsonable(config)}, f)
    cwd = os.getcwd()
    self.addCleanup(os.chdir, cwd)
    os.chdir(root)
    for spelling in ('runs', 'runs/', './runs', os.path.join(root, 'link'),
                     os.path.join(root, 'runs', '..', 'runs')):
      respelled = dataclasses.replace(config, root_output_dir=spelling)
      experiment.check_same_settings(
          os.path.join(respelled.output_dir, 'hparams.json'), respelled)
    # A moved run tree, with its own client store elsewhere, is the same run.
    moved = os.path.join(root, 'moved')
    os.rename(os.path.join(root, 'runs'), moved)
    experiment.check_same_settings(
        os.path.join(moved, 'run', 'hparams.json'),
        dataclasses.replace(config, root_output_dir=moved,
                            cache_dir=os.path.join(root, 'cache')))
    with self.assertRaisesRegex(ValueError, r'other settings \(seed\)'):
      experiment.check_same_settings(
          os.path.join(moved, 'run', 'hparams.json'),
          dataclasses.replace(config, root_output_dir=moved, seed=1))

  @pytest.mark.slow
  def test_an_unexpected_failure_rolls_back_the_new_run_directory(self):
    root = self.create_tempdir().full_path
    config = _config(root, 'crash', algorithm='centralized')
    with mock.patch.object(experiment, '_run_centralized',
                           side_effect=ZeroDivisionError('a bug')):
      with self.assertRaises(ZeroDivisionError) as caught:
        experiment.run_experiment(config, log=lambda _: None)
    self.assertEqual(phases.phase_of(caught.exception),
                     'training the centralized baseline')
    self.assertFalse(os.path.exists(config.output_dir))
    # The next command (other settings) is not blocked by a half-written run.
    summary = experiment.run_experiment(
        dataclasses.replace(config, seed=1), log=lambda _: None)
    self.assertEqual(list(summary['test_metrics']), ['centralized'])

  def test_experiment_names_stay_inside_the_root(self):
    for name in ('', '.', '..', 'a/b'):
      with self.assertRaisesRegex(
          ValueError, f'^--experiment_name={re.escape(name)}: expected the '
          'name of a directory inside --root_output_dir \\(non-empty, no '
          "'/', not '.' or '..'\\).$"):
        _config('/unused', name)

  def test_scheduled_server_rate_spans_the_rounds(self):
    # A decaying server learning rate depends on --rounds: more rounds do
    # not resume that run (they do under a constant rate, as above).
    root = self.create_tempdir().full_path
    config = _config(root, 'cosine', optimizers=experiment.OptimizerConfig(
        server_schedule='cosine'))
    path = os.path.join(root, 'hparams.json')
    with open(path, 'w') as f:
      json.dump({'flags': {}, 'config': experiment.to_jsonable(config)}, f)
    longer = dataclasses.replace(
        config, loop=dataclasses.replace(config.loop, total_rounds=3))
    with self.assertRaisesRegex(ValueError,
                                r'other settings \(loop/total_rounds\)'):
      experiment.check_same_settings(path, longer)
    constant = dataclasses.replace(config,
                                   optimizers=experiment.OptimizerConfig())
    with open(path, 'w') as f:
      json.dump({'flags': {}, 'config': experiment.to_jsonable(constant)}, f)
    experiment.check_same_settings(path, dataclasses.replace(
        constant, loop=longer.loop))
    with self.assertRaisesRegex(ValueError, '^--server_lr_schedule=step: '
                                'expected one of constant, linear, cosine'):
      experiment.OptimizerConfig(server_schedule='step')

  @pytest.mark.slow
  def test_item_cold_start_reports_warm_and_cold_items(self):
    root = self.create_tempdir().full_path
    split_config = splits.SplitConfig(kind=splits.SplitKind.ITEM_COLD_START,
                                      cold_item_fraction=0.25, seed=2)
    summary = experiment.run_experiment(
        _config(root, 'cold', split=split_config), log=lambda _: None)
    # The weighted mean of the slices' MSEs is the overall MSE.
    data = corpus.load_corpus(_DATA)
    split = splits.split(data.ratings, split_config)
    cold = np.isin(split.test.query.items, split.test.cold_items)
    self.assertGreater(cold.sum(), 0)
    for name in ('fedrecon', 'centralized'):
      metrics = summary['test_metrics'][name]
      self.assertEqual(list(metrics)[4:], [
          f'{s}/{m}' for s in ('warm_items', 'cold_items')
          for m in ('rmse', 'mse', 'mae', 'rating_accuracy')])
      self.assertAlmostEqual(
          (metrics['warm_items/mse'] * (~cold).sum() +
           metrics['cold_items/mse'] * cold.sum()) / cold.size,
          metrics['mse'], places=5)
    with open(os.path.join(root, 'cold', 'metrics.csv')) as f:
      header = next(csv.reader(f))
    self.assertIn('val/cold_items/rmse', header)
    self.assertIn('val/warm_items/rmse', header)

  @pytest.mark.slow
  def test_feature_model_scores_cold_items_from_features_alone(self):
    root = self.create_tempdir().full_path
    split_config = splits.SplitConfig(kind=splits.SplitKind.ITEM_COLD_START,
                                      cold_item_fraction=0.25, seed=2)
    config = _config(root, 'features', split=split_config,
                     model=mf_features.FeatureMFConfig(l2=0.05),
                     run_centralized_baseline=False)
    summary = experiment.run_experiment(config, log=lambda _: None)
    self.assertIn('cold_items/rmse', summary['test_metrics']['fedrecon'])
    with runtime.local_runtime():
      run = trained.load_run(config.output_dir)
    # Global weights in global_layers order: item_embedding first. No
    # training rating touched a cold item's id row: it is still zero, so a
    # cold item is scored from its features alone.
    rows = np.asarray(run.model_weights.trainable[0])
    cold = run.split.test.cold_items
    np.testing.assert_array_equal(rows[cold], 0.0)
    self.assertGreater(np.abs(np.delete(rows, cold, axis=0)).max(), 0.0)

  def test_a_feature_model_needs_item_side_information(self):
    root = self.create_tempdir().full_path
    path = os.path.join(root, 'mine.csv')
    with open(path, 'w') as f:
      f.writelines(f'u{u},i{i},{1 + (u + i) % 5}\n' for u in range(12)
                   for i in range(8))
    config = _config(root, 'csv', data=corpus.DataConfig(
        dataset=corpus.CSV, data_dir=path),
                     model=mf_features.FeatureMFConfig())
    with self.assertRaisesRegex(ratings.DataError, '^--dataset=csv: a ratings '
                                'CSV carries no item side information'):
      experiment.run_experiment(config, log=lambda _: None)
    self.assertEqual(os.listdir(root), ['mine.csv'])

  def test_impossible_combination_is_rejected(self):
    with self.assertRaisesRegex(ValueError, 'fedavg cannot be evaluated with '
                                '--split=user_disjoint'):
      _config('/unused', 'x', algorithm='fedavg',
              split=splits.SplitConfig(kind=splits.SplitKind.USER_DISJOINT))
    with self.assertRaisesRegex(
        ValueError, '^--finetune fine-tunes the user rows of explicit-'
        'feedback federated training: add --algorithm=fedavg or '
        '--algorithm=fedprox, drop --feedback=implicit.$'):
      _config('/unused', 'x', finetune=True)



class PrivacyExperimentTest(absltest.TestCase):

  def _epsilons(self, out):
    with open(os.path.join(out, 'metrics.csv')) as f:
      return [float(r['privacy/epsilon']) for r in csv.DictReader(f)]

  @pytest.mark.slow
  def test_dp_run_reports_epsilon_resumes_and_stops_at_budget(self):
    root = self.create_tempdir().full_path
    dp = aggregation.DPConfig(mechanism=aggregation.Mechanism.FIXED,
                              noise_multiplier=2.0, clip=0.3)
    config = _config(root, 'dp', dp=dp, clients_per_round=6,
                     run_centralized_baseline=False,
                     loop=loop.LoopConfig(total_rounds=2, checkpoint_every=1,
                                          progress=False))
    experiment.run_experiment(config, log=lambda _: None)
    # Resumed for 2 more rounds: the accountant continues from round 2.
    summary = experiment.run_experiment(
        dataclasses.replace(config, loop=dataclasses.replace(
            config.loop, total_rounds=4)), log=lambda _: None)
    setting = accounting.PrivacySetting(
        30, 6, sampling.SamplingScheme.UNIFORM, accounting.default_delta(30))
    expected = [setting.epsilon(2.0, r) for r in range(1, 5)]
    out = os.path.join(root, 'dp')
    self.assertEqual(self._epsilons(out), expected)
    privacy = summary['privacy']
    self.assertEqual(privacy['epsilon'], expected[-1])
    self.assertEqual(privacy['rounds'], 4)
    self.assertEqual(privacy['noise_multiplier'], 2.0)
    self.assertIn("one user's entire rating history", privacy['statement'])
    with open(os.path.join(out, 'metrics.csv')) as f:
      row = next(csv.DictReader(f))
    self.assertEqual(float(row['bytes_per_client']), 4 * (40 * 17 + 1) + 4)
    self.assertEqual(float(row['aggregator/zeroed_count']), 0.0)

    # A budget between rounds 2 and 3 stops training after round 2.
    stopped = dataclasses.replace(
        config, experiment_name='stopped',
        dp=dataclasses.replace(dp, stop_at_epsilon=(expected[1] +
                                                    expected[2]) / 2),
        loop=dataclasses.replace(config.loop, total_rounds=4))
    summary = experiment.run_experiment(stopped, log=lambda _: None)
    self.assertEqual(self._epsilons(os.path.join(root, 'stopped')),
                     expected[:2])
    self.assertEqual(summary['privacy']['rounds'], 2)

  @pytest.mark.slow
  def test_target_epsilon_is_met_and_weighting_forced_uniform(self):
    root = self.create_tempdir().full_path
    config = _config(
        root, 'target', run_centralized_baseline=False, clients_per_round=12,
        dp=aggregation.DPConfig(mechanism=aggregation.Mechanism.ADAPTIVE,
                                target_epsilon=8.0))
    self.assertFalse(config.weighted)
    messages = []
    summary = experiment.run_experiment(config, log=messages.append)
    self.assertBetween(summary['privacy']['epsilon'], 0.99 * 8.0, 8.0)
    self.assertTrue(any('weighted uniformly under DP' in m for m in messages))
    with self.assertRaisesRegex(ValueError, 'needs --clients_per_round > '):
      experiment.run_experiment(
          _config(root, 'too_few', clients_per_round=3,
                  dp=aggregation.DPConfig(
                      mechanism=aggregation.Mechanism.ADAPTIVE,
                      noise_multiplier=1.0)), log=lambda _: None)

  def test_no_noise_and_unreachable_targets_are_refused_before_training(self):
    root = self.create_tempdir().full_path
    for mechanism in (aggregation.Mechanism.FIXED,
                      aggregation.Mechanism.ADAPTIVE):
      config = _config(root, 'z0', dp=aggregation.DPConfig(
          mechanism=mechanism, noise_multiplier=0.0))
      with self.assertRaisesRegex(
          ValueError, r'^--dp_noise_multiplier=0 gives no privacy \(epsilon '
          r'is infinite\): give a multiplier > 0, or train without --dp.$'):
        experiment.resolve_privacy(config, 30, log=lambda _: None)
    config = _config(root, 'huge', dp=aggregation.DPConfig(
        mechanism=aggregation.Mechanism.FIXED, target_epsilon=1e5))
    with self.assertRaisesRegex(ValueError, r'^--target_epsilon=100000 is '
                                'above the epsilon of the least noise'):
      experiment.resolve_privacy(config, 30, log=lambda _: None)
    config = _config(root, 'tiny_budget', dp=aggregation.DPConfig(
        mechanism=aggregation.Mechanism.FIXED, noise_multiplier=1.0,
        stop_at_epsilon=0.01))
    one_round = accounting.PrivacySetting(
        30, 3, config.sampling, accounting.default_delta(30)).epsilon(1.0, 1)
    with self.assertRaisesRegex(
        ValueError, '^--stop_at_epsilon=0.01 is below the epsilon of one '
        f'round \\({one_round:.4g} at noise multiplier 1\\): no round could '
        'be trained; raise it, or add noise.$'):
      experiment.resolve_privacy(config, 30, log=lambda _: None)
    self.assertFalse(os.listdir(root))

  @pytest.mark.slow
  def test_every_aggregation_configuration_trains(self):
    root = self.create_tempdir().full_path
    fixed = aggregation.DPConfig(mechanism=aggregation.Mechanism.FIXED,
                                 noise_multiplier=0.5, clip=0.3)
    for name, overrides, expected_bytes in (
        ('fedavg_dp', dict(algorithm='fedavg', dp=fixed),
         4 * (30 * 17 + 40 * 17 + 1) + 4),
        ('fedprox_dp', dict(algorithm='fedprox', dp=fixed, method_settings=dict(
            proximal_strength=0.1)), 4 * (30 * 17 + 40 * 17 + 1) + 4),
        ('secure_dp', dict(dp=fixed, aggregation=aggregation.AggregationConfig(
            secure_aggregation=True)), 4 * (40 * 17 + 1) + 4),
        ('quantized', dict(aggregation=aggregation.AggregationConfig(
            compression=aggregation.Compression.QUANTIZE, zeroing=False)),
         4 * (40 * 17 + 1) + 4),  # Small tensors stay float32 (+ weight).
    ):
      config = _config(root, name, run_centralized_baseline=False,
                       loop=loop.LoopConfig(total_rounds=1, progress=False),
                       **overrides)
      summary = experiment.run_experiment(config, log=lambda _: None)
      metrics = summary['test_metrics'][config.algorithm]
      self.assertTrue(np.isfinite(metrics['rmse']), name)
      with open(os.path.join(root, name, 'metrics.csv')) as f:
        row = next(csv.DictReader(f))
      self.assertEqual(float(row['bytes_per_client']), expected_bytes, name)
      self.assertEqual(summary['privacy']['mechanism'],
                       'fixed' if config.dp.enabled else 'none')
      self.assertIn(config.method.privacy_note(config.dp.enabled),
                    summary['privacy']['statement'])


if __name__ == '__main__':
  absltest.main()
