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
      (splits.SplitKind.LEAVE_ONE_OUT, splits.SplitOrder.RANDOM),
      (splits.SplitKind.ITEM_COLD_START, splits.SplitOrder.RANDOM))
  def test_parts_partition_the_corpus_without_leakage(self, kind, order):
    table = _corpus()
    result = splits.split(table, splits.SplitConfig(kind=kind, order=order))
    parts = [result.train, result.val.query, result.test.query]
    if kind == splits.SplitKind.USER_DISJOINT:
      parts += [result.val.support, result.test.support]
    if kind == splits.SplitKind.ITEM_COLD_START:
      # Every user keeps training ratings here, so no cold rating is lost.
      self.assertEqual(np.unique(result.train.users).size, 50)
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

  def test_item_cold_start_holds_out_whole_items(self):
    table = _corpus()
    config = splits.SplitConfig(kind=splits.SplitKind.ITEM_COLD_START,
                                val_fraction=0.1, test_fraction=0.3,
                                cold_item_fraction=0.25, seed=3)
    result = splits.split(table, config)
    cold = result.test.cold_items
    # 25% of the 80 items; a quarter of them (0.1 : 0.3) for validation.
    self.assertLen(cold, 20)
    np.testing.assert_array_equal(result.val.cold_items, cold)
    self.assertEmpty(np.intersect1d(result.train.items, cold))
    val_cold = np.intersect1d(result.val.query.items, cold)
    test_cold = np.intersect1d(result.test.query.items, cold)
    self.assertEmpty(np.intersect1d(val_cold, test_cold))
    self.assertLen(val_cold, 5)
    self.assertLen(test_cold, 15)
    # Every rating of a test-cold item is a test rating.
    for item in test_cold:
      self.assertEqual(_pairs(table.take(table.items == item)),
                       _pairs(result.test.query.take(
                           result.test.query.items == item)))
    # The warm ratings are a holdout split of the warm items' ratings.
    warm = table.take(~np.isin(table.items, cold))
    warm_test = result.test.query.take(
        ~np.isin(result.test.query.items, cold))
    counts = np.bincount(warm.users, minlength=50)
    np.testing.assert_array_equal(
        np.bincount(warm_test.users, minlength=50), np.round(counts * 0.3))
    # Seeded.
    again = splits.split(table, config)
    self.assertEqual(again.test.query.content_hash(),
                     result.test.query.content_hash())
    np.testing.assert_array_equal(again.test.cold_items, cold)
    # The other protocols have no cold items.
    self.assertEmpty(splits.split(table, splits.SplitConfig()).test.cold_items)

  def test_item_cold_start_scores_only_users_it_knows(self):
    # User 1 rated only item 2; if item 2 is cold, user 1 has no training
    # ratings and is left out of the scored ones.
    tiny = ratings.Ratings(np.array([0, 0, 0, 0, 1]),
                           np.array([0, 1, 2, 3, 2]),
                           np.ones(5, np.float32), np.arange(5))
    for seed in range(20):
      result = splits.split(tiny, splits.SplitConfig(
          kind=splits.SplitKind.ITEM_COLD_START, cold_item_fraction=0.25,
          seed=seed))
      if result.test.cold_items.tolist() == [2]:
        break
    self.assertEqual(result.test.cold_items.tolist(), [2])
    self.assertEqual(_pairs(result.test.query.take(
        result.test.query.items == 2)), {(0, 2)})
    with self.assertRaisesRegex(ratings.DataError,
                                r'^--cold_item_fraction=0.1 of 4 items leaves '
                                'no cold or no warm items'):
      splits.split(tiny, splits.SplitConfig(
          kind=splits.SplitKind.ITEM_COLD_START, cold_item_fraction=0.1))

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
    with self.assertRaisesRegex(ValueError, '--cold_item_fraction must be in'):
      splits.SplitConfig(cold_item_fraction=1.0)
    tiny = ratings.Ratings(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
                           np.ones(4, np.float32), np.arange(4))
    with self.assertRaisesRegex(ratings.DataError, 'at least 3 ratings'):
      splits.split(tiny, splits.SplitConfig(
          kind=splits.SplitKind.LEAVE_ONE_OUT))


if __name__ == '__main__':
  absltest.main()
