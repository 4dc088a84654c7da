"""Tests of the ranking evaluation, including the leakage sanity checks."""

import math

from absl.testing import absltest
import numpy as np

from research.fedrec.evaluation import ranking

FULL, SAMPLED = ranking.Protocol.FULL, ranking.Protocol.SAMPLED


def _task(known, relevant, num_items, extra_interacted=None):
  """A task from per-user item lists (user ids 0..U-1)."""
  def flat(lists):
    users = np.concatenate([[u] * len(x) for u, x in enumerate(lists)])
    items = np.concatenate([list(x) for x in lists])
    return users.astype(np.int64), items.astype(np.int64)
  ku, ki = flat(known)
  ru, ri = flat(relevant)
  au, ai = flat([list(k) + list(r) + list((extra_interacted or {}).get(u, []))
                 for u, (k, r) in enumerate(zip(known, relevant))])
  return ranking.build_task(ku, ki, ru, ri, au, ai, ki, num_items)


def _loo_corpus(num_users, num_items, known_per_user, seed=0):
  rng = np.random.default_rng(seed)
  known, relevant = [], []
  for _ in range(num_users):
    items = rng.choice(num_items, known_per_user + 1, replace=False)
    known.append(items[:-1])
    relevant.append(items[-1:])
  return _task(known, relevant, num_items)


