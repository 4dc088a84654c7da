"""Tests of the split protocols: disjointness, no leakage, determinism."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from research.fedrec.data import ratings
from research.fedrec.data import splits
from research.fedrec.data import synthetic


def _corpus(seed=0):
  table = synthetic.generate(synthetic.SyntheticConfig(
      num_users=50, num_items=80, num_ratings=2000, min_ratings_per_user=20,
      seed=seed)).ratings
  return ratings.remap_ids(table)[0]


def _pairs(table):
  return set(zip(table.users.tolist(), table.items.tolist()))


class SplitTest(parameterized.TestCase):

  @parameterized.parameters(
      (splits.SplitKind.HOLDOUT, splits.SplitOrder.RANDOM),
      (splits.SplitKind.HOLDOUT, splits.SplitOrder.TEMPORAL),
      (splits.SplitKind.USER_DISJOINT, splits.SplitOrder.RANDOM),
      (splits.SplitKind.LEAVE_ONE_OUT, splits.SplitOrder.RANDOM))
  def test_parts_partition_the_corpus_without_leakage(self, kind, order):
    table = _corpus()
    result = splits.split(table, splits.SplitConfig(kind=kind, order=order))
    parts = [result.train, result.val.query, result.test.query]
    if kind == splits.SplitKind.USER_DISJOINT:
      parts += [result.val.support, result.test.support]
    self.assertEqual(sum(len(p) for p in parts), len(table))
    union = set()
    for part in parts:
      self.assertEmpty(union & _pairs(part))
      union |= _pairs(part)
    self.assertEqual(union, _pairs(table))
    # No scored rating is ever trained or reconstructed on.
    for partition in (result.val, result.test):
      self.assertEmpty(_pairs(partition.query) & _pairs(result.train))
      self.assertEmpty(_pairs(partition.query) & _pairs(partition.support))

  def test_holdout_fractions_per_user(self):
    table = _corpus()
    result = splits.split(table, splits.SplitConfig(val_fraction=0.1,
                                                     test_fraction=0.2))
    counts = np.bincount(table.users)
    np.testing.assert_array_equal(np.bincount(result.test.query.users,
                                              minlength=counts.size),
                                  np.round(counts * 0.2))
    self.assertIs(result.test.support, result.train)

  def test_temporal_holdout_holds_out_the_latest(self):
    table = _corpus()
    result = splits.split(table, splits.SplitConfig(
        order=splits.SplitOrder.TEMPORAL))
    for user in range(5):
      latest_train = result.train.timestamps[result.train.users == user].max()
      earliest_test = result.test.query.timestamps[
          result.test.query.users == user].min()
      self.assertLess(latest_train, earliest_test)

  def test_user_disjoint_users_never_train(self):
    table = _corpus()
    result = splits.split(table, splits.SplitConfig(
        kind=splits.SplitKind.USER_DISJOINT, val_fraction=0.2,
        test_fraction=0.2, support_fraction=0.5))
    train_users = set(result.train.users.tolist())
    for partition in (result.val, result.test):
      self.assertEmpty(train_users & set(partition.users.tolist()))
      self.assertEqual(set(partition.support.users.tolist()),
                       set(partition.query.users.tolist()))
    self.assertLen(result.test.users, 10)
    self.assertLen(train_users, 30)

  def test_leave_one_out_takes_latest_then_second_latest(self):
    table = _corpus()
    result = splits.split(table, splits.SplitConfig(
        kind=splits.SplitKind.LEAVE_ONE_OUT))
    for user in range(50):
      stamps = np.sort(table.timestamps[table.users == user])
      test = result.test.query.timestamps[result.test.query.users == user]
      val = result.val.query.timestamps[result.val.query.users == user]
      np.testing.assert_array_equal(test, stamps[-1:])
      np.testing.assert_array_equal(val, stamps[-2:-1])

  def test_same_seed_same_split_other_seed_other_split(self):
    table = _corpus()
    a = splits.split(table, splits.SplitConfig(seed=4))
    b = splits.split(table, splits.SplitConfig(seed=4))
    c = splits.split(table, splits.SplitConfig(seed=5))
    self.assertEqual(a.test.query.content_hash(), b.test.query.content_hash())
    self.assertNotEqual(a.test.query.content_hash(),
                        c.test.query.content_hash())

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, 'val_fraction \\+ --test_fraction'):
      splits.SplitConfig(val_fraction=0.5, test_fraction=0.5)
    with self.assertRaisesRegex(ValueError, '--test_fraction must be > 0'):
      splits.SplitConfig(test_fraction=0.0)
    tiny = ratings.Ratings(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
                           np.ones(4, np.float32), np.arange(4))
    with self.assertRaisesRegex(ratings.DataError, 'at least 3 ratings'):
      splits.split(tiny, splits.SplitConfig(
          kind=splits.SplitKind.LEAVE_ONE_OUT))


if __name__ == '__main__':
  absltest.main()
