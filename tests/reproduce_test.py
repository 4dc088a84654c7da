"""reproduce.py end to end: every table at --scale=smoke, resuming, mistakes.

The tutorial table runs on a self-written fixture in ML-1M's ratings.dat
format, the others on the synthetic corpus. The tables' plans, statistics and
outputs are tested in tests/reporting/reproduction_test.py.
"""

import csv
import glob
import math
import os

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.reporting import reproduction
from tests import binaries


def _run_binary(*args):
  return binaries.run_binary('reproduce', *args, timeout=1200)


def _write_ml_1m_fixture(directory: str) -> None:
  """60 users' ratings of 80 movies in ML-1M's ratings.dat format."""
  rng = np.random.default_rng(5)
  taste = rng.normal(size=(60, 3))
  kind = rng.normal(size=(80, 3))
  lines = []
  for user in range(60):
    for movie in rng.choice(80, size=rng.integers(25, 60), replace=False):
      score = 3.4 + 0.6 * taste[user] @ kind[movie] + rng.normal(0, 0.8)
      rating = int(np.clip(np.rint(score), 1, 5))
      lines.append(f'{user + 1}::{movie + 1}::{rating}::'
                   f'{978300000 + 60 * len(lines)}\n')
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'ratings.dat'), 'w') as f:
    f.writelines(lines)


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


class _TableTestCase(absltest.TestCase):
  """Runs tables as a user does and checks their outputs."""

  def _check_outputs(self, out, name, seeds, row_names=None):
    table = reproduction.load_table(name)
    rows = [r for r in table.rows if row_names is None or r.name in row_names]
    base = os.path.join(out, 'tables', name)
    for suffix in ('.md', '.tex', '.csv', '_runs.csv', '.png'):
      self.assertTrue(os.path.exists(base + suffix), base + suffix)
    written = _read_csv(base + '.csv')
    self.assertEqual([r['row'] for r in written], [r.name for r in rows])
    for row in written:
      self.assertEqual(row['seeds'], str(seeds))
      defined = next(r for r in rows if r.name == row['row'])
      without_dp = row['row'] in ('nodp', 'centralized', 'federated') or (
          not any('dp' in flags for flags in defined.runs.values()))
      dense = not any('sparsify' in flags for flags in defined.runs.values())
      for metric in table.metrics:
        # Rows without DP have no privacy metrics (epsilon, noise), dense
        # rows no sparsified bytes.
        private_metric = metric.source == 'privacy' or metric.key == 'epsilon'
        if dense and 'sparsified' in metric.key:
          continue
        if not private_metric or not without_dp:
          self.assertTrue(math.isfinite(float(row[f'{metric.name}_mean'])),
                          (row['row'], metric.name))
    self.assertLen(_read_csv(base + '_runs.csv'), len(rows) * seeds)
    with open(base + '.md') as f:
      grid = [line for line in f if line.startswith('| ')]
    self.assertLen(grid, 1 + len(rows))
    self.assertGreater(os.path.getsize(base + '.png'), 10_000)

  def _assert_smoke_table(self, name, row_names=None):
    out = self.create_tempdir().full_path
    # --noprogress is not a setting of the runs: allowed.
    rows = [f'--rows={",".join(row_names)}'] if row_names else []
    result = _run_binary(f'--table={name}', '--scale=smoke', '--seeds=1',
                         f'--output_dir={out}', '--noprogress', *rows)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self._check_outputs(out, name, 1, row_names)
    return result


# One class per table, so that pytest-xdist spreads them over its workers.
@pytest.mark.slow
class MovieLensTableTest(_TableTestCase):

  def test_fedrecon_movielens_at_smoke_scale(self):
    self._assert_smoke_table('fedrecon_movielens')


@pytest.mark.slow
class RankingTableTest(_TableTestCase):

  def test_ranking_loo_at_smoke_scale(self):
    # Every kind of run but FedRecon of MF (fedmf), which the FedRecon of
    # NeuMF row runs through the same client work.
    self._assert_smoke_table('ranking_loo', (
        'popularity', 'fedncf', 'neumf_fedrecon', 'autorec',
        'centralized_neumf'))


