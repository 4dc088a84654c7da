"""Bandit environment and policies: closed forms, bounds, the user split."""

import dataclasses
import json
import math
import os

from absl.testing import absltest
import numpy as np

from research.fedrec.algorithms import bandit_policies
from research.fedrec.data import bandit_env
from research.fedrec.inference import bandit_serving
from tests.algorithms import testing_data


class PolicyTest(absltest.TestCase):

  def test_linucb_scores_are_the_closed_form(self):
    # Contexts x0 = (0.6, 0), x1 = (0, 0.8); one event: item 0, reward 1.
    # A = I + x0 x0^T = diag(1.36, 1), b = (0.6, 0), theta = (0.6/1.36, 0).
    # Scores: x0: 0.36/1.36 + alpha sqrt(0.36/1.36); x1: alpha 0.8.
    contexts = np.array([[0.6, 0.0], [0.0, 0.8]], np.float32)
    for alpha, want_pick in ((1.0, 1), (0.5, 0)):
      policy = bandit_policies.LinUCB(
          contexts, bandit_policies.PolicySettings(alpha=alpha, ridge=1.0))
      policy.apply(policy.user_statistic(0, 1.0).astype(np.float64))
      np.testing.assert_allclose(policy.state()['a'],
                                 [[1.36, 0.0], [0.0, 1.0]], rtol=1e-6)
      np.testing.assert_allclose(policy.state()['b'], [0.6, 0.0], rtol=1e-6)
      rng = np.random.default_rng(0)
      np.testing.assert_allclose(
          policy.scores(np.array([0, 1]), rng),
          [0.36 / 1.36 + alpha * math.sqrt(0.36 / 1.36), alpha * 0.8],
          rtol=1e-6)
      self.assertEqual(policy.choose(np.array([0, 1]), rng), want_pick)

  def test_hybrid_adds_the_device_residual_and_sends_linucbs_statistic(self):
    # No shared events (theta = 0, A = I). User 7's device saw item 0 with
    # reward 1: G = diag(0.36, 0), b = (0.6, 0), delta = (0.6 / 1.36, 0).
    # Scores, alpha 0.3: x0: 0.6 delta_0 + 0.3 (0.6 + sqrt(0.36 / 1.36));
    # x1: 0.3 (0.8 + 0.8). A new user: 0.3 (0.6 + 0.6) and 0.3 (0.8 + 0.8).
    contexts = np.array([[0.6, 0.0], [0.0, 0.8]], np.float32)
    settings = bandit_policies.PolicySettings(alpha=0.3, ridge=1.0)
    policy = bandit_policies.HybridLinUCB(contexts, settings)
    policy.observe(7, 0, 1.0)
    rng = np.random.default_rng(0)
    items = np.array([0, 1])
    np.testing.assert_allclose(
        policy.scores(items, rng, 7),
        [0.36 / 1.36 + 0.3 * (0.6 + math.sqrt(0.36 / 1.36)), 0.3 * 1.6],
        rtol=1e-6)
    np.testing.assert_allclose(policy.scores(items, rng, 8),
                               [0.3 * 1.2, 0.3 * 1.6], rtol=1e-6)
    self.assertEqual(policy.choose(items, rng, 7), 0)
    self.assertEqual(policy.choose(items, rng, 8), 1)
    # What leaves the device is LinUCB's statistic, whatever the device saw.
    linucb = bandit_policies.LinUCB(contexts, settings)
    np.testing.assert_array_equal(policy.user_statistic(1, 1.0),
                                  linucb.user_statistic(1, 1.0))
    self.assertEqual(linucb.scores(items, rng, 7).tolist(),
                     linucb.scores(items, rng, 8).tolist())

  def test_a_slate_is_the_top_scores_with_seeded_ties(self):
    # LinUCB with alpha 0 after one liked event on item 1, x = (0.6, 0):
    # theta = (0.6 / 1.36, 0), so the scores 0.6 x_0 / 1.36 rank by x_0.
    contexts = np.array([[0.1, 0.0], [0.6, 0.0], [0.3, 0.1], [0.3, 0.1],
                         [0.0, 0.5]])
    policy = bandit_policies.LinUCB(
        contexts, bandit_policies.PolicySettings(alpha=0.0))
    policy.apply(policy.user_statistic(1, 1.0))
    items = np.arange(5)
    self.assertEqual(
        policy.choose_slate(items, np.random.default_rng(0), -1, 1), [1])
    slates = {tuple(policy.choose_slate(items, np.random.default_rng(seed),
                                        -1, 3)) for seed in range(20)}
    # Item 1 first; items 2 and 3 tie (equal contexts), in either order.
    self.assertEqual(slates, {(1, 2, 3), (1, 3, 2)})
    self.assertLen(policy.choose_slate(items, np.random.default_rng(0), -1,
                                       9), 5)
    # One user's slate statistic: the sum over its picks, within the
    # slate's sensitivity (reached by twice the same unit context).
    unit = bandit_policies.LinUCB(np.array([[0.6, 0.8]]),
                                  bandit_policies.PolicySettings())
    np.testing.assert_allclose(
        np.linalg.norm(2 * unit.user_statistic(0, 1.0)),
        bandit_policies.sensitivity(2), rtol=1e-9)

  def test_linear_state_is_the_ridge_sums(self):
    rng = np.random.default_rng(3)
    contexts = rng.normal(size=(6, 3))
    contexts /= np.linalg.norm(contexts, axis=1, keepdims=True)
    policy = bandit_policies.EpsilonGreedy(
        contexts, bandit_policies.PolicySettings(ridge=2.0))
    events = [(0, 1.0), (3, 0.0), (5, 1.0), (0, 0.0)]
    for start in (0, 2):  # Two rounds of two events.
      policy.apply(sum(policy.user_statistic(i, r)
                       for i, r in events[start:start + 2]).astype(
                           np.float64))
    x = contexts[[i for i, _ in events]]
    r = np.array([r for _, r in events])
    a = 2.0 * np.eye(3) + x.T @ x
    np.testing.assert_allclose(policy.state()['a'], a, rtol=1e-5)
    np.testing.assert_allclose(policy.theta,
                               np.linalg.solve(a, x.T @ r), rtol=1e-5)

  def test_hindsight_is_the_ridge_fit_of_every_reward(self):
    # Item 0 (x = (0.6, 0)) liked twice; item 1 (x = (0, 0.8)) liked once
    # and not once. Ridge 1: A = diag(1 + 2 0.36, 1 + 2 0.64), b = (1.2, 0.8).
    contexts = np.array([[0.6, 0.0], [0.0, 0.8]])
    hindsight = bandit_policies.HindsightLinear.fit(
        contexts, bandit_policies.PolicySettings(ridge=1.0),
        np.array([0, 0, 1, 1]), np.array([1.0, 1.0, 1.0, 0.0]))
    np.testing.assert_allclose(hindsight.theta, [1.2 / 1.72, 0.8 / 2.28])
    self.assertEqual(hindsight.statistics_size, 0)  # It learns nothing.

  def test_statistics_are_bounded_by_the_sensitivity(self):
    rng = np.random.default_rng(1)
    contexts = rng.normal(size=(50, 4))
    contexts /= np.linalg.norm(contexts, axis=1, keepdims=True)
    settings = bandit_policies.PolicySettings()
    for policy in bandit_policies.create(['popularity', 'linucb'], contexts,
                                         settings):
      norms = [np.linalg.norm(policy.user_statistic(i, 1.0))
               for i in range(50)]
      # Unit contexts and reward 1 reach the bound.
      np.testing.assert_allclose(max(norms), bandit_policies.SENSITIVITY,
                                 rtol=1e-6)

  def test_popularity_counts_shows_and_clicks(self):
    policy = bandit_policies.Popularity(np.zeros((4, 2), np.float32),
                                        bandit_policies.PolicySettings())
    policy.apply(policy.user_statistic(2, 1.0) + policy.user_statistic(2, 0.0)
                 + policy.user_statistic(1, 1.0))
    rng = np.random.default_rng(0)
    # (clicks + 1) / (shows + 2): item 1: 2/3, item 2: 2/4, item 3: 1/2.
    np.testing.assert_allclose(policy.scores(np.array([1, 2, 3]), rng),
                               [2 / 3, 0.5, 0.5])
    self.assertEqual(policy.choose(np.array([3, 2, 1]), rng), 2)

  def test_unknown_policy_and_bad_settings_are_one_line(self):
    with self.assertRaisesRegex(ValueError, r'^--policies: unknown ucb2; '
                                'expected some of random, popularity'):
      bandit_policies.create(['linucb', 'ucb2'], np.zeros((2, 2)),
                             bandit_policies.PolicySettings())
    with self.assertRaisesRegex(ValueError, r'^--epsilon=1.5: expected in'):
      bandit_policies.PolicySettings(epsilon=1.5)
    with self.assertRaisesRegex(ValueError, 'registered twice'):
      bandit_policies.register(bandit_policies.LinUCB)


