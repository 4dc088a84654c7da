"""Tests of each method's client data (per-client tf.data pipelines)."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import client_data
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
    batches = _items(client_data.create_recon_train_fn(config)(_raw(10)))
    self.assertEqual([len(b) for b in batches], [4, 4, 2])
    flat = sum(batches, [])
    self.assertCountEqual(flat, range(10))
    self.assertNotEqual(flat, list(range(10)))
    # Same seed: same order; and every pass over the dataset is the same.
    dataset = client_data.create_recon_train_fn(config)(_raw(10))
    self.assertEqual(_items(dataset), batches)
    self.assertEqual(_items(dataset), batches)

  def test_max_examples_caps_after_shuffling(self):
    config = pipelines.PipelineConfig(batch_size=8, max_examples_per_user=3)
    (batch,) = _items(client_data.create_recon_train_fn(config)(_raw(10)))
    self.assertLen(batch, 3)

  def test_fedavg_batches_carry_user_and_repeat_epochs(self):
    config = pipelines.PipelineConfig(batch_size=5, local_epochs=2)
    batches = list(client_data.create_fedavg_train_fn(config)(_raw(5))
                   .as_numpy_iterator())
    self.assertLen(batches, 2)
    self.assertEqual(sorted(batches[0]['x']['item'].tolist()),
                     sorted(batches[1]['x']['item'].tolist()))
    self.assertEqual(set(batches[0]['x']['user'].tolist()), {0})

  def test_support_query_split_keeps_roles_apart(self):
    config = pipelines.PipelineConfig(batch_size=2, max_examples_per_user=2)
    batches = client_data.create_recon_eval_fn(config)(
        _raw(6, is_query=[0, 0, 0, 1, 1, 0]))
    support, query = client_data.split_support_query(batches, config)
    support_items = sum(_items(support), [])
    self.assertLen(support_items, 2)  # Capped at max_examples_per_user.
    self.assertContainsSubset(support_items, [0, 1, 2, 5])
    self.assertEqual(_items(query), [[3, 4]])


def _positives(items, user=3, round_num=1):
  n = len(items)
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      user=np.full(n, user, np.int64), item=np.array(items, np.int64),
      rating=np.ones(n, np.float32), is_query=np.zeros(n, np.int64),
      round=np.full(n, round_num, np.int64)))


def _examples(dataset):
  """Per local epoch: (items, labels) of its batches, concatenated."""
  epochs = collections.defaultdict(lambda: ([], []))
  for b in dataset.as_numpy_iterator():
    x = b['x']
    epoch = int(x['epoch'][0]) if 'epoch' in x else len(epochs)
    epochs[epoch][0].extend(x['item'].tolist())
    epochs[epoch][1].extend(b['y'].tolist())
  return [epochs[e] for e in sorted(epochs)]


class ImplicitPipelinesTest(absltest.TestCase):

  def test_negatives_per_epoch_and_round_never_positives(self):
    config = pipelines.PipelineConfig(batch_size=4, num_negatives=3, seed=2)
    fn = client_data.create_implicit_recon_train_fn(config, 50, 1, 2)
    positives = [5, 9, 11, 30]
    epochs = _examples(fn(_positives(positives)))
    self.assertLen(epochs, 3)
    negative_sets = []
    for items, labels in epochs:
      items, labels = np.array(items), np.array(labels)
      self.assertCountEqual(items[labels == 1], positives)
      negatives = items[labels == 0]
      self.assertLen(negatives, 12)
      self.assertFalse(np.isin(negatives, positives).any())
      negative_sets.append(negatives.tolist())
    self.assertNotEqual(negative_sets[0], negative_sets[1])  # Re-drawn.
    # Seeded: the same client and round give the same data; another round
    # gives other negatives.
    self.assertEqual(_examples(fn(_positives(positives))), epochs)
    other_round = _examples(fn(_positives(positives, round_num=2)))
    self.assertNotEqual(other_round, epochs)

  def test_published_protocol_never_draws_a_heldout_item(self):
    # Items 0-5; training positives 1 and 4; held-out 2 and 3 (is_query = 1,
    # as the store gives them with `with_heldout`). 60 negatives per epoch.
    rows = _positives([1, 4, 2, 3]).map(
        lambda r: {**r, 'is_query': tf.cast(
            tf.logical_or(r['item'] == 2, r['item'] == 3), tf.int64)})
    config = pipelines.PipelineConfig(batch_size=7, num_negatives=30, seed=4)
    # FedRecon: a reconstruction and a training epoch; FedAvg: one epoch.
    for fn, epochs in (
        (client_data.create_implicit_recon_train_fn(config, 6, 1, 1), 2),
        (client_data.create_implicit_fedavg_train_fn(config, 6), 1)):
      examples = _examples(fn(rows))
      items = np.concatenate([e[0] for e in examples])
      labels = np.concatenate([e[1] for e in examples])
      self.assertCountEqual(items[labels == 1], [1, 4] * epochs)
      self.assertLen(items, 2 * 31 * epochs)
      self.assertEqual(set(items[labels == 0]), {0, 5})
    # Leak-free: the same client without its held-out rows draws 2 and 3 too
    # (60 draws from {0, 2, 3, 5}: all four come up under this seed).
    fn = client_data.create_implicit_recon_train_fn(config, 6, 1, 1)
    for items, labels in _examples(fn(_positives([1, 4]))):
      self.assertEqual(set(np.array(items)[np.array(labels) == 0]),
                       {0, 2, 3, 5})
    # A client whose every row is held out trains on nothing.
    only_heldout = rows.filter(lambda r: r['is_query'] == 1)
    self.assertEqual(_examples(fn(only_heldout)), [])

  def test_split_dataset_uses_disjoint_positives(self):
    config = pipelines.PipelineConfig(batch_size=64, num_negatives=1)
    fn = client_data.create_implicit_recon_train_fn(config, 100, 1, 1,
                                                  split_dataset=True)
    (recon_items, recon_labels), (post_items, post_labels) = _examples(
        fn(_positives(list(range(10)))))
    recon = {i for i, l in zip(recon_items, recon_labels) if l == 1}
    post = {i for i, l in zip(post_items, post_labels) if l == 1}
    self.assertLen(recon, 5)
    self.assertLen(post, 5)
    self.assertEmpty(recon & post)

  def test_fedavg_and_autorec_examples(self):
    config = pipelines.PipelineConfig(batch_size=5, num_negatives=2,
                                      local_epochs=2)
    batches = list(client_data.create_implicit_fedavg_train_fn(config, 20)(
        _positives([1, 4])).as_numpy_iterator())
    users = np.concatenate([b['x']['user'] for b in batches])
    self.assertLen(users, 2 * 2 * 3)
    self.assertTrue((users == 3).all())
    examples = list(client_data.create_user_vector_train_fn(config, 6)(
        _positives([1, 4])).as_numpy_iterator())
    self.assertLen(examples, 2)
    for e in examples:
      np.testing.assert_array_equal(e['x'][0], [0, 1, 0, 0, 1, 0])
      self.assertEqual(e['y'][0][1], 1.0)
      self.assertEqual(e['y'][0][4], 1.0)
      labelled = e['y'][0][[0, 2, 3, 5]]
      self.assertTrue(set(labelled.tolist()) <= {0.0, -1.0})
      self.assertGreaterEqual((labelled == 0).sum(), 1)


if __name__ == '__main__':
  absltest.main()
