"""Tests of the centralized baseline."""

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.data import ratings
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.evaluation import evaluators
from research.fedrec.evaluation import rating_metrics
from research.fedrec.models import mf
from research.fedrec.training import centralized


def _split(kind):
  table = synthetic.generate(synthetic.SyntheticConfig(
      num_users=40, num_items=50, num_ratings=1200, min_ratings_per_user=20,
      noise_stddev=0.3)).ratings
  return splits.split(ratings.remap_ids(table)[0],
                      splits.SplitConfig(kind=kind))


class CentralizedTest(absltest.TestCase):

  def test_user_disjoint_pools_the_support_ratings_too(self):
    split = _split(splits.SplitKind.USER_DISJOINT)
    pooled = centralized.training_ratings(split)
    self.assertLen(pooled, len(split.train) + len(split.val.support) +
                   len(split.test.support))
    holdout = _split(splits.SplitKind.HOLDOUT)
    self.assertIs(centralized.training_ratings(holdout), holdout.train)

  def test_published_protocol_excludes_the_heldout_pairs(self):
    train = ratings.Ratings(np.array([0, 0, 1], np.int64),
                            np.array([1, 4, 0], np.int64),
                            np.ones(3, np.float32), np.zeros(3, np.int64))
    val = ratings.Ratings(np.array([0, 1], np.int64), np.array([2, 3]),
                          np.ones(2, np.float32), np.zeros(2, np.int64))
    test = ratings.Ratings(np.array([0, 1], np.int64), np.array([3, 5]),
                           np.ones(2, np.float32), np.zeros(2, np.int64))
    split = splits.Split(train, splits.EvalPartition(train, val),
                         splits.EvalPartition(train, test))
    np.testing.assert_array_equal(
        centralized.excluded_keys(split, 6), [1, 4, 6])
    keys = centralized.excluded_keys(split, 6, exclude_heldout=True)
    np.testing.assert_array_equal(keys, [1, 2, 3, 4, 6, 9, 11])
    users, items = centralized.sample_negatives(
        np.array([0, 1]), 6, 200, keys, np.random.default_rng(0))
    self.assertEqual(set(items[users == 0]), {0, 5})
    self.assertEqual(set(items[users == 1]), {1, 2, 4})
    # item_cold_start: an item that does not exist yet is nobody's negative.
    keys = centralized.excluded_keys(split, 6, unavailable_items=(2, 5))
    np.testing.assert_array_equal(keys, [1, 2, 4, 5, 6, 8, 11])
    users, items = centralized.sample_negatives(
        np.array([0, 1]), 6, 200, keys, np.random.default_rng(0))
    self.assertEqual(set(items[users == 0]), {0, 3})
    self.assertEqual(set(items[users == 1]), {1, 3, 4})

  @pytest.mark.slow
  def test_learns_and_evaluates_with_the_shared_metrics(self):
    split = _split(splits.SplitKind.HOLDOUT)
    model_config = mf.MFConfig(embedding_dim=4,
                               global_mean=float(split.train.ratings.mean()))
    config = centralized.CentralizedConfig(epochs=30, batch_size=32,
                                           learning_rate=0.01)
    model = centralized.train(split, 40, 50, model_config, config)
    metrics = evaluators.rating_metrics_of(model, split.test)
    self.assertEqual(metrics, rating_metrics.compute(
        split.test.query.ratings, evaluators.predict_ratings(model, split.test.query)))
    # Better than predicting the training mean for everyone.
    mean_only = rating_metrics.compute(
        split.test.query.ratings,
        np.full(len(split.test.query), split.train.ratings.mean()))
    self.assertLess(metrics['rmse'], mean_only['rmse'])
    again = centralized.train(split, 40, 50, model_config, config)
    self.assertEqual(evaluators.rating_metrics_of(again, split.test), metrics)


class CentralizedConfigTest(absltest.TestCase):

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, '--centralized_optimizer=yogi is '
                                'not one of sgd, sgdm, adam, adagrad'):
      centralized.CentralizedConfig(optimizer='yogi')
    with self.assertRaisesRegex(ValueError, '--centralized_epochs must be'):
      centralized.CentralizedConfig(epochs=0)


if __name__ == '__main__':
  absltest.main()
