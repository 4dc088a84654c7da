"""Tests of the rating metrics: NumPy and Keras versions agree with hand sums."""

from absl.testing import absltest
import numpy as np

from research.fedrec.evaluation import rating_metrics


class RatingMetricsTest(absltest.TestCase):

  def test_numpy_metrics_by_hand(self):
    got = rating_metrics.compute(np.array([4., 2., 5., 1.]),
                                 np.array([3.5, 2.6, 5., 3.]))
    errors = np.array([-.5, .6, 0., 2.])
    self.assertAlmostEqual(got['mse'], np.mean(errors**2))
    self.assertAlmostEqual(got['rmse'], np.sqrt(np.mean(errors**2)))
    self.assertAlmostEqual(got['mae'], 3.1 / 4)
    self.assertEqual(got['rating_accuracy'], 0.5)  # |-.5| and 0 are within.

  def test_keras_metrics_agree_with_numpy(self):
    y = np.array([4., 2., 5., 1., 3.], np.float32)
    p = np.array([3.5, 2.6, 5., 3., 2.2], np.float32)
    expected = rating_metrics.compute(y, p)
    for metric in rating_metrics.create_keras_metrics():
      metric.update_state(y[:2], p[:2])
      metric.update_state(y[2:], p[2:])
      self.assertAlmostEqual(float(metric.result()), expected[metric.name],
                             places=6)
    self.assertEqual([m.name for m in rating_metrics.create_keras_metrics()],
                     list(rating_metrics.METRIC_NAMES))

  def test_keras_metrics_read_the_first_column_as_the_rating(self):
    metric = rating_metrics.create_keras_metrics()[0]
    metric.update_state(np.array([1., 3.]), np.array([[2., 9.], [3., 9.]]))
    self.assertAlmostEqual(float(metric.result()), np.sqrt(0.5), places=6)

  def test_empty_gives_nan(self):
    self.assertTrue(np.isnan(rating_metrics.compute(np.zeros(0),
                                                    np.zeros(0))['rmse']))


if __name__ == '__main__':
  absltest.main()
