"""Tests of the NumPy rating metrics against hand sums."""

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

  def test_empty_gives_nan(self):
    self.assertTrue(np.isnan(rating_metrics.compute(np.zeros(0),
                                                    np.zeros(0))['rmse']))


if __name__ == '__main__':
  absltest.main()
