"""Tests of the per-client tf.data pipelines."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.data import pipelines


def _raw(n, is_query=None):
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      user=np.zeros(n, np.int64), item=np.arange(n, dtype=np.int64),
      rating=np.arange(n, dtype=np.float32),
      is_query=np.zeros(n, np.int64) if is_query is None else np.array(
          is_query, np.int64)))


def _items(dataset):
  return [b['x'].tolist() if not isinstance(b['x'], dict) else
          b['x']['item'].tolist() for b in dataset.as_numpy_iterator()]


class PipelinesTest(absltest.TestCase):

  def test_recon_train_batches_are_a_seeded_permutation(self):
    config = pipelines.PipelineConfig(batch_size=4, seed=1)
    batches = _items(pipelines.create_recon_train_fn(config)(_raw(10)))
    self.assertEqual([len(b) for b in batches], [4, 4, 2])
    flat = sum(batches, [])
    self.assertCountEqual(flat, range(10))
    self.assertNotEqual(flat, list(range(10)))
    # Same seed: same order; and every pass over the dataset is the same.
    dataset = pipelines.create_recon_train_fn(config)(_raw(10))
    self.assertEqual(_items(dataset), batches)
    self.assertEqual(_items(dataset), batches)

  def test_max_examples_caps_after_shuffling(self):
    config = pipelines.PipelineConfig(batch_size=8, max_examples_per_user=3)
    (batch,) = _items(pipelines.create_recon_train_fn(config)(_raw(10)))
    self.assertLen(batch, 3)

  def test_fedavg_batches_carry_user_and_repeat_epochs(self):
    config = pipelines.PipelineConfig(batch_size=5, local_epochs=2)
    batches = list(pipelines.create_fedavg_train_fn(config)(_raw(5))
                   .as_numpy_iterator())
    self.assertLen(batches, 2)
    self.assertEqual(sorted(batches[0]['x']['item'].tolist()),
                     sorted(batches[1]['x']['item'].tolist()))
    self.assertEqual(set(batches[0]['x']['user'].tolist()), {0})

  def test_support_query_split_keeps_roles_apart(self):
    config = pipelines.PipelineConfig(batch_size=2, max_examples_per_user=2)
    batches = pipelines.create_recon_eval_fn(config)(
        _raw(6, is_query=[0, 0, 0, 1, 1, 0]))
    support, query = pipelines.split_support_query(batches, config)
    support_items = sum(_items(support), [])
    self.assertLen(support_items, 2)  # Capped at max_examples_per_user.
    self.assertContainsSubset(support_items, [0, 1, 2, 5])
    self.assertEqual(_items(query), [[3, 4]])

  def test_bad_config(self):
    with self.assertRaisesRegex(ValueError, '--batch_size'):
      pipelines.PipelineConfig(batch_size=0)


if __name__ == '__main__':
  absltest.main()
