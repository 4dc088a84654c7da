"""Tests of the centralized baseline."""

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

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
    model = centralized.train(split, 40, 50, model_config, config).model
    metrics = evaluators.rating_metrics_of(model, split.test)
    self.assertEqual(metrics, rating_metrics.compute(
        split.test.query.ratings, evaluators.predict_ratings(model, split.test.query)))
    # Better than predicting the training mean for everyone.
    mean_only = rating_metrics.compute(
        split.test.query.ratings,
        np.full(len(split.test.query), split.train.ratings.mean()))
    self.assertLess(metrics['rmse'], mean_only['rmse'])
    again = centralized.train(split, 40, 50, model_config, config).model
    self.assertEqual(evaluators.rating_metrics_of(again, split.test), metrics)


  @pytest.mark.slow
  def test_keeps_the_best_epoch_when_every_epoch_runs(self):
    # Keras 2's EarlyStopping restores the best weights only when it stops
    # early; a baseline that runs all its epochs must keep them too.
    split = _split(splits.SplitKind.HOLDOUT)
    model_config = mf.MFConfig(embedding_dim=8,
                               global_mean=float(split.train.ratings.mean()))
    config = centralized.CentralizedConfig(epochs=6, patience=10,
                                           batch_size=8, learning_rate=0.05)
    seen = []
    record = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(logs['val_rmse']))
    fitted = centralized.train(split, 40, 50, model_config, config,
                               callbacks=[record])
    self.assertLen(seen, 6)
    best = int(np.argmin(seen))
    self.assertLess(best, 5)  # The case: the last epoch is not the best.
    self.assertEqual(fitted.epoch, best + 1)
    self.assertAlmostEqual(
        evaluators.rating_metrics_of(fitted.model, split.val)['rmse'],
        seen[best], places=5)

  def test_implicit_keeps_the_epoch_best_on_validation(self):
    split = _split(splits.SplitKind.HOLDOUT)
    model_config = mf.MFConfig(embedding_dim=4, use_biases=False)
    config = centralized.CentralizedConfig(epochs=5, patience=2,
                                           batch_size=64)
    scores, weights = iter([0.1, 0.3, 0.2, 0.3, 0.9]), []

    def validate(model):
      weights.append(model.get_weights())
      return next(scores)

    fitted = centralized.train_implicit(split, 40, 50, model_config, config,
                                        num_negatives=1, validate=validate)
    # Epochs 3 and 4 do not beat epoch 2: patience 2 stops after epoch 4.
    self.assertLen(weights, 4)
    self.assertEqual(fitted.epoch, 2)
    for kept, expected in zip(fitted.model.get_weights(), weights[1]):
      np.testing.assert_array_equal(kept, expected)
    # Without a validation split every epoch runs; the last one is kept.
    fitted = centralized.train_implicit(split, 40, 50, model_config, config,
                                        num_negatives=1,
                                        validate=lambda model: None)
    self.assertEqual(fitted.epoch, 5)


class CentralizedConfigTest(absltest.TestCase):

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, '--centralized_optimizer=yogi is '
                                'not one of sgd, sgdm, adam, adagrad'):
      centralized.CentralizedConfig(optimizer='yogi')
    with self.assertRaisesRegex(ValueError, '--centralized_epochs must be'):
      centralized.CentralizedConfig(epochs=0)


if __name__ == '__main__':
  absltest.main()
