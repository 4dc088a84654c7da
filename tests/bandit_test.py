"""Federated bandits against the centralized learner, DP per user, bandit.py.

With plain sums through TFF's aggregator the federated policies must make
exactly the centralized choices and end with the same A and b (float32
sums, to 1e-6 relative); under DP each user (not a cohort) is clipped.
"""

import csv
import json
import os
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.algorithms import bandit_federated
from research.fedrec.algorithms import bandit_policies
from research.fedrec.data import bandit_env
from research.fedrec.training import bandit_run
from research.fedrec.training import runtime
from tests import binaries
from tests.algorithms import testing_data

# Every test here runs TFF computations or a binary.
pytestmark = pytest.mark.slow


class FederatedBanditTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    runtime.start()

  @classmethod
  def tearDownClass(cls):
    runtime.release()
    super().tearDownClass()

  def _run(self, federated: bool, config):
    table = testing_data.random_table(num_users=60, num_items=30, seed=5)
    env = config.environment
    context_users, bandit_users = bandit_env.split_users(60, env)
    contexts = bandit_env.item_contexts(table, context_users, 30, env)
    policies = bandit_policies.create(config.policies, contexts,
                                      config.policy_settings)
    pools = [bandit_env.UserPools(table, bandit_users, env) for _ in policies]
    sums = [(bandit_federated.FederatedSum(p.statistics_size) if federated
             else bandit_run.host_sum) if p.statistics_size else None
            for p in policies]
    history = bandit_run.run_policies(policies, pools, bandit_users, config,
                                      sums)
    return policies, history

  def test_federated_equals_centralized(self):
    for slate_size in (1, 2):
      with self.subTest(slate_size=slate_size):
        self._assert_federated_equals_centralized(slate_size)

  def _assert_federated_equals_centralized(self, slate_size):
    config = bandit_run.BanditConfig(
        output_dir='/unused', rounds=8, policies=('popularity', 'linucb',
                                                  'lints', 'egreedy',
                                                  'hybrid'),
        environment=bandit_env.EnvironmentConfig(
            num_candidates=4, users_per_round=12, context_dim=3, seed=3,
            slate_size=slate_size),
        policy_settings=bandit_policies.PolicySettings(alpha=0.7,
                                                       epsilon=0.3))
    central, central_history = self._run(False, config)
    federated, federated_history = self._run(True, config)
    for want, have in zip(central, federated):
      # The same picks: the same clicks every round.
      self.assertEqual(federated_history[have.name]['clicks'],
                       central_history[want.name]['clicks'])
      for key, value in want.state().items():
        np.testing.assert_allclose(have.state()[key], value, rtol=1e-6,
                                   err_msg=f'{want.name} {key}')
    # The case is real: every user's events entered A (8 rounds x 12 users,
    # up to a slate each: fewer where a user's pool ran low; the bias
    # feature is 1/sqrt(2), so A's last diagonal entry is the ridge plus
    # half the events).
    linucb = central[1]
    events = sum(central_history['linucb']['events'])
    if slate_size == 1:
      self.assertEqual(events, 96)
    else:
      self.assertBetween(events, 97, 96 * slate_size)
    np.testing.assert_allclose(linucb.state()['a'][-1, -1], 1 + events / 2,
                               rtol=1e-5)

  def test_dp_clips_each_user_not_the_cohort(self):
    # At noise 0 the DP sum is the sum of the users' records each clipped to
    # sqrt(2): (3, 4) -> (3, 4) sqrt(2) / 5; (0, 1) and (1, 1) pass.
    # Clipping a cohort's sum (4, 6) instead would give (4, 6) sqrt(2) / 52^.5.
    dp_sum = bandit_federated.FederatedSum(2, noise_multiplier=0.0)
    got = dp_sum(np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 1.0]]))
    root2 = np.sqrt(2.0)
    np.testing.assert_allclose(got, [3 * root2 / 5 + 1, 4 * root2 / 5 + 2],
                               rtol=1e-6)
    # Users spread over several cohorts (TFF clients): the same plain sum.
    records = np.random.default_rng(0).uniform(
        0, 0.5, (2 * bandit_federated.COHORT_USERS + 7, 3))
    np.testing.assert_allclose(
        bandit_federated.FederatedSum(3)(records), records.sum(axis=0),
        rtol=1e-5)
    # Slates of 2: each user clipped to 2 sqrt(2).
    slate_sum = bandit_federated.FederatedSum(
        2, noise_multiplier=0.0, clip=bandit_policies.sensitivity(2))
    np.testing.assert_allclose(slate_sum(np.array([[3.0, 4.0]])),
                               [6 * root2 / 5, 8 * root2 / 5], rtol=1e-6)
    # With noise: stddev z sqrt(2) per coordinate around the sum.
    noisy = bandit_federated.FederatedSum(400, noise_multiplier=2.0)
    draws = noisy(np.zeros((3, 400)))
    self.assertAlmostEqual(float(np.std(draws)), 2 * root2, delta=0.4)


class SecureBanditSumTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    runtime.start(secure_aggregation=True)

  @classmethod
  def tearDownClass(cls):
    runtime.release()
    super().tearDownClass()

  def test_secure_sums_are_the_plain_sums_to_quantization(self):
    # Users over two cohorts (TFF clients); each coordinate in [-1, 1].
    records = np.random.default_rng(1).uniform(
        -1, 1, (bandit_federated.COHORT_USERS + 44, 5))
    # 32-bit quantization of +-256 sqrt(2) per client: steps of 1.7e-7.
    secure = bandit_federated.FederatedSum(5, secure=True)
    np.testing.assert_allclose(secure(records), records.sum(axis=0),
                               atol=1e-4)
    # Under DP (noise 0): each user clipped to sqrt(2) first, then summed
    # securely; the record (3, 4) becomes (3, 4) sqrt(2) / 5.
    private = bandit_federated.FederatedSum(2, noise_multiplier=0.0,
                                            secure=True)
    root2 = np.sqrt(2.0)
    np.testing.assert_allclose(
        private(np.array([[3.0, 4.0], [0.0, 1.0]])),
        [3 * root2 / 5, 4 * root2 / 5 + 1], atol=1e-5)


class BanditBinaryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp(prefix='fedrec_test_')
    self.addCleanup(shutil.rmtree, self.root)

  def test_writes_outputs_and_federated_repeats_centralized(self):
    token = f'bandit-{os.getpid()}'
    outputs = {}
    for execution in ('centralized', 'federated'):
      result = binaries.run_binary(
          'bandit', f'--root_output_dir={self.root}', '--rounds=6',
          '--users_per_round=20', f'--execution={execution}',
          f'--experiment_name={execution}', '--noprogress', token=token)
      self.assertEqual(result.returncode, 0, result.stderr[-2000:])
      folder = os.path.join(self.root, execution)
      self.assertCountEqual(os.listdir(folder), [
          'metrics.csv', 'cumulative_regret.png', 'summary.json',
          'ctr_by_visit.csv', 'ctr_by_visit.png', 'policies.npz',
          'devices.npz'])
      with open(os.path.join(folder, 'summary.json')) as f:
        outputs[execution] = json.load(f)
      with open(os.path.join(folder, 'metrics.csv')) as f:
        rows = list(csv.DictReader(f))
      self.assertLen(rows, 6)
      last = rows[-1]
      # The six policies and the hindsight reference.
      self.assertLen(outputs[execution]['policies'], 7)
      self.assertEqual(outputs[execution]['policies']['hindsight'][
          'regret_vs_hindsight'], 0)
      for name, totals in outputs[execution]['policies'].items():
        self.assertEqual(totals['events'], 120)
        # Every event is some user's k-th visit.
        self.assertEqual(sum(totals['users_by_visit']), 120)
        self.assertEqual(float(last[f'{name}/cumulative_reward']),
                         totals['cumulative_reward'])
        self.assertAlmostEqual(
            float(last[f'{name}/ctr']),
            totals['cumulative_reward'] / totals['events'])
    self.assertEqual(outputs['federated']['policies'],
                     outputs['centralized']['policies'])
    self.assertEqual(binaries.leftover_workers(token), [])
    # recommend.py serves a user of the run with its policy.
    folder = os.path.join(self.root, 'centralized')
    with np.load(os.path.join(folder, 'devices.npz')) as devices, np.load(
        os.path.join(folder, 'policies.npz')) as server:
      user = int(devices['hybrid/given_users'][0])
      given = devices['hybrid/given_items'][
          devices['hybrid/given_users'] == user]
      raw_user = server['raw_users'][user].item()
      raw_given = set(server['raw_items'][given].tolist())
    result = binaries.run_binary(
        'recommend', f'--bandit_dir={folder}', '--policy=hybrid',
        f'--user_id={raw_user}', '--k=5', '--format=json')
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    served = json.loads(result.stdout)
    self.assertLen(served['recommendations'], 5)
    self.assertEmpty(raw_given & {r['item'] for r in
                                  served['recommendations']})
    self.assertIn('device model', served['note'])
    result = binaries.run_binary('recommend', f'--bandit_dir={folder}',
                                 '--policy=ucb9', f'--user_id={raw_user}')
    self.assertEqual(result.returncode, 1)
    self.assertEqual(result.stderr.strip(), 'recommend.py: error: '
                     '--policy=ucb9: the run has random, popularity, '
                     'egreedy, linucb, lints, hybrid.')

  def test_dp_run_reports_its_epsilon(self):
    result = binaries.run_binary(
        'bandit', f'--root_output_dir={self.root}', '--rounds=4',
        '--users_per_round=20', '--execution=federated',
        '--policies=linucb', '--target_epsilon=5', '--noprogress')
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    with open(os.path.join(self.root, 'bandits', 'summary.json')) as f:
      summary = json.load(f)
    # Calibrated to the target (within the calibration's tolerance), for
    # 20 of the 471 bandit users per round.
    self.assertAlmostEqual(summary['epsilon'], 5.0, delta=0.01)
    self.assertIn('User-level (5', summary['privacy_statement'])
    self.assertEqual(summary['bandit_users'], 471)

  def test_user_mistakes_are_one_line_and_leave_no_output(self):
    for args, message in (
        (['--users_per_round=900'], '--users_per_round=900 exceeds the 471 '
         'bandit users'),
        (['--policies=linucb,ucb9'], '--policies: unknown ucb9'),
        (['--target_epsilon=4'], 'user-level DP (--dp_noise_multiplier or '
         '--target_epsilon) needs --execution=federated'),
        (['--secure_aggregation'], '--secure_aggregation needs '
         '--execution=federated'),
        (['--item_contexts=likes,year'], '--item_contexts=likes,year: '
         'expected likes alone'),
    ):
      with self.subTest(message):
        result = binaries.run_binary(
            'bandit', f'--root_output_dir={self.root}', '--rounds=2',
            '--noprogress', *args)
        self.assertEqual(result.returncode, 1)
        lines = result.stderr.strip().splitlines()
        self.assertLen(lines, 1, result.stderr)
        self.assertIn(f'bandit.py: error: {message}', lines[0])
        self.assertEqual(os.listdir(self.root), [])


if __name__ == '__main__':
  absltest.main()