@pytest.mark.slow
class PFedRecTableTest(_TableTestCase):

  def test_pfedrec_ml100k_at_smoke_scale(self):
    # One row of each kind of run (the others' commands are checked in
    # tests/reporting/reproduction_test.py): the count floor, FedRecon,
    # the stateful methods (PFedRec's settings, FedRecon + DualPer) and DP.
    self._assert_smoke_table('pfedrec_ml100k', [
        'popularity', 'fedrecon', 'pfedrec', 'fedrecon_dualper',
        'pfedrec_dp_eps1'])


@pytest.mark.slow
class RatingsTableTest(_TableTestCase):

  def test_ratings_ml100k_at_smoke_scale(self):
    # Every kind of run but FedProx, whose runs are FedAvg's with a
    # proximal term (tests/algorithms/fed_prox_test.py).
    self._assert_smoke_table('ratings_ml100k', (
        'fedrecon', 'fedavg', 'fedavg_finetuned', 'centralized'))


@pytest.mark.slow
class PrivacyTableTest(_TableTestCase):

  def test_privacy_utility_at_smoke_scale(self):
    # The epsilon rows differ only in their target: the smallest and the
    # largest target (two points of the curve) and the no-DP row run every
    # code path of the table.
    result = self._assert_smoke_table('privacy_utility',
                                      ('eps1', 'eps16', 'nodp'))
    self.assertEqual(result.stdout.count('calibrated for epsilon 1)'), 2)
    self.assertEqual(result.stdout.count('calibrated for epsilon 16)'), 2)


@pytest.mark.slow
class BanditTableTest(_TableTestCase):

  def test_bandits_ml100k_at_smoke_scale(self):
    # bandit.py runs, each in a child process: centralized, and DP at the
    # smallest target (the federated and DP code paths).
    result = self._assert_smoke_table('bandits_ml100k',
                                      ('centralized', 'eps1'))
    self.assertIn('noise multiplier', result.stdout)
    self.assertIn('python -m research.fedrec.bandit --rounds=3 ',
                  result.stdout)


@pytest.mark.slow
class ColdStartTableTest(_TableTestCase):

  def test_cold_start_ml100k_at_smoke_scale(self):
    # MF and MF + genres + year under FedRecon (both in cohorts).
    self._assert_smoke_table('cold_start_ml100k',
                             ('mf_fedrecon', 'genres_year_fedrecon'))

  def test_cold_start_ranking_ml100k_at_smoke_scale(self):
    # Implicit feedback: popularity, a centralized and a federated feature
    # model; every row has warm- and cold-item metrics.
    self._assert_smoke_table('cold_start_ranking_ml100k',
                             ('popularity', 'genres_centralized',
                              'genres_year_fedrecon'))


@pytest.mark.slow
class CrossSiloTableTest(_TableTestCase):

  def test_cross_silo_ml100k_at_smoke_scale(self):
    # The built-in corpus has no user file: a random-store row (the zip
    # rows' field key is tested in tests/training/cross_silo_test.py).
    result = self._assert_smoke_table('cross_silo_ml100k', ('random3',))
    self.assertIn('--partition=silo', result.stdout)


@pytest.mark.slow
class BanditContextsTableTest(_TableTestCase):

  def test_bandit_contexts_ml100k_at_smoke_scale(self):
    result = self._assert_smoke_table('bandit_contexts_ml100k',
                                      ('likes', 'genres_year'))
    self.assertIn('--item_contexts=genres,year', result.stdout)


