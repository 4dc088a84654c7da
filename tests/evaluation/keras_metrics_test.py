"""Tests of the Keras rating metrics: they agree with the NumPy version."""

from absl.testing import absltest
import numpy as np

from research.fedrec.evaluation import keras_metrics
from research.fedrec.evaluation import rating_metrics


class KerasMetricsTest(absltest.TestCase):

  def test_keras_metrics_agree_with_numpy(self):
    y = np.array([4., 2., 5., 1., 3.], np.float32)
    p = np.array([3.5, 2.6, 5., 3., 2.2], np.float32)
    expected = rating_metrics.compute(y, p)
    for metric in keras_metrics.create_keras_metrics():
      metric.update_state(y[:2], p[:2])
      metric.update_state(y[2:], p[2:])
      self.assertAlmostEqual(float(metric.result()), expected[metric.name],
                             places=6)
    self.assertEqual([m.name for m in keras_metrics.create_keras_metrics()],
                     list(rating_metrics.METRIC_NAMES))

  def test_keras_metrics_read_the_first_column_as_the_rating(self):
    metric = keras_metrics.create_keras_metrics()[0]
    metric.update_state(np.array([1., 3.]), np.array([[2., 9.], [3., 9.]]))
    self.assertAlmostEqual(float(metric.result()), np.sqrt(0.5), places=6)


if __name__ == '__main__':
  absltest.main()
