"""The bandit run's replay estimator and logged events, on a tiny table."""

import json
import os

from absl.testing import absltest
import numpy as np

from research.fedrec.algorithms import bandit_policies
from research.fedrec.data import bandit_env
from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import ratings as ratings_lib
from research.fedrec.data import side_info
from research.fedrec.data import synthetic
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


class SideInformationContextsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.data = corpus_lib.DataConfig(
        synthetic_config=synthetic.SyntheticConfig(
            num_users=60, num_items=50, num_ratings=1500,
            min_ratings_per_user=10))
    self.environment = bandit_env.EnvironmentConfig(
        num_candidates=4, users_per_round=5, context_dim=5,
        item_contexts=('genres', 'year'), seed=1)

  def test_the_run_serves_the_side_information_contexts(self):
    output = os.path.join(self.root, 'run')
    config = bandit_run.BanditConfig(
        output_dir=output, data=self.data, environment=self.environment,
        policies=('linucb',), rounds=3)
    summary = bandit_run.run(config, log=lambda _: None, progress=False)
    self.assertEqual(summary['environment']['item_contexts'],
                     ('genres', 'year'))
    data = corpus_lib.load_corpus(self.data)
    features, _ = side_info.item_features(data.item_info(self.data),
                                          ('genres', 'year'))
    with np.load(os.path.join(output, 'policies.npz')) as saved:
      np.testing.assert_array_equal(
          saved['contexts'],
          bandit_env.feature_contexts(features, self.environment))
    with open(os.path.join(output, 'summary.json')) as f:
      saved = json.load(f)
    self.assertEqual(saved['environment']['item_contexts'],
                     ['genres', 'year'])
    self.assertEqual(saved['policies']['linucb']['events'], 15)

  def test_a_corpus_without_item_information_is_one_line(self):
    path = os.path.join(self.root, 'mine.csv')
    with open(path, 'w') as f:
      f.writelines(f'u{u},i{i},{1 + (u + i) % 5}\n' for u in range(12)
                   for i in range(8))
    config = bandit_run.BanditConfig(
        output_dir=os.path.join(self.root, 'run'),
        data=corpus_lib.DataConfig(dataset=corpus_lib.CSV, data_dir=path),
        environment=self.environment, policies=('linucb',), rounds=2)
    with self.assertRaisesRegex(ratings_lib.DataError,
                                '^--dataset=csv: a ratings CSV carries no '
                                'item side information'):
      bandit_run.run(config, log=lambda _: None, progress=False)
    self.assertEqual(os.listdir(self.root), ['mine.csv'])


if __name__ == '__main__':
  absltest.main()