class MetricsTest(absltest.TestCase):

  def test_hand_computed_full_ranking(self):
    # 1 user, 6 items; item 0 known (masked), items 2 and 4 relevant.
    task = _task([[0]], [[2, 4]], 6)
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0]], np.float32)
    config = ranking.RankingConfig(ks=(1, 2, 3), protocols=(FULL,))
    result = ranking.evaluate(task, lambda rows: scores[rows], config)
    m = result.overall
    # Candidates in order: 1, 2, 3, 4, 5 -> relevant at positions 1 and 3.
    self.assertEqual(m['full/hr@1'], 0.0)
    self.assertEqual(m['full/hr@2'], 1.0)
    self.assertEqual(m['full/recall@3'], 0.5)
    self.assertAlmostEqual(m['full/precision@3'], 1 / 3)
    self.assertAlmostEqual(m['full/ndcg@2'],
                           (1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    self.assertAlmostEqual(m['full/ndcg@3'],
                           (1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    self.assertEqual(m['full/mrr@3'], 0.5)
    self.assertEqual(m['full/mrr@1'], 0.0)
    self.assertAlmostEqual(m['full/map@3'], (1 / 2) / 2)
    # Top-3 lists: one user recommended items 1, 2, 3 of 6.
    self.assertAlmostEqual(m['full/coverage@3'], 3 / 6)
    # Top-1: item 1 for the only user, no other item: Gini (2*6-6-1)/6.
    self.assertAlmostEqual(m['full/gini@1'], 5 / 6)
    self.assertAlmostEqual(m['full/avg_popularity@3'], 0.0)  # Never trained.

  def test_hand_computed_item_slices(self):
    # 7 items, 4 and 5 cold (no training interactions). User 0 knows item
    # 0 and holds out warm item 2 and cold item 4; user 1 knows item 1 and
    # holds out warm item 3. Scores fall with the item id.
    task = _task([[0], [1]], [[2, 4], [3]], 7)
    task = ranking.RankingTask(task.users, task.known, task.relevant,
                               task.interacted, task.popularity,
                               np.array([4, 5]))
    scores = np.tile(np.arange(9.0, 2.0, -1.0, dtype=np.float32), (2, 1))
    config = ranking.RankingConfig(ks=(1, 2, 3), protocols=(FULL,))
    result = ranking.evaluate(task, lambda rows: scores[rows], config)
    m = result.overall
    # Overall: user 0's candidates 1..6 put 2 at position 1 and 4 at 3; user
    # 1's (0, 2, 3, ...) put 3 at position 2.
    self.assertEqual(m['full/mrr@3'], (1 / 2 + 1 / 3) / 2)
    # Warm: user 0 ranks item 2 among 1, 2, 3, 5, 6 (its cold item left
    # out): position 1; user 1 as overall: position 2.
    self.assertEqual(m['warm_items/full/hr@1'], 0.0)
    self.assertEqual(m['warm_items/full/hr@2'], 0.5)
    self.assertEqual(m['warm_items/full/mrr@3'], (1 / 2 + 1 / 3) / 2)
    self.assertAlmostEqual(m['warm_items/full/ndcg@3'],
                           (1 / math.log2(3) + 1 / math.log2(4)) / 2)
    # Cold: only user 0, item 4 among 1, 3, 4, 5, 6 (warm item 2 left out):
    # position 2, not 3.
    self.assertEqual(m['cold_items/full/hr@2'], 0.0)
    self.assertEqual(m['cold_items/full/hr@3'], 1.0)
    self.assertEqual(m['cold_items/full/mrr@3'], 1 / 3)
    self.assertEqual(m['cold_items/full/ndcg@3'], 1 / math.log2(4))
    self.assertEqual(m['cold_items/full/recall@3'], 1.0)
    self.assertTrue(np.isnan(
        result.item_per_user['cold_items']['full/hr@3'][1]))
    # Among the cold items alone: user 0 ranks item 4 against 4 and 5:
    # first (user 1 holds out no cold item and is left out).
    self.assertEqual(m['cold_items/cold_only/hr@1'], 1.0)
    self.assertEqual(m['cold_items/cold_only/ndcg@1'], 1.0)
    self.assertEqual(m['cold_items/cold_only/mrr@3'], 1.0)
    # Reversed scores: item 4 scores below item 5, so second.
    reverse = ranking.evaluate(task, lambda rows: scores[rows][:, ::-1].copy(),
                               config).overall
    self.assertEqual(reverse['cold_items/cold_only/hr@1'], 0.0)
    self.assertEqual(reverse['cold_items/cold_only/mrr@3'], 1 / 2)
    self.assertEqual(reverse['cold_items/cold_only/ndcg@2'],
                     1 / math.log2(3))
    rows = {(r['slice_kind'], r['slice']): r for r in result.sliced((5,))}
    self.assertEqual(rows['item', 'warm']['users'], 2)
    self.assertEqual(rows['item', 'cold']['users'], 1)
    self.assertEqual(rows['item', 'cold']['full/mrr@3'], 1 / 3)
    self.assertEqual(rows['all', 'all']['full/mrr@3'], m['full/mrr@3'])
    # Without cold items there are no item slices.
    plain = ranking.evaluate(_task([[0], [1]], [[2, 4], [3]], 7),
                             lambda rows: scores[rows], config)
    self.assertFalse([k for k in plain.overall if 'items/' in k])
    self.assertEqual(plain.overall['full/mrr@3'], m['full/mrr@3'])

  def test_sampled_item_slices_share_the_negatives(self):
    # Each user's warm item scores highest, its cold item next, everything
    # else lower: within the cold slice the cold item is first (the warm
    # one left out), overall the warm one is.
    rng = np.random.default_rng(5)
    known, relevant = [], []
    for _ in range(40):
      items = rng.choice(np.arange(100), 11, replace=False)
      known.append(items[:9])
      relevant.append([items[9], 100 + rng.integers(20)])  # Cold: 100-119.
    task = _task(known, relevant, 120)
    task = ranking.RankingTask(task.users, task.known, task.relevant,
                               task.interacted, task.popularity,
                               np.arange(100, 120))

    def score(rows):
      out = rng.random((len(rows), 120)).astype(np.float32)
      relevant_rows = task.relevant[rows].toarray()
      out[relevant_rows & (np.arange(120) < 100)] = 3.0
      out[relevant_rows & (np.arange(120) >= 100)] = 2.0
      return out

    config = ranking.RankingConfig(ks=(1,), protocols=(SAMPLED,),
                                   eval_negatives=50)
    m = ranking.evaluate(task, score, config).overall
    self.assertEqual(m['sampled/hr@1'], 1.0)
    self.assertEqual(m['sampled/recall@1'], 0.5)
    self.assertEqual(m['warm_items/sampled/hr@1'], 1.0)
    self.assertEqual(m['cold_items/sampled/hr@1'], 1.0)

  def test_gini_of_equal_and_concentrated_counts(self):
    self.assertEqual(ranking._gini(np.array([3, 3, 3, 3])), 0.0)
    self.assertAlmostEqual(ranking._gini(np.array([0, 0, 0, 8])), 3 / 4)

  def test_cut_off_beyond_the_items(self):
    # 1 user, 4 items; item 0 known: 3 candidates in order 3, 1, 2; item 2
    # relevant at position 2. Lists of 10 hold the 3 candidates.
    task = _task([[0]], [[2]], 4)
    scores = np.array([[9.0, 5.0, 1.0, 7.0]], np.float32)
    config = ranking.RankingConfig(ks=(2, 10), protocols=(FULL,))
    m = ranking.evaluate(task, lambda rows: scores[rows], config).overall
    self.assertEqual(m['full/hr@2'], 0.0)
    self.assertEqual(m['full/hr@10'], 1.0)
    self.assertAlmostEqual(m['full/ndcg@10'], 1 / math.log2(4))
    self.assertAlmostEqual(m['full/precision@10'], 1 / 10)
    self.assertEqual(m['full/coverage@10'], 3 / 4)

  def test_counted_positions_equal_a_sort_of_every_row(self):
    # Positions are counted for the few relevant items of a row and read
    # off a stable sort of the row when many are; both are the same order
    # (score, then tie key, then item id), here with many equal scores,
    # equal keys, rows with fewer candidates than the cut-off, and cold
    # items.
    rng = np.random.default_rng(3)
    num_items = 60
    cold = np.arange(50, num_items)
    known, relevant = [], []
    for _ in range(80):
      items = rng.choice(50, rng.integers(1, 50), replace=False)
      known.append(items[:-1])
      rest = np.setdiff1d(np.arange(num_items), items[:-1])
      relevant.append(rng.choice(rest, rng.integers(1, 8), replace=False))
    task = _task(known, relevant, num_items)
    task = ranking.RankingTask(task.users, task.known, task.relevant,
                               task.interacted, task.popularity, cold)
    scores = np.round(rng.normal(size=(80, num_items)) * 2).astype(
        np.float32)
    scores[:4] = 1.0  # Constant rows: the tie keys decide.
    config = ranking.RankingConfig(ks=(1, 5, 30), eval_negatives=5, seed=4,
                                   users_per_batch=32)
    counted = ranking.evaluate(task, lambda rows: scores[rows], config)
    limit = ranking._COUNTING_LIMIT
    ranking._COUNTING_LIMIT = 0
    try:
      sorted_ = ranking.evaluate(task, lambda rows: scores[rows], config)
    finally:
      ranking._COUNTING_LIMIT = limit
    self.assertEqual(counted.overall, sorted_.overall)
    self.assertIn('cold_items/cold_only/hr@5', counted.overall)
    for name, values in counted.per_user.items():
      np.testing.assert_array_equal(values, sorted_.per_user[name], name)

  def test_a_task_evaluated_again_gives_a_fresh_tasks_metrics(self):
    # The second and later evaluations of a task reuse its batches'
    # candidates and tie keys; another seed or protocol set must not.
    task = _loo_corpus(50, 80, 10)
    rng = np.random.default_rng(0)
    configs = [ranking.RankingConfig(ks=(5,), eval_negatives=20, seed=s,
                                     users_per_batch=16) for s in (1, 2)]
    configs.append(ranking.RankingConfig(ks=(5,), protocols=(SAMPLED,),
                                         eval_negatives=30, seed=1,
                                         users_per_batch=16))
    for _ in range(2):
      for config in configs:
        scores = rng.normal(size=(50, 80)).astype(np.float32)
        fresh = _loo_corpus(50, 80, 10)
        self.assertEqual(
            ranking.evaluate(task, lambda rows: scores[rows], config).overall,
            ranking.evaluate(fresh, lambda rows: scores[rows],
                             config).overall)

  def test_map_with_two_hits(self):
    ranks = np.array([[0.0, 2.0]])
    metrics = ranking._user_metrics(ranks, np.array([2]), (3,))
    self.assertAlmostEqual(metrics['map@3'][0], (1 / 1 + 2 / 3) / 2)


class LeakageSanityTest(absltest.TestCase):
  """A model that knows the answer wins; chance and ties stay at chance."""

  def test_oracle_scores_hr_at_1(self):
    task = _loo_corpus(300, 400, 20)
    oracle = lambda rows: task.relevant[rows].toarray().astype(np.float32)
    result = ranking.evaluate(task, oracle, ranking.RankingConfig(ks=(1, 10)))
    for protocol in ('full', 'sampled'):
      self.assertEqual(result.overall[f'{protocol}/hr@1'], 1.0)
      self.assertEqual(result.overall[f'{protocol}/ndcg@10'], 1.0)

  def test_random_and_constant_models_are_at_chance_on_sampled_99(self):
    # 1 relevant item among 100 candidates: HR@10 = 10/100. With 4,000 users
    # the standard error is 0.0047; the tolerance is 4 of them.
    task = _loo_corpus(4000, 500, 10)
    rng = np.random.default_rng(1)
    random_model = lambda rows: rng.random((len(rows), 500)).astype(np.float32)
    # All-equal scores: only the random tie-break orders the candidates, so a
    # fixed position of the positive would show up here.
    constant_model = lambda rows: np.zeros((len(rows), 500), np.float32)
    config = ranking.RankingConfig(ks=(10,), protocols=(SAMPLED,))
    for model in (random_model, constant_model):
      hr = ranking.evaluate(task, model, config).overall['sampled/hr@10']
      self.assertAlmostEqual(hr, 0.1, delta=0.019)

  def test_sampled_negatives_are_fresh_distinct_and_fixed(self):
    task = _loo_corpus(50, 200, 60)
    rows = np.arange(50)
    negatives = ranking.sampled_negatives(task, rows, 99, seed=3)
    interacted = task.interacted.toarray()
    for r in rows:
      self.assertLen(set(negatives[r]), 99)  # Without replacement.
      self.assertFalse(interacted[r, negatives[r]].any())
    # The same per user whatever the batch of users it is drawn with.
    np.testing.assert_array_equal(
        ranking.sampled_negatives(task, rows[10:20], 99, seed=3),
        negatives[10:20])
    self.assertFalse(np.array_equal(
        ranking.sampled_negatives(task, rows, 99, seed=4), negatives))

  def test_masked_training_items_are_never_recommended(self):
    task = _loo_corpus(30, 60, 20)
    # A model that scores the known items highest of all.
    cheat = lambda rows: task.known[rows].toarray().astype(np.float32) * 10
    result = ranking.evaluate(task, cheat, ranking.RankingConfig(
        ks=(5,), protocols=(FULL,)))
    self.assertGreater(result.overall['full/coverage@5'], 0.0)
    _, top = ranking._ranks(
        cheat(np.arange(30)), ~task.known.toarray(),
        ranking.hash_keys(0, 2, task.users, 60), 5,
        task.relevant.toarray())
    self.assertFalse(task.known.toarray()[np.arange(30)[:, None], top].any())

  def test_too_few_negatives_is_one_clear_error(self):
    task = _loo_corpus(3, 30, 25)
    with self.assertRaisesRegex(ValueError, r'--eval_negatives=99: user \d+ '
                                r'has only 4 items never interacted with'):
      ranking.evaluate(task, lambda rows: np.zeros((len(rows), 30)),
                       ranking.RankingConfig())


class PopularityTest(absltest.TestCase):
  """Popularity's metrics equal a direct per-user NumPy computation."""

  def test_matches_direct_computation(self):
    rng = np.random.default_rng(5)
    num_users, num_items = 40, 120
    known, relevant = [], []
    for _ in range(num_users):
      items = rng.choice(num_items, 15, replace=False,
                         p=np.arange(num_items, 0, -1) / (num_items *
                                                          (num_items + 1) / 2))
      known.append(items[:12])
      relevant.append(items[12:])  # 3 relevant items per user (holdout).
    task = _task(known, relevant, num_items)
    counts = task.popularity
    config = ranking.RankingConfig(ks=(5, 10), eval_negatives=50, seed=2)
    result = ranking.evaluate(task, lambda rows: np.tile(counts, (len(rows),
                                                                  1)), config)
    ties = ranking.hash_keys(2, 2, task.users, num_items) >> np.uint64(32)
    negatives = ranking.sampled_negatives(task, np.arange(num_users), 50, 2)
    for protocol in ('full', 'sampled'):
      for k in (5, 10):
        expected = {m: [] for m in ranking.USER_METRICS}
        recommended = np.zeros(num_items)
        for u in range(num_users):
          if protocol == 'full':
            candidates = [i for i in range(num_items) if i not in known[u]]
          else:
            candidates = list(relevant[u]) + list(negatives[u])
          # Higher count first; equal counts by the larger tie key.
          order = sorted(candidates,
                         key=lambda i: (-counts[i], -int(ties[u, i])))
          top = order[:k]
          recommended[top] += 1
          hits = [p for p, i in enumerate(order) if i in relevant[u]]
          in_top = [p for p in hits if p < k]
          n = len(relevant[u])
          expected['hr'].append(float(bool(in_top)))
          expected['recall'].append(len(in_top) / n)
          expected['precision'].append(len(in_top) / k)
          expected['ndcg'].append(
              sum(1 / math.log2(p + 2) for p in in_top) /
              sum(1 / math.log2(p + 2) for p in range(min(n, k))))
          expected['mrr'].append(1 / (hits[0] + 1) if hits[0] < k else 0.0)
          expected['map'].append(
              sum((j + 1) / (p + 1) for j, p in enumerate(in_top)) / min(n, k))
        for metric, values in expected.items():
          self.assertAlmostEqual(result.overall[f'{protocol}/{metric}@{k}'],
                                 float(np.mean(values)), places=12,
                                 msg=f'{protocol}/{metric}@{k}')
        self.assertAlmostEqual(result.overall[f'{protocol}/coverage@{k}'],
                               (recommended > 0).mean())

  def test_slices_recombine_to_overall(self):
    task = _loo_corpus(100, 200, 30)
    task = ranking.RankingTask(task.users, task.known, task.relevant,
                               task.interacted, task.popularity)
    result = ranking.evaluate(
        task, lambda rows: np.tile(task.popularity, (len(rows), 1)),
        ranking.RankingConfig(ks=(10,)))
    rows = result.sliced(edges=(25, 50))
    self.assertEqual([r['slice'] for r in rows], ['all', '<25', '25-49',
                                                  '>=50'])
    self.assertEqual(rows[0]['full/ndcg@10'], result.overall['full/ndcg@10'])
    self.assertEqual(rows[2]['users'], 100)  # Everyone has 30 known items.


if __name__ == '__main__':
  absltest.main()
