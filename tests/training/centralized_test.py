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
