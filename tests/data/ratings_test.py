"""Tests of the ratings table: validation, duplicates, filtering, remapping."""

from absl.testing import absltest
import numpy as np

from research.fedrec.data import ratings


def _table(users, items, values, stamps=None):
  n = len(users)
  return ratings.Ratings(np.array(users), np.array(items),
                         np.array(values, np.float32),
                         np.array(stamps if stamps else range(n), np.int64))


class ValidateTest(absltest.TestCase):

  def test_accepts_a_clean_table_unchanged(self):
    table = _table([1, 1, 2], [10, 11, 10], [1, 5, 3])
    self.assertIs(ratings.validate(table, ratings.STARS_1_TO_5, 'f'), table)

  def test_empty_table_names_the_file(self):
    with self.assertRaisesRegex(ratings.DataError, r'^f\.csv: no ratings'):
      ratings.validate(_table([], [], []), ratings.STARS_1_TO_5, 'f.csv')

  def test_out_of_range_rating_names_file_and_line(self):
    table = _table([1, 1, 2], [10, 11, 10], [1, 6, 3])
    with self.assertRaisesRegex(ratings.DataError,
                                r'^u\.data:2: rating 6 is outside the scale '
                                r'1 to 5 in steps of 1 \(1 such rows\)'):
      ratings.validate(table, ratings.STARS_1_TO_5, 'u.data')

  def test_off_grid_rating_with_header_offset(self):
    table = _table([1, 1], [10, 11], [3.5, 3.25])
    with self.assertRaisesRegex(ratings.DataError, r'^r\.csv:3: rating 3\.25'):
      ratings.validate(table, ratings.HALF_STARS, 'r.csv', line_offset=2)

  def test_duplicates_keep_latest(self):
    table = _table([1, 1, 2, 1], [10, 11, 10, 10], [1, 2, 3, 4],
                   [100, 50, 60, 200])
    kept = ratings.validate(table, ratings.STARS_1_TO_5, 'f')
    np.testing.assert_array_equal(kept.ratings, [2, 3, 4])
    np.testing.assert_array_equal(kept.timestamps, [50, 60, 200])

  def test_duplicates_on_equal_time_keep_later_line(self):
    table = _table([1, 1], [10, 10], [1, 4], [7, 7])
    kept = ratings.validate(table, ratings.STARS_1_TO_5, 'f')
    np.testing.assert_array_equal(kept.ratings, [4])

  def test_duplicates_error_policy_names_the_repeat(self):
    table = _table([1, 2, 1], [10, 10, 10], [1, 2, 3])
    with self.assertRaisesRegex(
        ratings.DataError,
        r'^f:3: duplicate rating of item 10 by user 1 \(1 duplicates'):
      ratings.validate(table, ratings.STARS_1_TO_5, 'f',
                       ratings.DuplicatePolicy.ERROR)


class FilterAndRemapTest(absltest.TestCase):

  def test_filter_min_ratings(self):
    table = _table([5, 5, 5, 7, 7, 9], [1, 2, 3, 1, 2, 1], [1] * 6)
    kept = ratings.filter_min_ratings(table, 2)
    np.testing.assert_array_equal(kept.users, [5, 5, 5, 7, 7])

  def test_remap_is_dense_and_ordered_by_raw_id(self):
    table = _table([30, 10, 30, 20], [7, 3, 3, 9], [1, 2, 3, 4])
    dense, maps = ratings.remap_ids(table)
    np.testing.assert_array_equal(dense.users, [2, 0, 2, 1])
    np.testing.assert_array_equal(dense.items, [1, 0, 0, 2])
    np.testing.assert_array_equal(maps.raw_users[dense.users], table.users)
    np.testing.assert_array_equal(maps.raw_items[dense.items], table.items)
    self.assertEqual((maps.num_users, maps.num_items), (3, 3))

  def test_remap_max_users_keeps_smallest_ids(self):
    table = _table([30, 10, 30, 20], [7, 3, 3, 9], [1, 2, 3, 4])
    dense, maps = ratings.remap_ids(table, max_users=2)
    np.testing.assert_array_equal(maps.raw_users, [10, 20])
    np.testing.assert_array_equal(maps.raw_items, [3, 9])
    self.assertLen(dense, 2)

  def test_content_hash_changes_with_any_value(self):
    a = _table([1, 2], [1, 1], [3, 4])
    b = _table([1, 2], [1, 1], [3, 5])
    self.assertEqual(a.content_hash(), _table([1, 2], [1, 1], [3, 4])
                     .content_hash())
    self.assertNotEqual(a.content_hash(), b.content_hash())


if __name__ == '__main__':
  absltest.main()