@pytest.mark.slow
class ReproduceBinaryTest(_TableTestCase):
  """The tutorial table on an ML-1M fixture, resuming, and user mistakes."""

  def test_tutorial_on_an_ml_1m_fixture_and_resuming(self):
    out = self.create_tempdir().full_path
    data_dir = os.path.join(out, 'ml-1m')
    _write_ml_1m_fixture(data_dir)
    args = ['--table=fedrecon_tutorial', '--scale=smoke', '--seeds=2',
            '--dataset=ml-1m', f'--data_dir={data_dir}', f'--output_dir={out}']
    result = _run_binary(*args)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self._check_outputs(out, 'fedrecon_tutorial', 2)
    self.assertEqual(result.stdout.count(': finished in '), 4)
    with open(os.path.join(out, 'tables', 'fedrecon_tutorial.md')) as f:
      self.assertIn('ml-1m from ', f.read())

    again = _run_binary(*args)  # Everything done: nothing runs again.
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertEqual(again.stdout.count('done before, skipped'), 4)
    self.assertNotIn(': finished in ', again.stdout)

    (summary,) = glob.glob(os.path.join(out, 'tables', 'fedrecon_tutorial',
                                        'runs', 'tuned-*-seed1',
                                        'summary.json'))
    os.remove(summary)  # As if the run had been interrupted.
    resumed = _run_binary(*args)
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertEqual(resumed.stdout.count('done before, skipped'), 3)
    self.assertEqual(resumed.stdout.count(': finished in '), 1)
    self.assertIn('tuned-', resumed.stdout.split(': finished in ')[0]
                  .splitlines()[-1])

    # Records: the runs finished here are recorded; another output directory
    # (another machine) with the records runs nothing and gives the same
    # table; records of other data are refused before anything runs.
    records = os.path.join(out, 'records')
    recorded = _run_binary(*args, f'--records_dir={records}')
    self.assertEqual(recorded.returncode, 0, recorded.stderr[-3000:])
    self.assertEqual(recorded.stdout.count(': recorded in '), 4)
    self.assertLen(glob.glob(os.path.join(records, 'fedrecon_tutorial',
                                          '*-seed[01].json')), 4)
    elsewhere = os.path.join(out, 'elsewhere')
    rebuilt = _run_binary(*args[:-1], f'--output_dir={elsewhere}',
                          f'--records_dir={records}')
    self.assertEqual(rebuilt.returncode, 0, rebuilt.stderr[-3000:])
    self.assertEqual(rebuilt.stdout.count(': recorded before (git '), 4)
    self.assertNotIn(': finished in ', rebuilt.stdout)
    means = lambda root: [
        {k: v for k, v in row.items() if k.endswith(('_mean', '_std'))}
        for row in _read_csv(os.path.join(root, 'tables',
                                          'fedrecon_tutorial.csv'))]
    self.assertEqual(means(elsewhere), means(out))
    with open(os.path.join(data_dir, 'ratings.dat'), 'a') as f:
      f.write('1::80::5::978399999\n')  # Another corpus, the same path.
    refused = _run_binary(*args[:-1], f'--output_dir={elsewhere}2',
                          f'--records_dir={records}')
    self.assertEqual(refused.returncode, 1)
    (line,) = refused.stderr.strip().splitlines()
    self.assertRegex(line, r'^reproduce.py: error: \S+/records/'
                     r'fedrecon_tutorial/tutorial-\S+-seed0.json: recorded '
                     r'on other data \(content hash \w{12}, here \w{12}\): ')
    self.assertNotIn(': finished in ', refused.stdout)

  def test_user_mistakes_are_one_line(self):
    out = self.create_tempdir().full_path
    for args, message in (
        (['--table=fedrecon_tutorial', '--rounds=5'],
         'reproduce.py: error: --rounds: a table\'s settings are frozen in '
         'research/fedrec/tables/fedrecon_tutorial.json; only --dataset and '
         '--data_dir choose the corpus.'),
        (['--table=ranking_loo', '--rows=nope'],
         'reproduce.py: error: --rows: nope not in table ranking_loo (rows: '
         'popularity, fedmf, fedncf, neumf_fedrecon, autorec, '
         'centralized_neumf).'),
        (['--table=fedrecon_tutorial', '--dataset=ml-1m',
          '--data_dir=/nonexistent'],
         'reproduce.py: error: --data_dir=/nonexistent: no such directory '
         '(get ml-1m with: python data/download_movielens.py --corpus=ml-1m).'),
    ):
      result = _run_binary(*args, f'--output_dir={out}')
      self.assertEqual(result.returncode, 1, args)
      self.assertEqual(result.stderr.strip().splitlines(), [message])
    self.assertFalse(os.path.exists(os.path.join(out, 'tables',
                                                 'fedrecon_tutorial.md')))


if __name__ == '__main__':
  absltest.main()
