"""Top-k / random-k silo uploads with error feedback (sparse_uploads.py)."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import sparse_uploads

_TOPK = sparse_uploads.SparsifyConfig('topk', 0.5)


def _select(config, update, residual, key=(0, 0)):
  sent, kept, sent_bytes = sparse_uploads.select(
      config, [tf.constant(u, tf.float32) for u in update],
      [tf.constant(residual, tf.float32)], [True, False],
      tf.constant(key, tf.int64))
  return [s.numpy() for s in sent], kept[0].numpy(), float(sent_bytes)


class RowsSentTest(absltest.TestCase):

  def test_k_is_the_share_of_rows_rounded_up_and_at_least_one(self):
    config = sparse_uploads.SparsifyConfig('topk', 0.1)
    self.assertEqual(config.rows_sent(1682), 169)
    self.assertEqual(config.rows_sent(40), 4)
    self.assertEqual(config.rows_sent(3), 1)
    self.assertEqual(sparse_uploads.SparsifyConfig('topk', 1.0).rows_sent(7),
                     7)


class SelectTest(absltest.TestCase):

  def test_top_rows_by_norm_of_update_plus_residual(self):
    # Table of 4 rows x 2: update + residual has row norms 5, 1, 0, 2.5.
    update = [[[3.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.5, 2.0]], [7.0]]
    residual = [[0.0, 4.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    sent, kept, sent_bytes = _select(_TOPK, update, residual)
    np.testing.assert_array_equal(
        sent[0], [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [1.5, 2.0]])
    np.testing.assert_array_equal(sent[1], [7.0])  # Not a table: whole.
    np.testing.assert_array_equal(
        kept, [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # 2 rows of 2 float32 values and an int32 id each, and the scalar.
    self.assertEqual(sent_bytes, 2 * (2 * 4 + 4) + 4)

  def test_without_error_feedback_the_residual_is_neither_used_nor_kept(self):
    config = sparse_uploads.SparsifyConfig('topk', 0.5, error_feedback=False)
    update = [[[3.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.5, 2.0]], [7.0]]
    residual = [[9.0, 9.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    sent, kept, _ = _select(config, update, residual)
    np.testing.assert_array_equal(
        sent[0], [[3.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.5, 2.0]])
    np.testing.assert_array_equal(kept, np.zeros([4, 2]))

  def test_error_feedback_sends_every_update_eventually(self):
    """Over rounds, what was sent plus what is kept is what was computed."""
    rng = np.random.default_rng(0)
    updates = [rng.integers(-8, 8, [6, 3]).astype(np.float32) / 4
               for _ in range(5)]
    config = sparse_uploads.SparsifyConfig('randomk', 0.3)
    residual = np.zeros([6, 3], np.float32)
    total_sent = np.zeros([6, 3], np.float32)
    for r, update in enumerate(updates):
      sent, residual, sent_bytes = _select(config, [update, [0.0]], residual,
                                           key=(1, r))
      total_sent += sent[0]
      rows = np.flatnonzero(np.any(sent[0] != 0, axis=1))
      self.assertLessEqual(len(rows), 2)  # ceil(0.3 x 6) = 2 rows.
      self.assertEqual(sent_bytes, 2 * (3 * 4 + 4) + 4)
    np.testing.assert_array_equal(total_sent + residual, sum(updates))

  def test_random_rows_come_from_the_key(self):
    config = sparse_uploads.SparsifyConfig('randomk', 0.25)
    update = [np.arange(1, 41, dtype=np.float32).reshape(20, 2), [0.0]]
    zeros = np.zeros([20, 2], np.float32)

    def rows(key):
      sent, _, _ = _select(config, update, zeros, key)
      return tuple(np.flatnonzero(sent[0][:, 0]))

    self.assertEqual(rows((3, 5)), rows((3, 5)))
    self.assertLen(rows((3, 5)), 5)
    # Uniform draws: over many keys every row is drawn, each about as often.
    counts = np.zeros(20)
    for r in range(200):
      counts[list(rows((3, r)))] += 1
    self.assertEqual(counts.sum(), 1000)
    self.assertGreater(counts.min(), 25)
    self.assertLess(counts.max(), 75)


if __name__ == '__main__':
  absltest.main()
