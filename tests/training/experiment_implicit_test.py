"""End-to-end implicit-feedback runs on a tiny synthetic corpus."""

import csv
import os

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.algorithms import fed_recon
from research.fedrec.data import client_store
from research.fedrec.data import corpus
from research.fedrec.data import pipelines
from research.fedrec.data import splits
from research.fedrec.evaluation import evaluators
from research.fedrec.evaluation import ranking
from research.fedrec.inference import export
from research.fedrec.inference import from_keras
from research.fedrec.inference import implicit
from research.fedrec.models import autorec as autorec_lib
from research.fedrec.models import mf
from research.fedrec.models import mf_features
from research.fedrec.models import ncf
from research.fedrec.training import centralized
from research.fedrec.training import experiment
from research.fedrec.training import loop
from research.fedrec.training import runtime
from research.fedrec.training import trained
from tests.training import implicit_testing

_DATA = implicit_testing.DATA
_SPLIT = implicit_testing.SPLIT
_config = implicit_testing.config
_check_export_scores = implicit_testing.check_export_scores


class ImplicitExperimentTest(absltest.TestCase):

  @pytest.mark.slow
  def test_neumf_fedrecon_run_reports_ranking_metrics(self):
    root = self.create_tempdir().full_path
    # Evaluated users reconstruct for 2 epochs; training's clients for 1.
    config = _config(root, 'neumf', model=ncf.NeuMFConfig(
        embedding_dim=4, mlp_layers=(8, 4)), recon=fed_recon.ReconConfig(eval_recon_epochs=2))
    self.assertEqual(implicit.Settings.of_run(config).epochs, 2)
    logged = []
    summary = experiment.run_experiment(config, log=logged.append)
    self.assertEqual(list(summary['test_metrics']),
                     ['fedrecon', 'popularity', 'centralized'])
    for metrics in summary['test_metrics'].values():
      for protocol in ('full', 'sampled'):
        for k in (5, 10):
          self.assertBetween(metrics[f'{protocol}/ndcg@{k}'], 0.0, 1.0)
          # One relevant item (leave-one-out): recall equals HR.
          self.assertEqual(metrics[f'{protocol}/recall@{k}'],
                           metrics[f'{protocol}/hr@{k}'])
    self.assertIsNone(summary['noise_floor_test_rmse'])
    validation = summary['centralized_validation']
    self.assertIn(validation['epoch'], (1, 2))
    self.assertEqual(list(validation['metrics']),
                     list(summary['test_metrics']['centralized']))
    self.assertIn(
        f'Centralized baseline: epoch {validation["epoch"]} kept, the best '
        'on validation sampled/ndcg@10 ('
        f'{validation["metrics"]["sampled/ndcg@10"]:.4f}).', logged)
    with open(os.path.join(root, 'neumf', 'metrics.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 2)
    for row in rows:  # Ranking metrics at every evaluation round.
      self.assertBetween(float(row['val/full/ndcg@10']), 0.0, 1.0)
      self.assertBetween(float(row['val/sampled/hr@5']), 0.0, 1.0)
      self.assertIn('train/bce', row)
    self.assertTrue(os.path.exists(
        os.path.join(root, 'neumf', 'learning_curves.png')))
    # evaluate.py's path reloads the checkpoint and finds the same numbers.
    with runtime.local_runtime():
      run = trained.load_run(os.path.join(root, 'neumf'))
    result = trained.evaluate_ranking(run, 'test')
    self.assertEqual(dict(result.overall),
                     dict(summary['test_metrics']['fedrecon']))
    self.assertEqual(result.sliced((20,))[0]['full/ndcg@10'],
                     result.overall['full/ndcg@10'])
    # The export (no TFF) reconstructs and scores users as the evaluation.
    keras_model = from_keras.keras_model_of(
        experiment.model_config_of(config, run.split, run.data), run.data.num_items,
        None, run.model_weights)
    exported = _check_export_scores(self, config, keras_model,
                                    reconstruct=True)
    self.assertEqual(exported.user_source, export.RECONSTRUCT)
    self.assertEqual(exported.settings.epochs, 2)
    self.assertEqual(sorted(n for n in exported.weights if 'initial/' in n),
                     ['initial/gmf_user_embedding',
                      'initial/mlp_user_embedding'])

  @pytest.mark.slow
  def test_new_items_are_ranked_from_their_features(self):
    # item_cold_start under implicit feedback: the cold items are never a
    # positive nor a negative of any client, so their id rows stay exactly
    # zero (each client's pipeline leaves them out), and ranking reports
    # warm and cold items apart.
    root = self.create_tempdir().full_path
    config = _config(
        root, 'cold', model=mf_features.FeatureMFConfig(embedding_dim=4),
        split=splits.SplitConfig(kind=splits.SplitKind.ITEM_COLD_START,
                                 cold_item_fraction=0.2, seed=1),
        run_centralized_baseline=False)
    summary = experiment.run_experiment(config, log=lambda _: None)
    metrics = summary['test_metrics']['fedrecon']
    for key in ('warm_items/sampled/hr@10', 'cold_items/sampled/ndcg@10',
                'cold_items/full/recall@5'):
      self.assertBetween(metrics[key], 0.0, 1.0)
    with runtime.local_runtime():
      run = trained.load_run(config.output_dir)
    cold = run.split.test.cold_items
    self.assertLen(cold, 30)
    self.assertEqual(run.config.pipeline.unavailable_items, tuple(cold))
    rows = np.asarray(run.model_weights.trainable[0])  # item_embedding.
    np.testing.assert_array_equal(rows[cold], 0.0)
    self.assertGreater(np.abs(np.delete(rows, cold, axis=0)).max(), 0.0)
    # evaluate.py's path finds the same numbers, slices included.
    result = trained.evaluate_ranking(run, 'test')
    self.assertEqual(dict(result.overall), dict(metrics))
    item_rows = [r for r in result.sliced((20,)) if r['slice_kind'] == 'item']
    self.assertEqual([r['slice'] for r in item_rows], ['warm', 'cold'])
    self.assertEqual(item_rows[1]['sampled/hr@10'],
                     metrics['cold_items/sampled/hr@10'])
    relevant = result.item_per_user['cold_items']['sampled/hr@10']
    test = run.split.test.query
    self.assertEqual(item_rows[1]['users'],
                     np.unique(test.users[np.isin(test.items, cold)]).size)
    self.assertEqual(np.isfinite(relevant).sum(), item_rows[1]['users'])

  @pytest.mark.slow
  def test_published_protocol_run_reports_the_best_validation_round(self):
    root = self.create_tempdir().full_path
    config = _config(
        root, 'pub', model=mf.MFConfig(embedding_dim=4),
        pipeline=pipelines.PipelineConfig(exclude_heldout=True),
        loop=loop.LoopConfig(total_rounds=3, eval_every=1, progress=False,
                             select_by='sampled/hr@10'),
        centralized=centralized.CentralizedConfig(epochs=1, batch_size=64))
    summary = experiment.run_experiment(config, log=lambda _: None)
    with open(os.path.join(root, 'pub', 'metrics.csv')) as f:
      rows = list(csv.DictReader(f))
    scores = [float(r['val/sampled/hr@10']) for r in rows]
    best = int(np.argmax(scores)) + 1  # The first round of the best score.
    self.assertEqual(summary['selected_round'], best)
    self.assertEqual(rows[-1]['selected_round'], str(best))
    # evaluate.py's path restores the selected model, not the last one.
    with runtime.local_runtime():
      run = trained.load_run(os.path.join(root, 'pub'))
    self.assertEqual(run.round_num, 3)
    self.assertEqual(dict(trained.evaluate_ranking(run, 'test').overall),
                     dict(summary['test_metrics']['fedrecon']))

  def test_training_store_holds_no_test_or_validation_item(self):
    data = corpus.load_corpus(_DATA)
    split = splits.split(data.ratings, _SPLIT)
    path = client_store.create_client_store(
        split, self.create_tempdir().full_path)
    held_out = {(int(u), int(i)) for t in (split.val.query, split.test.query)
                for u, i in zip(t.users, t.items)}
    self.assertLen(held_out, 2 * 40)
    for client in client_store.get_client_ids(path, client_store.TRAIN):
      rows = client_store.read_client_rows(path, client, client_store.TRAIN)
      pairs = {(int(u), int(i)) for u, i, _ in rows}
      self.assertEmpty(pairs & held_out)
      self.assertTrue((rows[:, 2] == 1.0).all())  # Interactions are 1.0.
    # Every interaction is in exactly one place.
    self.assertEqual(len(split.train) + 80, len(data.ratings))

  @pytest.mark.slow
  def test_popularity_run_equals_numpy_counts(self):
    root = self.create_tempdir().full_path
    summary = experiment.run_experiment(
        _config(root, 'pop', algorithm='popularity'),
        log=lambda _: None)
    data = corpus.load_corpus(_DATA)
    split = splits.split(data.ratings, _SPLIT)
    evaluator = evaluators.RankingEvaluator(
        _config(root, 'x'), data, split, mf.MFConfig())
    direct = evaluator.evaluate_popularity(
        np.bincount(split.train.items, minlength=data.num_items), 'test')
    self.assertEqual(list(summary['test_metrics']), ['popularity'])
    for name, value in direct.items():
      self.assertAlmostEqual(summary['test_metrics']['popularity'][name],
                             value, places=12, msg=name)

  @pytest.mark.slow
  def test_autorec_fedavg_and_implicit_mf_centralized(self):
    root = self.create_tempdir().full_path
    autorec = experiment.run_experiment(
        _config(root, 'autorec', algorithm='fedavg',
                model=autorec_lib.AutoRecConfig(hidden_units=8),
                run_centralized_baseline=False), log=lambda _: None)
    self.assertEqual(list(autorec['test_metrics']), ['fedavg', 'popularity'])
    # The floor beside a method is the popularity method's ranking (see
    # test_popularity_run_equals_numpy_counts), counted without TFF.
    data = corpus.load_corpus(_DATA)
    split = splits.split(data.ratings, _SPLIT)
    evaluator = evaluators.RankingEvaluator(
        _config(root, 'x'), data, split, mf.MFConfig())
    federated = evaluator.evaluate_popularity(  # The method's mean vector.
        np.bincount(split.train.items, minlength=data.num_items) /
        np.float32(len(np.unique(split.train.users))), 'test')
    for name, value in federated.items():
      self.assertAlmostEqual(autorec['test_metrics']['popularity'][name],
                             value, places=12, msg=name)
    fedmf = experiment.run_experiment(
        _config(root, 'mf', algorithm='centralized'),
        log=lambda _: None)
    self.assertEqual(list(fedmf['test_metrics']),
                     ['popularity', 'centralized'])
    # Their exports score as the evaluation: the autoencoder from the FedAvg
    # checkpoint, MF from the exported user table itself.
    config = _config(root, 'autorec', algorithm='fedavg',
                     model=autorec_lib.AutoRecConfig(hidden_units=8))
    with runtime.local_runtime():
      run = trained.load_run(config.output_dir)
    model_config = experiment.model_config_of(config, run.split, run.data)
    keras_model = from_keras.keras_model_of(
        model_config, run.data.num_items, run.data.num_users,
        run.model_weights)
    self.assertEqual(_check_export_scores(self, config, keras_model)
                     .user_source, export.ENCODE)
    config = _config(root, 'mf', algorithm='centralized')
    exported = export.load_export(os.path.join(config.output_dir, 'export'))
    self.assertEqual(exported.user_source, export.USER_TABLE)
    _check_export_scores(self, config, exported.keras_model(
        len(exported.raw_users)))

  def test_bad_settings_are_one_line_errors(self):
    root = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, 'no user-specific part'):
      _config(root, 'x', model=autorec_lib.AutoRecConfig())
    with self.assertRaisesRegex(ValueError, 'add --feedback=implicit'):
      _config(root, 'x', data=corpus.DataConfig(),
              algorithm='popularity')
    with self.assertRaisesRegex(ValueError, '--select_by=sampled/hr@7: '
                                'expected a validation metric of this run, '
                                'one of full/hr@5, full/hr@10, '):
      _config(root, 'x', loop=loop.LoopConfig(total_rounds=1,
                                              select_by='sampled/hr@7'))
    with self.assertRaisesRegex(ValueError, '--negative_protocol=published '
                                '.* needs --feedback=implicit'):
      _config(root, 'x', data=corpus.DataConfig(),
              pipeline=pipelines.PipelineConfig(exclude_heldout=True))
    with self.assertRaisesRegex(ValueError, r'--eval_negatives=149: user \d+ '
                                'has only'):
      experiment.run_experiment(
          _config(root, 'x', ranking=ranking.RankingConfig(
              eval_negatives=149)), log=lambda _: None)


if __name__ == '__main__':
  absltest.main()
