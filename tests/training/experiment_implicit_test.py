"""End-to-end implicit-feedback runs on a tiny synthetic corpus."""

import csv
import os

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.algorithms import fed_recon
from research.fedrec.data import client_store
from research.fedrec.data import corpus
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.evaluation import ranking
from research.fedrec.inference import export
from research.fedrec.inference import recommender
from research.fedrec.models import builder
from research.fedrec.models import mf
from research.fedrec.training import centralized
from research.fedrec.training import experiment
from research.fedrec.training import exporting
from research.fedrec.training import loop
from research.fedrec.training import ranking_eval
from research.fedrec.training import runtime
from research.fedrec.training import trained

_DATA = corpus.DataConfig(
    feedback=corpus.Feedback.IMPLICIT,
    synthetic_config=synthetic.SyntheticConfig(
        num_users=40, num_items=150, num_ratings=1200, min_ratings_per_user=10,
        max_ratings_per_user=50, selection_affinity=1.5))
_SPLIT = splits.SplitConfig(kind=splits.SplitKind.LEAVE_ONE_OUT)


def _sigmoid(logits):
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def _check_export_scores(test, config, keras_model, reconstruct=False):
  """The export's recommender scores test users as ranking evaluation does."""
  data = corpus.load_corpus(_DATA)
  split = splits.split(data.ratings, _SPLIT)
  model_config = experiment.model_config_of(config, split)
  partition = experiment.RankingEvaluator(
      config, data, split, model_config).partition('test')
  rows = np.arange(5)
  if reconstruct:
    expected = ranking_eval.reconstruction_scores(
        keras_model, model_config, partition,
        ranking_eval.reconstruction_settings(config), 8)(rows)
  elif builder.has_user_part(model_config):
    expected = ranking_eval.classic_scores(keras_model, partition)(rows)
  else:
    expected = ranking_eval.autorec_scores(keras_model, partition)(rows)
  exported = export.load_export(os.path.join(config.output_dir, 'export'))
  test.assertIsInstance(exported, export.ImplicitExport)
  test.assertEqual(exported.model_config, model_config)
  scorer = recommender.ImplicitRecommender(exported)
  for row in rows:
    history = recommender.UserRatings(
        partition.support[row].indices,
        np.ones(partition.support[row].nnz, np.float32))
    scores = scorer.user_scores(int(partition.task.users[row]), history)
    np.testing.assert_allclose(scores, _sigmoid(expected[row]), rtol=1e-5,
                               atol=1e-7)
  # The same history as a new user: encoded identically, or reconstructed
  # (user-table models too) into probabilities of every item.
  new = scorer.new_user_scores(history)
  test.assertEqual(new.shape, (data.num_items,))
  test.assertTrue(((new > 0) & (new < 1)).all())
  if exported.user_source == export.ENCODE:
    np.testing.assert_array_equal(new, scores)
  return exported


def _config(root, name, **overrides):
  settings = dict(
      root_output_dir=root, experiment_name=name, data=_DATA, split=_SPLIT,
      loop=loop.LoopConfig(total_rounds=2, eval_every=1, progress=False),
      clients_per_round=4,
      centralized=centralized.CentralizedConfig(epochs=2, batch_size=64),
      ranking=ranking.RankingConfig(ks=(5, 10), eval_negatives=50))
  settings.update(overrides)
  return experiment.ExperimentConfig(**settings)


class ImplicitExperimentTest(absltest.TestCase):

  @pytest.mark.slow
  def test_neumf_fedrecon_run_reports_ranking_metrics(self):
    root = self.create_tempdir().full_path
    # Evaluated users reconstruct for 2 epochs; training's clients for 1.
    config = _config(root, 'neumf', model=mf.MFConfig(
        architecture=mf.Architecture.NEUMF, embedding_dim=4,
        mlp_layers=(8, 4)), recon=fed_recon.ReconConfig(eval_recon_epochs=2))
    self.assertEqual(ranking_eval.reconstruction_settings(config).epochs, 2)
    summary = experiment.run_experiment(config, log=lambda _: None)
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
    keras_model = exporting.keras_model_of(
        experiment.model_config_of(config, run.split), run.data.num_items,
        None, run.model_weights)
    exported = _check_export_scores(self, config, keras_model,
                                    reconstruct=True)
    self.assertEqual(exported.user_source, export.RECONSTRUCT)
    self.assertEqual(exported.settings.epochs, 2)
    self.assertEqual(sorted(n for n in exported.weights if 'initial/' in n),
                     ['initial/gmf_user_embedding',
                      'initial/mlp_user_embedding'])

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
    evaluator = experiment.RankingEvaluator(
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
                model=mf.MFConfig(architecture=mf.Architecture.AUTOREC,
                                  hidden_units=8),
                run_centralized_baseline=False), log=lambda _: None)
    self.assertEqual(list(autorec['test_metrics']), ['fedavg', 'popularity'])
    fedmf = experiment.run_experiment(
        _config(root, 'mf', algorithm='centralized'),
        log=lambda _: None)
    self.assertEqual(list(fedmf['test_metrics']),
                     ['popularity', 'centralized'])
    # Their exports score as the evaluation: the autoencoder from the FedAvg
    # checkpoint, MF from the exported user table itself.
    config = _config(root, 'autorec', algorithm='fedavg',
                     model=mf.MFConfig(architecture=mf.Architecture.AUTOREC,
                                       hidden_units=8))
    with runtime.local_runtime():
      run = trained.load_run(config.output_dir)
    model_config = experiment.model_config_of(config, run.split)
    keras_model = exporting.keras_model_of(
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
      _config(root, 'x', model=mf.MFConfig(
          architecture=mf.Architecture.AUTOREC))
    with self.assertRaisesRegex(ValueError, 'add --feedback=implicit'):
      _config(root, 'x', data=corpus.DataConfig(),
              algorithm='popularity')
    with self.assertRaisesRegex(ValueError, r'--eval_negatives=149: user \d+ '
                                'has only'):
      experiment.run_experiment(
          _config(root, 'x', ranking=ranking.RankingConfig(
              eval_negatives=149)), log=lambda _: None)


if __name__ == '__main__':
  absltest.main()
