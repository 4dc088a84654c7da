"""Tests of per-user and sliced rating metrics."""

import numpy as np
from absl.testing import absltest

from research.fedrec.evaluation import slices


class SlicesTest(absltest.TestCase):

  def test_bucket_names(self):
    self.assertEqual(slices.bucket_names((20, 50, 200)),
                     ['<20', '20-49', '50-199', '>=200'])
    self.assertEqual(slices.bucket_names(()), ['all'])
    for bad in ((0, 5), (5, 5), (50, 20)):
      with self.assertRaisesRegex(ValueError, 'strictly increasing'):
        slices.validate_edges(bad)

  def test_report_by_hand(self):
    users = np.array([2, 5, 9])
    activity = np.array([3, 10, 50])  # Buckets <10, 10-49, >=50.
    seen = np.array([True, False, True])
    query_users = np.array([5, 2, 9, 2, 5])
    ratings = np.array([4, 3, 5, 1, 2], np.float32)
    predictions = np.array([3, 3, 4, 2, 2], np.float32)  # Errors 1,0,1,1,0.
    result = slices.report(users, activity, seen, query_users, ratings,
                           predictions, edges=(10, 50))
    rows = {(r['slice_kind'], r['slice']): r for r in result.slices}
    self.assertEqual(list(rows), [('all', 'all'), ('activity', '<10'),
                                  ('activity', '10-49'),
                                  ('activity', '>=50'),
                                  ('participation', 'seen'),
                                  ('participation', 'unseen')])
    self.assertAlmostEqual(rows['all', 'all']['mse'], 3 / 5)
    self.assertEqual(result.overall['ratings'], 5)
    self.assertEqual(result.overall['users'], 3)
    self.assertAlmostEqual(rows['activity', '<10']['mse'], 1 / 2)  # user 2
    self.assertAlmostEqual(rows['activity', '10-49']['mae'], 1 / 2)  # user 5
    self.assertAlmostEqual(rows['activity', '>=50']['rmse'], 1.0)  # user 9
    self.assertEqual(rows['participation', 'seen']['ratings'], 3)
    self.assertAlmostEqual(rows['participation', 'seen']['rating_accuracy'],
                           1 / 3)
    self.assertEqual(rows['participation', 'unseen']['users'], 1)
    self.assertEqual([u['user'] for u in result.users], [2, 5, 9])
    self.assertEqual([u['ratings'] for u in result.users], [2, 2, 1])
    self.assertEqual([u['bucket'] for u in result.users],
                     ['<10', '10-49', '>=50'])
    self.assertAlmostEqual(result.users[1]['mse'], 0.5)
    # With cold items (item_cold_start): item 8 is cold, rated by users 2, 9.
    query_items = np.array([1, 8, 8, 3, 4])  # Errors 1 | 0, 1 | 1, 0.
    result = slices.report(users, activity, seen, query_users, ratings,
                           predictions, (10, 50), query_items, [8])
    rows = {(r['slice_kind'], r['slice']): r for r in result.slices}
    self.assertEqual(list(rows)[-2:], [('item', 'warm'), ('item', 'cold')])
    self.assertEqual((rows['item', 'cold']['users'],
                      rows['item', 'cold']['ratings']), (2, 2))
    self.assertAlmostEqual(rows['item', 'cold']['mse'], 1 / 2)
    self.assertEqual((rows['item', 'warm']['users'],
                      rows['item', 'warm']['ratings']), (2, 3))
    self.assertAlmostEqual(rows['item', 'warm']['mse'], 2 / 3)
    # Cross-silo: users 2 and 9 in silo 1, user 5 in silo 0 (errors of user
    # 5: 1, 0; of users 2 and 9: 0, 1, 1).
    result = slices.report(users, activity, seen, query_users, ratings,
                           predictions, (10, 50), silos=np.array([1, 0, 1]))
    rows = {(r['slice_kind'], r['slice']): r for r in result.slices}
    self.assertEqual(list(rows)[-2:], [('silo', '0'), ('silo', '1')])
    self.assertEqual((rows['silo', '0']['users'], rows['silo', '0']['ratings'],
                      rows['silo', '0']['mse']), (1, 2, 1 / 2))
    self.assertEqual((rows['silo', '1']['users'], rows['silo', '1']['ratings']),
                     (2, 3))
    self.assertAlmostEqual(rows['silo', '1']['mse'], 2 / 3)

  def test_slices_recombine_to_overall(self):
    rng = np.random.default_rng(0)
    users = np.arange(50)
    query_users = rng.integers(0, 50, 400)
    ratings = rng.integers(1, 6, 400).astype(np.float32)
    predictions = rng.normal(3, 1, 400).astype(np.float32)
    result = slices.report(users, rng.integers(1, 300, 50),
                           rng.random(50) < 0.5, query_users, ratings,
                           predictions)
    for kind in ('activity', 'participation'):
      rows = [r for r in result.slices if r['slice_kind'] == kind]
      self.assertEqual(sum(r['ratings'] for r in rows), 400)
      mse = sum(r['mse'] * r['ratings'] for r in rows if r['ratings']) / 400
      self.assertAlmostEqual(mse, result.overall['mse'], places=9)


if __name__ == '__main__':
  absltest.main()
