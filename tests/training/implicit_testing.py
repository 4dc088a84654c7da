"""A small implicit-feedback setting and checks shared by experiment tests."""

import os

import numpy as np

from research.fedrec.data import corpus
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.evaluation import evaluators
from research.fedrec.evaluation import ranking
from research.fedrec.evaluation import scoring
from research.fedrec.inference import export
from research.fedrec.inference import implicit
from research.fedrec.inference import recommender
from research.fedrec.models import builder
from research.fedrec.training import centralized
from research.fedrec.training import experiment
from research.fedrec.training import loop

DATA = corpus.DataConfig(
    feedback=corpus.Feedback.IMPLICIT,
    synthetic_config=synthetic.SyntheticConfig(
        num_users=40, num_items=150, num_ratings=1200, min_ratings_per_user=10,
        max_ratings_per_user=50, selection_affinity=1.5))
SPLIT = splits.SplitConfig(kind=splits.SplitKind.LEAVE_ONE_OUT)


def sigmoid(logits):
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def check_export_scores(test, config, keras_model, reconstruct=False):
  """The export's recommender scores test users as ranking evaluation does."""
  data = corpus.load_corpus(DATA)
  split = splits.split(data.ratings, SPLIT)
  model_config = experiment.model_config_of(config, split, data)
  partition = evaluators.RankingEvaluator(
      config, data, split, model_config).partition('test')
  rows = np.arange(5)
  if reconstruct:
    expected = scoring.reconstruction_scores(
        keras_model, model_config, partition,
        implicit.Settings.of_run(config), 8)(rows)
  elif builder.user_vector_inputs(model_config):
    expected = scoring.user_vector_scores(keras_model, partition)(rows)
  else:
    expected = scoring.classic_scores(keras_model, partition)(rows)
  exported = export.load_export(os.path.join(config.output_dir, 'export'))
  test.assertIsInstance(exported, export.ImplicitExport)
  test.assertEqual(exported.model_config, model_config)
  scorer = recommender.ImplicitRecommender(exported)
  for row in rows:
    history = recommender.UserRatings(
        partition.support[row].indices,
        np.ones(partition.support[row].nnz, np.float32))
    scores = scorer.user_scores(int(partition.task.users[row]), history)
    np.testing.assert_allclose(scores, sigmoid(expected[row]), rtol=1e-5,
                               atol=1e-7)
  # The same history as a new user: encoded identically, or reconstructed
  # (user-table models too) into probabilities of every item.
  new = scorer.new_user_scores(history)
  test.assertEqual(new.shape, (data.num_items,))
  test.assertTrue(((new > 0) & (new < 1)).all())
  if exported.user_source == export.ENCODE:
    np.testing.assert_array_equal(new, scores)
  return exported


def config(root, name, **overrides):
  settings = dict(
      root_output_dir=root, experiment_name=name, data=DATA, split=SPLIT,
      loop=loop.LoopConfig(total_rounds=2, eval_every=1, progress=False),
      clients_per_round=4,
      centralized=centralized.CentralizedConfig(epochs=2, batch_size=64),
      ranking=ranking.RankingConfig(ks=(5, 10), eval_negatives=50))
  settings.update(overrides)
  return experiment.ExperimentConfig(**settings)
