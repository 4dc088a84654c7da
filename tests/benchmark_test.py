"""The benchmark binary: a --quick run's report, and its flag mistakes.

The accounting behind the report is tested in
tests/reporting/benchmarking_test.py.
"""

import json
import os

from absl.testing import absltest
import pytest

from tests import binaries


def _run_binary(*args):
  return binaries.run_binary('benchmark', *args, timeout=900)


@pytest.mark.slow
class QuickRunTest(absltest.TestCase):

  def test_quick_run_writes_the_report_and_leaves_no_worker(self):
    out = self.create_tempdir().full_path
    token = f'benchmark-{os.getpid()}-{id(self)}'
    # The quick scale at its flags' minima (11 rounds of the long run, 2 of
    # each timing run), so that CI's whole run stays within its budget.
    result = binaries.run_binary('benchmark', '--quick', '--rounds=11',
                                 '--timing_rounds=2', '--noprogress',
                                 f"--output_dir={out}", timeout=900,
                                 token=token)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(out, 'benchmark.json')) as f:
      report = json.load(f)
    names = [row['name'] for row in report['runs']]
    self.assertEqual(names, [
        'centralized', 'fedrecon_20', 'fedrecon_10', 'fedrecon_50',
        'fedrecon_all', 'fedavg_20', 'fedavg_10', 'fedavg_50',
        'fedrecon_dp_20', 'fedrecon_100_per_client', 'fedrecon_100_cohort',
        'fedavg_100_per_client', 'fedavg_100_cohort', 'fedrecon_all_cohort',
        'fedrecon_neumf_implicit_all_cohort', 'fedrecon_20_w2'])
    runs = {row['name']: row for row in report['runs']}
    self.assertEqual(report['corpus']['users'], 604)
    self.assertEqual(report['corpus']['ratings'], 100_020)
    self.assertEqual(report['scale']['rounds'], 11)
    self.assertEqual(report['scale']['timing_rounds'], 2)
    self.assertEqual(runs['fedrecon_20']['rounds'], 11)
    self.assertEqual(runs['fedrecon_10']['rounds'], 2)
    self.assertEqual(runs['fedrecon_100_cohort']['rounds'], 3)
    self.assertEqual(runs['fedrecon_all']['clients_per_round'],
                     report['corpus']['training_clients'])
    self.assertEqual(runs['fedrecon_20_w2']['workers'], 2)
    # The centralized run takes as many steps as the long run's rounds 2-3
    # (timing_rounds = 2) took: planned before, counted during.
    profile = report['long_run_profile']
    self.assertEqual(profile['name'], 'fedrecon_20')
    self.assertLen(profile['rss_bytes'], 11)
    self.assertEqual(runs['centralized']['steps'], sum(profile['steps'][1:3]))
    for row in report['runs']:
      self.assertGreater(row['ratings_per_second'], 0, row['name'])
      self.assertAlmostEqual(
          row['ratio_to_centralized'], row['ratings_per_second'] /
          runs['centralized']['ratings_per_second'], msg=row['name'])
    self.assertIsNotNone(runs['fedrecon_20']['rss_growth'])
    self.assertGreater(runs['fedrecon_20']['time_to_first_round_seconds'], 0)
    self.assertEqual(len(report['targets']), 9)
    # The cohort keys, side by side in one run: the same users per round,
    # then every training user in one round (after a warm-up round).
    self.assertEqual(runs['fedrecon_100_cohort']['clients_per_round'], 100)
    self.assertEqual(runs['fedrecon_all_cohort']['clients_per_round'],
                     report['corpus']['training_clients'])
    self.assertEqual(runs['fedrecon_all_cohort']['rounds'], 3)
    self.assertAlmostEqual(
        report['cohort_speedup_fedrecon_100'],
        runs['fedrecon_100_per_client']['median_round_seconds'] /
        runs['fedrecon_100_cohort']['median_round_seconds'])
    self.assertEqual(report['cohort_all_users_round_seconds'],
                     runs['fedrecon_all_cohort']['median_round_seconds'])
    # NeuMF under implicit feedback: every training user of the corpus read
    # as interactions, each example (positives and 4 negatives per positive)
    # counted once per pass (one reconstruction and two training epochs).
    neumf = runs['fedrecon_neumf_implicit_all_cohort']
    self.assertEqual(neumf['rounds'], 3)
    self.assertEqual(report['cohort_neumf_implicit_all_users_round_seconds'],
                     neumf['median_round_seconds'])
    self.assertAlmostEqual(neumf['ratings_per_second'] /
                           neumf['client_ratings_per_second'], 3.0)
    self.assertAlmostEqual(
        report['cohort_fedrecon_100_vs_centralized'],
        runs['fedrecon_100_cohort']['ratings_per_second'] /
        runs['centralized']['ratings_per_second'])
    self.assertEqual([t['name'] for t in report['targets'][4:]], [
        'cohort_speedup_fedrecon_100', 'cohort_speedup_fedavg_100',
        'cohort_all_users_round_seconds', 'cohort_all_users_peak_rss_gb',
        'cohort_fedrecon_100_vs_centralized'])
    self.assertAlmostEqual(
        report['cohort_speedup_fedavg_100'],
        runs['fedavg_100_per_client']['median_round_seconds'] /
        runs['fedavg_100_cohort']['median_round_seconds'])
    self.assertEqual(report['machine']['cores'], len(os.sched_getaffinity(0)))
    self.assertTrue(os.path.exists(os.path.join(out, 'benchmark.png')))
    self.assertIn('fedrecon_20_w2', result.stdout)
    self.assertIn('client ratings/s', result.stdout)
    # A worker the benchmark leaked would outlive it; only the processes it
    # started carry the token (other workers on the machine do not count).
    self.assertEmpty(binaries.leftover_workers(token))

  def test_bad_worker_count_is_one_line(self):
    result = _run_binary('--num_workers=1')
    self.assertEqual(result.returncode, 1)
    self.assertEqual(result.stderr.strip().splitlines(), [
        'benchmark.py: error: --num_workers=1 must list worker counts >= 2 '
        '(one worker is always measured).'])


if __name__ == '__main__':
  absltest.main()