class ServingTest(absltest.TestCase):

  def test_saved_policies_score_as_before_and_skip_given_items(self):
    table = testing_data.random_table()
    config = bandit_env.EnvironmentConfig(context_dim=3, users_per_round=8,
                                          num_candidates=4, seed=1)
    context_users, bandit_users = bandit_env.split_users(40, config)
    contexts = bandit_env.item_contexts(table, context_users, 30, config)
    settings = bandit_policies.PolicySettings()
    policies = bandit_policies.create(['popularity', 'hybrid'], contexts,
                                      settings)
    pools = [bandit_env.UserPools(table, bandit_users, config)
             for _ in policies]
    for round_num in range(6):  # Six rounds by hand: pick, learn, sum.
      users = bandit_env.sample_users(bandit_users, round_num, config)
      for policy, pool in zip(policies, pools):
        records = []
        for user in users:
          items, rewards = pool.candidates(int(user), round_num)
          pick = policy.choose(items, np.random.default_rng(0), int(user))
          policy.observe(int(user), int(items[pick]), float(rewards[pick]))
          pool.remove(int(user), int(items[pick]))
          records.append(policy.user_statistic(int(items[pick]),
                                               float(rewards[pick])))
        policy.apply(np.sum(records, axis=0))
    directory = self.create_tempdir().full_path
    raw_users = np.arange(100, 140)
    bandit_serving.save(directory, policies, pools, contexts, raw_users,
                        np.arange(30) + 1000, [f't{i}' for i in range(30)])
    with open(os.path.join(directory, 'summary.json'), 'w') as f:
      json.dump({'policies': {'popularity': {}, 'hybrid': {}},
                 'policy_settings': dataclasses.asdict(settings)}, f)
    served = bandit_serving.load(directory, 'hybrid')
    hybrid = policies[1]
    user = int(bandit_users[0])
    everything = np.arange(30)
    np.testing.assert_allclose(served.policy.scores(everything, None, user),
                               hybrid.scores(everything, None, user))
    self.assertTrue(hybrid.local)  # The device state was restored, not empty.
    result = bandit_serving.serve(served, str(raw_users[user]), k=30)
    given = set(pools[1].given()[1][pools[1].given()[0] == user].tolist())
    self.assertTrue(given)
    shown = [int(r['item']) - 1000 for r in result['recommendations']]
    self.assertEqual(len(shown), 30 - len(given))
    self.assertEmpty(given & set(shown))
    scores = [r['score'] for r in result['recommendations']]
    self.assertEqual(scores, sorted(scores, reverse=True))
    for row in result['recommendations']:
      self.assertAlmostEqual(row['score'], row['estimate'] + row['bonus'],
                             places=3)
    self.assertIn('device model', result['note'])
    self.assertIn('never served', bandit_serving.serve(served, 'x', 3)[
        'note'])
    with self.assertRaisesRegex(ValueError, r'^--policy=ucb: the run has '
                                'popularity, hybrid'):
      bandit_serving.load(directory, 'ucb')


