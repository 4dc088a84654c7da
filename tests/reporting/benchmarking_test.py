"""The benchmark's accounting: ratings, steps, medians, growth and targets."""

from absl.testing import absltest

from research.fedrec.reporting import benchmarking


class AccountingTest(absltest.TestCase):

  def test_round_work_counts_passes_and_partial_batches(self):
    counts = {'a': 5, 'b': 17, 'c': 3}
    # FedRecon: reconstruction and training each batch a client's 5 and 17
    # ratings by 4: (2 + 5) batches per pass.
    recon = benchmarking.round_work(counts, ['a', 'b'], passes=2,
                                    batch_size=4, repeat_then_batch=False)
    self.assertEqual((recon.ratings, recon.client_ratings, recon.steps),
                     (44, 22, 14))
    # FedAvg repeats, then batches: ceil(10 / 4) + ceil(34 / 4).
    fedavg = benchmarking.round_work(counts, ['a', 'b'], passes=2,
                                     batch_size=4, repeat_then_batch=True)
    self.assertEqual((fedavg.ratings, fedavg.client_ratings, fedavg.steps),
                     (44, 22, 12))

  def test_summary_skips_the_first_round_and_measures_growth(self):
    work = benchmarking.Work(ratings=100, client_ratings=50, steps=7)
    seconds = [9.0, 1.0, 4.0, 2.0] + [2.0] * 8
    rss = [1000] * 9 + [2000, 2050, 2100]
    row = benchmarking.summarize_run('fedrecon_10', 10, 1, seconds,
                                     [work] * 12, rss, 3000, 12.5)
    timed = sum(seconds[1:])  # 21 s for 11 rounds.
    self.assertEqual(row['median_round_seconds'], 2.0)
    self.assertAlmostEqual(row['ratings_per_second'], 1100 / timed)
    self.assertAlmostEqual(row['client_ratings_per_second'], 550 / timed)
    self.assertAlmostEqual(row['clients_per_second'], 110 / timed)
    self.assertEqual(row['steps_per_round'], 7)
    self.assertEqual(row['time_to_first_round_seconds'], 12.5)
    self.assertEqual(row['peak_rss_bytes'], 3000)
    # From after round 10 (2000) to after the last round (2100).
    self.assertEqual(row['rss_round_10_bytes'], 2000)
    self.assertAlmostEqual(row['rss_growth'], 0.05)
    short = benchmarking.summarize_run('x', 10, 1, seconds[:3], [work] * 3,
                                       rss[:3], 3000)
    self.assertIsNone(short['rss_growth'])
    self.assertEqual(short['median_round_seconds'], 2.5)

  def test_targets(self):
    def report(ratio, growth, first, peak, speedup, fedavg_speedup,
               all_seconds, all_gb, vs_central):
      return {
          'scale': {'client_counts': [50, 100, 1000]},
          'runs': [
              {'name': 'fedrecon_100', 'ratio_to_centralized': ratio,
               'rss_growth': growth, 'time_to_first_round_seconds': first},
              {'name': 'fedrecon_all', 'peak_rss_bytes': peak},
          ],
          'cohort_speedup_fedrecon_100': speedup,
          'cohort_speedup_fedavg_100': fedavg_speedup,
          'cohort_all_users_round_seconds': all_seconds,
          'cohort_all_users_peak_rss_gb': all_gb,
          'cohort_fedrecon_100_vs_centralized': vs_central}
    met = benchmarking.check_targets(
        report(0.5, 0.049, 29.9, 2**34, 80.0, 50.0, 1.0, 2.0, 2.0))
    self.assertEqual([c['met'] for c in met], [True] * 9)
    self.assertEqual([c['name'] for c in met], [
        'fedrecon_ratio_to_centralized', 'rss_growth_round_10_to_last',
        'time_to_first_round_seconds', 'all_users_round_peak_rss_bytes',
        'cohort_speedup_fedrecon_100', 'cohort_speedup_fedavg_100',
        'cohort_all_users_round_seconds', 'cohort_all_users_peak_rss_gb',
        'cohort_fedrecon_100_vs_centralized'])
    missed = benchmarking.check_targets(
        report(0.49, 0.05, 30.0, 24 * 2**30, 79.9, 49.9, 1.01, 2.01, 1.99))
    self.assertEqual([c['met'] for c in missed], [False] * 9)

  def test_cohort_summary(self):
    runs = {
        'fedrecon_100_per_client': {'median_round_seconds': 6.0},
        'fedrecon_100_cohort': {'median_round_seconds': 0.08,
                                'ratings_per_second': 30000.0,
                                'time_to_first_round_seconds': 4.0},
        'fedavg_100_per_client': {'median_round_seconds': 5.0},
        'fedavg_100_cohort': {'median_round_seconds': 0.1},
        'fedrecon_all_cohort': {'median_round_seconds': 0.7,
                                'peak_rss_bytes': 3 * 2**29,
                                'time_to_first_round_seconds': 9.0},
        'fedrecon_neumf_implicit_all_cohort': {
            'median_round_seconds': 2.5, 'time_to_first_round_seconds': 12.0},
    }
    self.assertEqual(dict(benchmarking.cohort_summary(runs, 10000.0)), {
        'cohort_speedup_fedrecon_100': 6.0 / 0.08,
        'cohort_speedup_fedavg_100': 5.0 / 0.1,
        'cohort_all_users_round_seconds': 0.7,
        'cohort_all_users_peak_rss_gb': 1.5,
        'cohort_fedrecon_100_vs_centralized': 3.0,
        'cohort_time_to_first_round_seconds': 4.0,
        'cohort_all_users_time_to_first_round_seconds': 9.0,
        'cohort_neumf_implicit_all_users_round_seconds': 2.5,
        'cohort_neumf_implicit_time_to_first_round_seconds': 12.0})

if __name__ == '__main__':
  absltest.main()
