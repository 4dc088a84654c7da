"""The bandit run's replay estimator and logged events, on a tiny table."""

from absl.testing import absltest
import numpy as np

from research.fedrec.algorithms import bandit_policies
from research.fedrec.data import bandit_env
from research.fedrec.training import bandit_run
from tests.algorithms import testing_data


class ReplayTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.table = testing_data.random_table(num_users=40, num_items=30,
                                           seed=2)
    self.config = bandit_run.BanditConfig(
        output_dir='/unused', rounds=12, policies=('linucb',),
        environment=bandit_env.EnvironmentConfig(
            num_candidates=3, users_per_round=10, context_dim=3, seed=4))
    env = self.config.environment
    context_users, self.users = bandit_env.split_users(40, env)
    self.contexts = bandit_env.item_contexts(self.table, context_users, 30,
                                             env)

  def test_the_log_is_a_uniform_policy_on_the_same_stream(self):
    log = bandit_run.uniform_log(self.table, self.users, self.config)
    self.assertLen(log, 12)
    env = self.config.environment
    for round_num, events in enumerate(log):
      sampled = bandit_env.sample_users(self.users, round_num, env).tolist()
      self.assertEqual([e[0] for e in events],
                       [u for u in sampled if u in {e[0] for e in events}])
      for user, items, pick, reward in events:
        self.assertLessEqual(len(items), 3)
        self.assertIn(pick, range(len(items)))
        rating = self.table.ratings[(self.table.users == user) &
                                    (self.table.items == items[pick])]
        self.assertEqual(reward, float(rating[0] >= 4))
    # Seeded: the same log again.
    again = bandit_run.uniform_log(self.table, self.users, self.config)
    self.assertEqual([[(u, i.tolist(), p, r) for u, i, p, r in events]
                      for events in again],
                     [[(u, i.tolist(), p, r) for u, i, p, r in events]
                      for events in log])

  def test_replay_counts_only_the_events_where_the_policy_agrees(self):
    # A fixed policy learns nothing: its replay estimate is, by hand, the
    # mean logged reward over the events whose logged pick is its own pick.
    # Distinct random contexts, so that no two candidates tie.
    log = bandit_run.uniform_log(self.table, self.users, self.config)
    contexts = np.random.default_rng(0).uniform(-0.5, 0.5, (30, 3))
    theta = np.array([1.0, -2.0, 0.5])
    fixed = bandit_policies.HindsightLinear(
        contexts, bandit_policies.PolicySettings(), theta)
    agreed = []
    for events in log:
      for _, items, pick, reward in events:
        if np.argmax(contexts[items] @ theta) == pick:
          agreed.append(reward)
    result = bandit_run.replay([fixed], log, self.config, [None])
    self.assertEqual(result['hindsight']['replay_events'], len(agreed))
    self.assertGreater(len(agreed), 5)
    self.assertAlmostEqual(result['hindsight']['replay_ctr'],
                           float(np.mean(agreed)))

  def test_a_learning_policy_learns_only_from_counted_events(self):
    log = bandit_run.uniform_log(self.table, self.users, self.config)
    policy = bandit_policies.LinUCB(self.contexts,
                                    bandit_policies.PolicySettings())
    result = bandit_run.replay([policy], log, self.config,
                               [bandit_run.host_sum])
    counted = result['linucb']['replay_events']
    self.assertGreater(counted, 0)
    # Each counted event added x x^T: the bias feature adds 1/2 to A's
    # last diagonal entry.
    np.testing.assert_allclose(policy.state()['a'][-1, -1],
                               1.0 + counted / 2, rtol=1e-6)


if __name__ == '__main__':
  absltest.main()