class EnvironmentTest(absltest.TestCase):

  def test_contexts_come_from_context_users_only_and_are_bounded(self):
    table = testing_data.random_table()
    config = bandit_env.EnvironmentConfig(context_dim=4, seed=2)
    context_users, bandit_users = bandit_env.split_users(40, config)
    self.assertEqual(len(context_users), 20)
    self.assertEmpty(np.intersect1d(context_users, bandit_users))
    contexts = bandit_env.item_contexts(table, context_users, 30, config)
    self.assertEqual(contexts.shape, (30, 4))
    self.assertLessEqual(np.linalg.norm(contexts, axis=1).max(), 1 + 1e-6)
    np.testing.assert_allclose(contexts[:, -1], 1 / math.sqrt(2), rtol=1e-6)
    # The bandit users' ratings change nothing.
    changed = testing_data.table(
        table.users, table.items,
        np.where(np.isin(table.users, bandit_users), 6 - table.ratings,
                 table.ratings))
    np.testing.assert_array_equal(
        bandit_env.item_contexts(changed, context_users, 30, config),
        contexts)
    # The context users' likes do.
    changed = testing_data.table(
        table.users, table.items,
        np.where(np.isin(table.users, context_users), 6 - table.ratings,
                 table.ratings))
    self.assertFalse(np.allclose(
        bandit_env.item_contexts(changed, context_users, 30, config),
        contexts))

  def test_feature_contexts_are_the_principal_components(self):
    # Reference: the eigenvectors of the centred features' scatter matrix.
    features = np.random.default_rng(3).integers(0, 2, (25, 6)).astype(float)
    features[:, 5] = np.random.default_rng(4).normal(size=25)  # A year.
    config = bandit_env.EnvironmentConfig(context_dim=4,
                                          item_contexts=('genres', 'year'))
    contexts = bandit_env.feature_contexts(features, config)
    centred = features - features.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    coordinates = centred @ vectors[:, np.argsort(values)[::-1][:3]]
    largest = coordinates[np.argmax(np.abs(coordinates), axis=0), range(3)]
    coordinates *= np.sign(largest)
    coordinates *= (1 / math.sqrt(2)) / np.linalg.norm(coordinates,
                                                       axis=1).max()
    np.testing.assert_allclose(contexts[:, :3], coordinates, atol=1e-6)
    np.testing.assert_allclose(contexts[:, 3], 1 / math.sqrt(2), rtol=1e-6)
    # Fewer features than dimensions: the rest are zeros.
    wide = bandit_env.feature_contexts(
        features[:, :2], dataclasses.replace(config, context_dim=5))
    self.assertEqual(wide.shape, (25, 5))
    np.testing.assert_array_equal(wide[:, 2:4], 0.0)

  def test_pools_show_rated_items_until_each_is_picked(self):
    # User 1 rated items 1 (3 stars), 2 (5) and 0 (1).
    pools = bandit_env.UserPools(
        testing_data.TRAIN, np.array([1]),
        bandit_env.EnvironmentConfig(num_candidates=2, seed=4))
    seen = []
    for round_num in range(4):
      items, rewards = pools.candidates(1, round_num)
      self.assertLen(items, min(2, 3 - round_num))
      for item, reward in zip(items, rewards):
        self.assertEqual(reward, {0: 0.0, 1: 0.0, 2: 1.0}[int(item)])
      self.assertEqual(
          pools.candidates(1, round_num)[0].tolist(), items.tolist())
      if len(items):
        pools.remove(1, int(items[0]))
        seen.append(int(items[0]))
    self.assertCountEqual(seen, [0, 1, 2])
    self.assertEmpty(pools.candidates(0, 0)[0])  # Not a bandit user.

  def test_users_are_sampled_by_round_and_seed(self):
    config = bandit_env.EnvironmentConfig(users_per_round=5, seed=1)
    users = np.arange(10, 30)
    first = bandit_env.sample_users(users, 0, config)
    self.assertLen(set(first.tolist()), 5)
    self.assertTrue(set(first.tolist()) <= set(users.tolist()))
    np.testing.assert_array_equal(bandit_env.sample_users(users, 0, config),
                                  first)
    self.assertFalse(np.array_equal(
        bandit_env.sample_users(users, 1, config), first))
    with self.assertRaisesRegex(ValueError, r'^--users_per_round=21 exceeds '
                                'the 20 bandit users'):
      bandit_env.sample_users(users, 0, bandit_env.EnvironmentConfig(
          users_per_round=21))

  def test_bad_settings_are_one_line(self):
    for kwargs, message in (
        (dict(num_candidates=1), '--num_candidates=1: expected >= 2'),
        (dict(context_dim=1), '--context_dim=1: expected >= 2'),
        (dict(slate_size=10), r'--slate_size=10: expected 1 to '
         r'--num_candidates - 1 \(9\)'),
        (dict(context_user_fraction=1.0), '--context_user_fraction=1: '
         'expected in'),
        (dict(item_contexts=('likes', 'genres')), '--item_contexts=likes,'
         'genres: expected likes alone, or side information among genres, '
         'year'),
        (dict(item_contexts=('plot',)), '--item_contexts=plot: expected'),
    ):
      with self.assertRaisesRegex(ValueError, '^' + message):
        bandit_env.EnvironmentConfig(**kwargs)


if __name__ == '__main__':
  absltest.main()
