"""Tests of the per-client tf.data building blocks."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.data import pipelines


class PipelinesTest(absltest.TestCase):

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, '--batch_size'):
      pipelines.PipelineConfig(batch_size=0)

  def test_sample_negatives_is_uniform_over_the_complement(self):
    negatives = pipelines.sample_negatives(
        tf.constant([0, 2, 3, 7], tf.int64), 60_000, 9,
        tf.constant([4, 5], tf.int64)).numpy()
    counts = np.bincount(negatives, minlength=9)
    np.testing.assert_array_equal(counts[[0, 2, 3, 7]], 0)
    # 5 allowed items, 12,000 expected each; 4 standard errors is ~400.
    self.assertLess(np.abs(counts[[1, 4, 5, 6, 8]] - 12_000).max(), 400)
    self.assertEmpty(pipelines.sample_negatives(
        tf.constant([0, 1], tf.int64), 5, 2, tf.constant([1, 2],
                                                         tf.int64)).numpy())


if __name__ == '__main__':
  absltest.main()
