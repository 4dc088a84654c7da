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

  def test_item_slices(self):
    # Items 7 and 9 are cold: errors 2 (item 7) and 0 (item 9); warm -.5, .6.
    got = rating_metrics.compute_with_item_slices(
        np.array([4., 2., 5., 1.]), np.array([3.5, 2.6, 5., 3.]),
        np.array([1, 3, 9, 7]), np.array([7, 9]))
    self.assertEqual(got['rmse'],
                     rating_metrics.compute(np.array([4., 2., 5., 1.]),
                                            np.array([3.5, 2.6, 5., 3.]))[
                                                'rmse'])
    self.assertAlmostEqual(got['cold_items/mse'], 2.0)
    self.assertAlmostEqual(got['cold_items/mae'], 1.0)
    self.assertEqual(got['cold_items/rating_accuracy'], 0.5)
    self.assertAlmostEqual(got['warm_items/mse'], (0.25 + 0.36) / 2)
    self.assertAlmostEqual(got['warm_items/mae'], 0.55)
    # Without cold items: the plain metrics.
    self.assertEqual(
        list(rating_metrics.compute_with_item_slices(
            np.ones(2), np.ones(2), np.array([0, 1]), np.zeros(0, int))),
        list(rating_metrics.METRIC_NAMES))


if __name__ == '__main__':
  absltest.main()
