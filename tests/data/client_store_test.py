"""Tests of the SQLite client store: round trip, caching, TFF dataset reads."""

import os
import sqlite3

from absl.testing import absltest
import numpy as np
import tensorflow_federated as tff

from research.fedrec.data import client_store
from research.fedrec.data import ratings
from research.fedrec.data import splits
from research.fedrec.training import runtime


def _table(users, items, values):
  return ratings.Ratings(np.array(users, np.int64), np.array(items, np.int64),
                         np.array(values, np.float32),
                         np.zeros(len(users), np.int64))


def _holdout_split():
  train = _table([0, 0, 1, 2, 2], [0, 1, 0, 1, 2], [5, 4, 1, 2, 3])
  val = _table([0], [2], [3])
  test = _table([1, 2], [1, 0], [2, 5])
  return splits.Split(train, splits.EvalPartition(train, val),
                      splits.EvalPartition(train, test))


def _disjoint_split():
  train = _table([0, 0], [0, 1], [5, 4])
  empty = _table([], [], [])
  test = splits.EvalPartition(_table([1, 1], [0, 2], [1, 2]),
                              _table([1], [1], [3]))
  return splits.Split(train, splits.EvalPartition(empty, empty), test)


def setUpModule():
  runtime.start()


def tearDownModule():
  runtime.release()


class ClientStoreTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.cache = self.create_tempdir().full_path

  def test_round_trip_of_every_split(self):
    path = client_store.create_client_store(_holdout_split(), self.cache)
    self.assertEqual(client_store.get_client_ids(path, 'train'),
                     ['0', '1', '2'])
    self.assertEqual(client_store.get_client_ids(path, 'test'), ['1', '2'])
    self.assertEqual(client_store.get_num_examples(path, 'train'),
                     {'0': 2, '1': 1, '2': 2})
    np.testing.assert_array_equal(
        client_store.read_client_rows(path, '2', 'train'),
        [[2, 1, 2.0], [2, 2, 3.0]])
    np.testing.assert_array_equal(
        client_store.read_client_rows(path, '2', 'test'), [[2, 0, 5.0]])

  def test_cached_by_content_hash(self):
    path = client_store.create_client_store(_holdout_split(), self.cache)
    mtime = os.stat(path).st_mtime_ns
    self.assertEqual(client_store.create_client_store(_holdout_split(),
                                                      self.cache), path)
    self.assertEqual(os.stat(path).st_mtime_ns, mtime)
    other = _holdout_split()
    other.train.ratings[0] = 3.0
    self.assertNotEqual(client_store.create_client_store(other, self.cache),
                        path)
    stores = [path, client_store.create_client_store(other, self.cache)]
    self.assertEqual(sorted(os.listdir(self.cache)), sorted(
        os.path.basename(p) + suffix for p in stores
        for suffix in ('', '.sha256')))

  def test_an_edited_store_is_not_trusted(self):
    split = _holdout_split()
    path = client_store.create_client_store(split, self.cache)
    content_hash = client_store.split_hash(split)
    self.assertIsNone(client_store.check_store(path, content_hash, 8))
    with sqlite3.connect(path) as con:  # One rating changed, same row count.
      con.execute('UPDATE ratings SET rating = 1 WHERE rowid = 1')
    con.close()
    self.assertEqual(client_store.check_store(path, content_hash, 8),
                     'its bytes changed since it was written (SHA-256)')
    messages = []
    self.assertEqual(client_store.create_client_store(split, self.cache,
                                                      log=messages.append),
                     path)
    self.assertEqual(messages, [f'{path}: damaged client store (its bytes '
                                'changed since it was written (SHA-256)); '
                                'rebuilding it.'])
    np.testing.assert_array_equal(
        client_store.read_client_rows(path, '0', 'train')[:, 2], [5, 4])
    self.assertIsNone(client_store.check_store(path, content_hash, 8))
    os.remove(client_store.checksum_path(path))
    self.assertEqual(client_store.check_store(path, content_hash, 8),
                     'no checksum recorded beside it')

  def test_train_dataset_of_a_client(self):
    path = client_store.create_client_store(_holdout_split(), self.cache)
    data = client_store.create_client_data(path, 'train')
    rows = list(data.create_tf_dataset_for_client('0').as_numpy_iterator())
    self.assertEqual([(r['user'], r['item'], r['rating'], r['is_query'])
                      for r in rows], [(0, 0, 5.0, 0), (0, 1, 4.0, 0)])

  def test_train_dataset_with_heldout_flags_the_val_and_test_rows(self):
    path = client_store.create_client_store(_holdout_split(), self.cache)
    data = client_store.create_client_data(path, 'train', with_heldout=True)
    rows = list(data.create_tf_dataset_for_client('0').as_numpy_iterator())
    self.assertEqual([(r['item'], r['rating'], r['is_query']) for r in rows],
                     [(0, 5.0, 0), (1, 4.0, 0), (2, 3.0, 1)])  # val: item 2.
    rows = list(data.create_tf_dataset_for_client('2').as_numpy_iterator())
    self.assertEqual([(r['item'], r['is_query']) for r in rows],
                     [(1, 0), (2, 0), (0, 1)])  # test: item 0.
    self.assertEqual(data.client_ids, ['0', '1', '2'])

  def test_eval_dataset_has_support_then_query(self):
    path = client_store.create_client_store(_holdout_split(), self.cache)
    data = client_store.create_client_data(path, 'test')
    rows = list(data.create_tf_dataset_for_client('2').as_numpy_iterator())
    self.assertEqual([(r['item'], r['rating'], r['is_query']) for r in rows],
                     [(1, 2.0, 0), (2, 3.0, 0), (0, 5.0, 1)])

  def test_unseen_user_support_comes_from_its_own_split(self):
    path = client_store.create_client_store(_disjoint_split(), self.cache)
    self.assertEqual(client_store.get_client_ids(path, 'test'), ['1'])
    self.assertEqual(client_store.get_client_ids(path, 'train'), ['0'])
    data = client_store.create_client_data(path, 'test')
    rows = list(data.create_tf_dataset_for_client('1').as_numpy_iterator())
    self.assertEqual(sorted((r['item'], r['is_query']) for r in rows),
                     [(0, 0), (1, 1), (2, 0)])

  def test_dataset_computation_builds_datasets_from_ids_in_the_runtime(self):
    path = client_store.create_client_store(_holdout_split(), self.cache)
    data = client_store.create_client_data(path, 'train')
    computation = data.dataset_computation
    self.assertEqual(str(computation.type_signature.parameter), 'str')

    @tff.federated_computation(tff.FederatedType(tff.SequenceType(
        computation.type_signature.result.element), tff.CLIENTS))
    def count(datasets):
      return tff.federated_sum(tff.federated_map(
          tff.tensorflow.computation(
              lambda ds: ds.reduce(np.int32(0), lambda n, _: n + 1)),
          datasets))

    composed = tff.simulation.compose_dataset_computation_with_computation(
        computation, count)
    self.assertEqual(composed(['0', '2']), 4)


if __name__ == '__main__':
  absltest.main()
