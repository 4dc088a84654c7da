"""The frozen tables of reproduce.py: their runs, statistics and outputs.

Outputs are computed from run results written by hand here; the binary runs
every table end to end in tests/reproduce_test.py.
"""

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

from absl.testing import absltest
from absl.testing import flagsaver

from research.fedrec import train
from research.fedrec.reporting import reproduction
from research.fedrec.training import experiment
from tests import binaries

_TABLES = ['bandit_contexts_ml100k', 'bandits_ml100k',
           'cold_start_ml100k', 'cold_start_ranking_ml100k',
           'cross_silo_ml100k', 'fedrecon_movielens', 'fedrecon_tutorial',
           'pfedrec_ml100k', 'privacy_utility', 'ranking_loo',
           'ratings_ml100k']
# t quantile 0.975 with 2 degrees of freedom (a printed t table's value).
_T_975_2 = 4.302652729749464


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


class TablesTest(absltest.TestCase):

  def test_the_tables(self):
    self.assertEqual(reproduction.table_names(), _TABLES)

  def test_every_run_of_every_table_is_a_valid_train_command(self):
    for name in _TABLES:
      table = reproduction.load_table(name)
      if table.binary != 'train':
        continue  # test_bandit_runs_are_valid_bandit_commands
      for scale in reproduction.SCALES:
        the_plan = reproduction.plan(table, scale, 2, 'synthetic', None, 'out')
        self.assertLen(the_plan.runs, len(table.rows) * len(table.common) * 2)
        for run in the_plan.unique_runs():
          with flagsaver.flagsaver():
            config = train.config_from_args(run.args)
          self.assertEqual(config.seed, run.seed)
          self.assertEqual(config.output_dir, run.directory)

  def test_bandit_runs_are_valid_bandit_commands(self):
    # bandit.py's flags share names with train.py's: parsed in a child.
    table = reproduction.load_table('bandits_ml100k')
    the_plan = reproduction.plan(table, 'paper', 2, 'atomic', 'data/ml',
                                 'out')
    runs = the_plan.unique_runs()
    self.assertLen(runs, 5 * 2)
    script = (
        'import json, sys\n'
        'from research.fedrec import bandit\n'
        'for args in json.loads(sys.argv[1]):\n'
        '  c = bandit.config_from_args(args)\n'
        '  print(json.dumps([c.output_dir, c.environment.seed, c.rounds, '
        'c.execution, c.target_epsilon, c.data.dataset, c.data.data_dir]))\n')
    result = subprocess.run(
        [sys.executable, '-c', script, json.dumps([list(r.args)
                                                  for r in runs])],
        capture_output=True, text=True, check=False, cwd=binaries.REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    targets = {'centralized': None, 'federated': None, 'eps8': 8,
               'eps4': 4, 'eps1': 1}
    for run, (output_dir, seed, rounds, execution, target, dataset,
              data_dir) in zip(runs, parsed):
      row = run.experiment.split('-')[0]
      self.assertEqual(output_dir, run.directory)
      self.assertEqual((seed, rounds, dataset, data_dir),
                       (run.seed, 500, 'atomic', 'data/ml'))
      self.assertEqual(execution, 'centralized' if row == 'centralized'
                       else 'federated')
      self.assertEqual(target, targets[row])
      self.assertTrue(run.command.startswith(
          'python -m research.fedrec.bandit --rounds=500 '))

  def _config(self, table, row, scale='paper', run='main'):
    the_plan = reproduction.plan(reproduction.load_table(table), scale, 1,
                                 'synthetic', None, 'out')
    with flagsaver.flagsaver():
      return train.config_from_args(the_plan.runs[(row, run, 0)].args)

  def test_the_tutorial_row_is_the_tutorial(self):
    config = self._config('fedrecon_tutorial', 'tutorial')
    self.assertEqual(config.data.max_users, 2000)
    self.assertEqual(config.pipeline.max_examples_per_user, 300)
    self.assertEqual((config.split.kind.value, config.split.val_fraction,
                      config.split.test_fraction),
                     ('user_disjoint', 0.1, 0.1))
    self.assertEqual((config.model.embedding_dim, config.model.use_biases,
                      config.model.l2), (50, False, 0.0))
    self.assertEqual((config.clients_per_round, config.loop.total_rounds,
                      config.pipeline.batch_size), (50, 20, 5))
    optimizers = config.optimizers
    self.assertEqual(
        (optimizers.client, optimizers.client_learning_rate,
         optimizers.server, optimizers.server_learning_rate,
         optimizers.reconstruction, optimizers.reconstruction_learning_rate),
        ('sgd', 0.5, 'sgd', 1.0, 'sgd', 0.1))
    self.assertEqual((config.recon.recon_epochs, config.recon.post_recon_epochs,
                      config.recon.split_dataset), (1, 1, False))
    synthetic = config.data.synthetic_config
    self.assertEqual((synthetic.num_users, synthetic.num_items,
                      synthetic.num_ratings), (6040, 3706, 1000209))

  def test_the_movielens_rows(self):
    config = self._config('fedrecon_movielens', 'fedrecon')
    self.assertEqual((config.clients_per_round, config.loop.total_rounds,
                      config.pipeline.batch_size), (100, 500, 5))
    self.assertEqual((config.recon.recon_epochs, config.recon.recon_steps_max,
                      config.recon.post_recon_epochs,
                      config.recon.post_recon_steps_max,
                      config.recon.split_dataset), (5, 50, 1, 50, True))
    the_plan = reproduction.plan(reproduction.load_table('fedrecon_movielens'),
                                 'paper', 3, 'synthetic', None, 'out')
    # FedAvg and FedAvg + fine-tuning are two results of one run.
    self.assertEqual(the_plan.runs[('fedavg', 'main', 1)],
                     the_plan.runs[('fedavg_finetuned', 'main', 1)])
    self.assertLen(the_plan.unique_runs(), 3 * 3)
    # Runs keep their directory when only some rows are asked for.
    only = reproduction.plan(reproduction.load_table('fedrecon_movielens'),
                             'paper', 3, 'synthetic', None, 'out',
                             ['fedavg_finetuned'])
    self.assertEqual(list(only.runs.values()),
                     [the_plan.runs[('fedavg', 'main', s)] for s in range(3)])
    self.assertTrue(self._config('fedrecon_movielens', 'fedavg').finetune)

  def test_the_fedrecon_neumf_row_is_the_readme_setting(self):
    config = self._config('ranking_loo', 'neumf_fedrecon')
    self.assertTrue(config.data.implicit)
    self.assertEqual((config.model_name,
                      config.clients_per_round, config.loop.total_rounds),
                     ('neumf', 50, 100))
    optimizers = config.optimizers
    self.assertEqual(
        (optimizers.client, optimizers.client_learning_rate,
         optimizers.server, optimizers.server_learning_rate,
         optimizers.server_schedule),
        ('sgd', 0.1, 'adam', 0.1, 'cosine'))
    self.assertEqual((config.recon.recon_epochs,
                      config.recon.evaluation_epochs), (3, 3))

  def test_pfedrec_rows_follow_their_protocol_under_both_samplings(self):
    table = reproduction.load_table('pfedrec_ml100k')
    for row in table.rows:
      published = self._config('pfedrec_ml100k', row.name, run='published')
      leak_free = self._config('pfedrec_ml100k', row.name, run='leak_free')
      # The two runs of a row differ in the training negatives alone.
      self.assertTrue(published.pipeline.exclude_heldout)
      self.assertFalse(leak_free.pipeline.exclude_heldout)
      self.assertEqual(
          dataclasses.replace(published, pipeline=leak_free.pipeline,
                              experiment_name=leak_free.experiment_name),
          leak_free)
      # PFedRec's train.py defaults: all 943 users every round, 100 rounds,
      # embedding 32, batch 256, client SGD, 4 negatives; leave-one-out, 99
      # evaluation negatives, the round of the best validation HR@10.
      self.assertEqual(
          (published.clients_per_round, published.loop.total_rounds,
           published.loop.eval_every, published.loop.select_by,
           published.model.embedding_dim, published.pipeline.batch_size,
           published.pipeline.num_negatives, published.ranking.eval_negatives,
           published.split.kind.value, published.optimizers.client),
          (943, 100, 1, 'sampled/hr@10', 32, 256, 4, 99, 'leave_one_out',
           'sgd'))
      if row.name.startswith('pfedrec'):
        # Their engine.py and train.py: one local epoch, SGD 0.1 for the
        # score function, 0.1 x 1682 x 80 for the item embeddings, a plain
        # average applied as is, no item bias.
        self.assertEqual(
            (published.pipeline.local_epochs,
             published.optimizers.client_learning_rate,
             published.method_settings['item_learning_rate_scale'],
             published.uniform_weighting, published.optimizers.server,
             published.optimizers.server_learning_rate,
             published.model.use_biases, published.aggregation.zeroing),
            (1, 0.1, 1682 * 80, True, 'sgd', 1.0, False, False))
      else:  # The rates chosen on validation (the table's `about`).
        self.assertEqual(published.optimizers.client_learning_rate, 1.0)
      if row.name.startswith('pfedrec_dp_eps'):
        self.assertEqual(published.dp.mechanism.value, 'adaptive')
        self.assertEqual(published.dp.target_epsilon,
                         float(row.name[len('pfedrec_dp_eps'):]))
        # Every user every round (q = 1): reachable on ML-100K's 943 users.
        accountant = experiment.resolve_privacy(published, 943,
                                                log=lambda _: None)
        accountant.compose(published.loop.total_rounds)
        self.assertAlmostEqual(accountant.epsilon,
                               published.dp.target_epsilon, places=2)
      else:
        self.assertFalse(published.dp.enabled)
    # The published values sit in the published protocol's columns.
    fedrecon = next(r for r in table.rows if r.name == 'fedrecon')
    self.assertEqual(fedrecon.reference,
                     {'published_hr10': 0.6445, 'published_ndcg10': 0.3778})
    pfedrec = next(r for r in table.rows if r.name == 'pfedrec')
    self.assertEqual(pfedrec.reference,
                     {'published_hr10': 0.7162, 'published_ndcg10': 0.4344})
    # Every federated row trains in cohorts.
    for row in ('fedrecon', 'fedncf', 'fedmf', 'pfedrec', 'fedrecon_dualper',
                'pfedrec_dp_eps1'):
      self.assertTrue(self._config('pfedrec_ml100k', row,
                                   run='published').in_cohorts)

  def test_ratings_rows_run_both_protocols_alike(self):
    table = reproduction.load_table('ratings_ml100k')
    self.assertEqual([r.name for r in table.rows], [
        'fedrecon', 'fedavg', 'fedavg_finetuned', 'fedprox', 'centralized'])
    for row in table.rows:
      holdout = self._config('ratings_ml100k', row.name, run='holdout')
      cold = self._config('ratings_ml100k', row.name, run='cold')
      # The two runs of a row differ in the split alone: per-user holdout
      # 80/10/10, or unseen users (80/10/10 of the users).
      self.assertEqual((holdout.split.kind.value, cold.split.kind.value),
                       ('holdout', 'user_disjoint'))
      self.assertEqual(
          dataclasses.replace(holdout, split=cold.split,
                              experiment_name=cold.experiment_name), cold)
      self.assertEqual((holdout.split.val_fraction,
                        holdout.split.test_fraction), (0.1, 0.1))
      self.assertFalse(holdout.data.implicit)
      if row.name != 'centralized':
        # Chosen on validation RMSE; the federated rows run in cohorts.
        self.assertEqual(holdout.loop.select_by, 'rmse')
        self.assertTrue(holdout.in_cohorts)
        self.assertEqual((holdout.clients_per_round,
                          holdout.loop.total_rounds), (100, 300))
      # FedAvg and FedProx are fine-tuned too: unseen users have no row.
      self.assertEqual(cold.finetune, row.name.startswith('fedavg') or
                       row.name == 'fedprox')

  def test_privacy_rows_target_their_epsilon(self):
    for epsilon in (1, 2, 4, 8, 16):
      configs = [self._config('privacy_utility', f'eps{epsilon}', run=run)
                 for run in ('explicit', 'implicit')]
      for config, implicit in zip(configs, (False, True)):
        self.assertEqual(config.dp.mechanism.value, 'adaptive')
        self.assertEqual(config.dp.target_epsilon, epsilon)
        self.assertEqual(config.data.implicit, implicit)
      # Both runs release the same mechanism (DP settings, users per round
      # and their sampling, rounds), so one calibration holds for both.
      explicit, implicit = configs
      self.assertEqual(explicit.dp, implicit.dp)
      self.assertEqual(explicit.sampling, implicit.sampling)
      self.assertEqual(explicit.silos, implicit.silos)
      self.assertEqual(explicit.clients_per_round, implicit.clients_per_round)
      self.assertEqual(explicit.loop.total_rounds, implicit.loop.total_rounds)
      # Reachable at paper scale on ML-100K's 943 users: the calibrated
      # noise fits TFF's adaptive split (clients per round > 10 z; at 50
      # clients epsilon 1 needed z = 5.07 and was refused).
      accountant = experiment.resolve_privacy(explicit, 943,
                                              log=lambda _: None)
      accountant.compose(explicit.loop.total_rounds)
      self.assertAlmostEqual(accountant.epsilon, epsilon, places=2)
    self.assertFalse(self._config('privacy_utility', 'nodp',
                                  run='explicit').dp.enabled)

  def test_bad_names_are_one_line(self):
    with self.assertRaisesRegex(ValueError, r'^--table=nope: no such table '
                                r'\(choose from bandit_contexts_ml100k, bandits_ml100k, '):
      reproduction.load_table('nope')
    table = reproduction.load_table('ranking_loo')
    with self.assertRaisesRegex(ValueError, r'^--rows: x not in table '
                                'ranking_loo'):
      reproduction.plan(table, 'smoke', 1, 'synthetic', None, 'o', ['x'])
    with self.assertRaisesRegex(ValueError, '^--scale=huge'):
      reproduction.plan(table, 'huge', 1, 'synthetic', None, 'o')


class StatsTest(absltest.TestCase):

  def test_mean_std_and_student_t_interval(self):
    stats = reproduction.Stats.of([0.30, 0.32, 0.31])
    self.assertEqual(stats.n, 3)
    self.assertAlmostEqual(stats.mean, 0.31, places=12)
    self.assertAlmostEqual(stats.std, 0.01, places=12)
    self.assertAlmostEqual(stats.ci95, _T_975_2 * 0.01 / math.sqrt(3),
                           places=9)
    self.assertTrue(stats.contains(0.31 + 0.024))
    self.assertFalse(stats.contains(0.31 + 0.025))

  def test_one_seed_and_missing_values(self):
    one = reproduction.Stats.of([0.5, None])
    self.assertEqual((one.n, one.mean), (1, 0.5))
    self.assertTrue(math.isnan(one.std) and math.isnan(one.ci95))
    self.assertFalse(one.contains(0.5))
    self.assertIsNone(reproduction.Stats.of([None, None]))


class OutputsTest(absltest.TestCase):
  """Outputs of a table from finished runs (written here, not trained)."""

  def _finish(self, run, test_metrics, val_mse):
    os.makedirs(run.directory)
    with open(run.summary_path, 'w') as f:
      json.dump({'algorithm': 'fedrecon', 'test_metrics': test_metrics,
                 'privacy': {'mechanism': 'none'}}, f)
    with open(os.path.join(run.directory, 'metrics.csv'), 'w') as f:
      f.write('round,val/mse,val/rating_accuracy\n')
      f.write(f'5,{val_mse + 1},0.2\n10,{val_mse},0.3\n')

  def test_tutorial_table_on_its_published_corpus(self):
    out = self.create_tempdir().full_path
    the_plan = reproduction.plan(
        reproduction.load_table('fedrecon_tutorial'), 'paper', 3, 'ml-1m',
        'data/ml-1m', out)
    accuracy = {'tutorial': [0.312, 0.314, 0.316], 'tuned': [0.40, 0.41, 0.42]}
    for row in ('tutorial', 'tuned'):
      for seed in range(3):
        metrics = {'rating_accuracy': accuracy[row][seed], 'mse': 1.9 + seed,
                   'rmse': 1.4}
        self._finish(the_plan.runs[(row, 'main', seed)],
                     {'fedrecon': metrics}, 2.5 + 0.01 * seed)
    ran = []
    reproduction.execute(the_plan, ran.append, log=lambda m: None)
    self.assertEqual(ran, [])  # Everything had finished: nothing re-runs.
    report = reproduction.collect(the_plan)
    paths = reproduction.write_outputs(report)

    rows = _read_csv(paths['csv'])
    self.assertEqual([r['row'] for r in rows], ['tutorial', 'tuned'])
    self.assertAlmostEqual(float(rows[0]['rating_accuracy_mean']), 0.314)
    self.assertAlmostEqual(float(rows[0]['rating_accuracy_std']), 0.002)
    half = _T_975_2 * 0.002 / math.sqrt(3)
    self.assertAlmostEqual(float(rows[0]['rating_accuracy_ci95_low']),
                           0.314 - half, places=9)
    self.assertAlmostEqual(float(rows[0]['val_mse_mean']), 2.51)  # Last round.
    self.assertEqual(rows[0]['rating_accuracy_reference'], '0.313')
    self.assertEqual(rows[1]['rating_accuracy_reference'], '')
    self.assertEqual(rows[0]['command'],
                     'python -m research.fedrec.reproduce '
                     '--table=fedrecon_tutorial --scale=paper --seeds=3 '
                     f'--dataset=ml-1m --data_dir=data/ml-1m --output_dir={out}'
                     ' --rows=tutorial')
    self.assertEqual(rows[0]['git_commit'], report.commit)
    try:
      head = subprocess.run(['git', '-C', binaries.REPO_ROOT, 'rev-parse',
                             '--short=12', 'HEAD'], capture_output=True,
                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      head = 'unknown (not a git checkout)'
    self.assertEqual(report.commit.split(' + ')[0], head)

    runs = _read_csv(paths['runs_csv'])
    self.assertLen(runs, 6)
    self.assertEqual(runs[4]['seed'], '1')
    self.assertEqual(float(runs[4]['rating_accuracy']), 0.41)
    self.assertIn('--seed=1 ', runs[4]['main_command'])
    self.assertStartsWith(runs[4]['main_command'],
                          'python -m research.fedrec.train ')

    with open(paths['md']) as f:
      md = f.read()
    # Published values inside / outside our interval are marked as such.
    self.assertIn('| FedRecon, the tutorial\'s settings | 0.3140 ± '
                  f'{half:.4f} |', md)
    self.assertIn('| 0.3130 (in our CI) | 1.9430 (in our CI) | '
                  '0.3126 (outside our CI) | 2.0305 (outside our CI) |', md)
    self.assertIn('Regenerated ', md)
    with open(paths['tex']) as f:
      tex = f.read()
    self.assertIn(r'\toprule', tex)
    self.assertIn(r'$0.3140 \pm ' + f'{half:.4f}$', tex)
    self.assertGreater(os.path.getsize(paths['png']), 10_000)

  def test_references_on_another_corpus_are_not_checked(self):
    the_plan = reproduction.plan(
        reproduction.load_table('fedrecon_tutorial'), 'smoke', 3,
        'synthetic', None, self.create_tempdir().full_path, ['tutorial'])
    for seed in range(3):
      self._finish(the_plan.runs[('tutorial', 'main', seed)],
                   {'fedrecon': {'rating_accuracy': 0.313, 'mse': 1.943,
                                 'rmse': 1.39}}, 2.0)
    md = reproduction.markdown(reproduction.collect(the_plan))
    self.assertIn('| 0.3130 | 1.9430 | 0.3126 | 2.0305 |', md)
    self.assertIn('this run used another corpus, so they are context', md)
    self.assertNotIn('in our CI)', md)

  def test_atomic_files_of_the_published_corpus_are_checked(self):
    # RecBole's ml-100k atomic files are MovieLens-100K: the corpus of
    # pfedrec_ml100k's published values, whichever reader opens it.
    data_dir = self.create_tempdir()
    data_dir.create_file('ml-100k.inter', 'user_id:token\titem_id:token\n')
    table = reproduction.load_table('pfedrec_ml100k')
    out = self.create_tempdir().full_path
    on_atomic = reproduction.plan(table, 'smoke', 1, 'atomic',
                                  data_dir.full_path, out)
    self.assertEqual(on_atomic.corpus, 'ml-100k')
    other = self.create_tempdir()
    other.create_file('yelp.inter', 'user_id:token\titem_id:token\n')
    self.assertEqual(reproduction.plan(table, 'smoke', 1, 'atomic',
                                       other.full_path, out).corpus, 'yelp')
    self.assertEqual(reproduction.plan(table, 'smoke', 1, 'synthetic', None,
                                       out).corpus, 'synthetic')
    # A directory without atomic files: the dataset's name (the run itself
    # reports the missing files).
    self.assertEqual(reproduction.plan(table, 'smoke', 1, 'atomic',
                                       out + '/missing', out).corpus,
                     'atomic')

  def test_time_left_closed_form(self):
    self.assertEqual([reproduction.format_duration(t) for t in (
        44.6, 59.6, 720, 3599, 11100)],
                     ['45 s', '1 min', '12 min', '1 h 00 min', '3 h 05 min'])
    run = lambda name: reproduction.Run(name, '/r', 0, ())
    pending = [run('a-main-1-seed3'), run('b-main-2-seed0'),
               run('c-main-3-seed0')]
    self.assertIsNone(reproduction.time_left(pending, {}))
    # a at its mean 15; b and c, not timed yet, at the mean of all timed runs.
    self.assertEqual(reproduction.time_left(
        pending, {'a-main-1': [10.0, 20.0]}), 45.0)
    self.assertAlmostEqual(reproduction.time_left(
        pending, {'a-main-1': [10.0, 20.0], 'b-main-2': [40.0]}),
                           15.0 + 40.0 + 70.0 / 3)

  def test_each_run_says_how_long_the_rest_should_take(self):
    out = self.create_tempdir().full_path
    the_plan = reproduction.plan(
        reproduction.load_table('fedrecon_tutorial'), 'smoke', 2,
        'synthetic', None, out)

    def run_fn(run):
      self._finish(run, {'fedrecon': {'rating_accuracy': 0.3, 'mse': 1.0,
                                      'rmse': 1.0}}, 2.0)

    ticks = iter([0.0, 10.0, 10.0, 40.0, 40.0, 140.0, 140.0, 240.0])
    logged = []
    reproduction.execute(the_plan, run_fn, log=logged.append,
                         clock=lambda: next(ticks))
    # The tutorial row's seeds take 10 s and 30 s, the tuned row's 100 s.
    self.assertEqual([m for m in logged if ' left: ' in m], [
        '3 runs left: about 30 s more, at the durations so far.',
        '2 runs left: about 40 s more, at the durations so far.',
        '1 run left: about 2 min more, at the durations so far.'])
    self.assertTrue(logged[-1].endswith(': finished in 100 s.'), logged[-1])

  def test_a_run_that_diverges_is_a_result_not_an_error(self):
    # fedrecon_movielens's FedAvg row diverges on real ML-100K: its seeds
    # are recorded, skipped when the table is run again, left out of the
    # statistics and named in the outputs, while the other runs go on.
    out = self.create_tempdir().full_path
    the_plan = reproduction.plan(
        reproduction.load_table('fedrecon_tutorial'), 'smoke', 3,
        'synthetic', None, out)
    message = ('round 9: the training loss is nan (the model diverged); '
               'lower --client_learning_rate / --server_learning_rate.')

    def run_fn(run):
      if run.experiment.startswith('tutorial') and run.seed != 1:
        return message
      self._finish(run, {'fedrecon': {'rating_accuracy': 0.30 + run.seed,
                                      'mse': 1.0, 'rmse': 1.0}}, 2.0)
      return None

    logged = []
    reproduction.execute(the_plan, run_fn, log=logged.append)
    tutorial = [the_plan.runs[('tutorial', 'main', seed)] for seed in range(3)]
    self.assertEqual([run.divergence() for run in tutorial],
                     [message, None, message])
    self.assertFalse(os.path.exists(tutorial[0].directory))
    self.assertIn(f'[1/6] {tutorial[0].experiment}: diverged after ', logged[1])
    self.assertTrue(logged[1].endswith(f': {message}'), logged[1])
    again = []
    reproduction.execute(the_plan, again.append, log=logged.append)
    self.assertEqual(again, [])  # Diverged or finished: nothing re-runs.
    self.assertEqual(logged[-6], f'[1/6] {tutorial[0].experiment}: diverged '
                     f'before ({message}), skipped.')

    report = reproduction.collect(the_plan)
    self.assertEqual(report.values[('tutorial', 'rating_accuracy')],
                     [None, 1.30, None])
    self.assertEqual(report.stats[('tutorial', 'rating_accuracy')].n, 1)
    self.assertEqual(report.diverged[('tutorial', 'rating_accuracy')], [0, 2])
    self.assertEqual(report.diverged[('tuned', 'rating_accuracy')], [])
    paths = reproduction.write_outputs(report)
    with open(paths['md']) as f:
      md = f.read()
    self.assertIn("| FedRecon, the tutorial's settings | 1.3000 (1 of 3 seeds; "
                  'the others diverged) |', md)
    self.assertIn(f'- `{tutorial[2].experiment}`: {message}', md)
    rows = _read_csv(paths['csv'])
    self.assertEqual([r['diverged_seeds'] for r in rows], ['0 2', ''])
    runs = _read_csv(paths['runs_csv'])
    self.assertEqual([r['diverged'] for r in runs[:3]], [message, '', message])
    with open(paths['tex']) as f:
      self.assertIn(r'$1.3000^\dagger$', f.read())
    # A row whose every seed diverged reads "diverged".
    os.remove(tutorial[1].summary_path)
    with open(tutorial[1].diverged_path, 'w') as f:
      f.write(message + '\n')
    grid = reproduction.markdown_grid(reproduction.collect(the_plan))
    self.assertIn("| FedRecon, the tutorial's settings | diverged | diverged |",
                  grid)

  def test_records_carry_a_table_across_machines(self):
    # Machine A runs the table with records; machine B has only the
    # records (its run directories are gone) and rebuilds the same table
    # without running anything.
    records = self.create_tempdir().full_path
    table = reproduction.load_table('fedrecon_tutorial')
    here = reproduction.plan(table, 'smoke', 3, 'synthetic', None,
                             self.create_tempdir().full_path,
                             records_dir=records)
    message = 'round 3: the training loss is nan (the model diverged).'

    def run_fn(run):
      if run.experiment.startswith('tuned') and run.seed == 2:
        return message
      self._finish(run, {'fedrecon': {'rating_accuracy': 0.3 + run.seed,
                                      'mse': 1.0, 'rmse': 1.0}},
                   2.0 + run.seed)
      with open(os.path.join(run.directory, 'hparams.json'), 'w') as f:
        json.dump({'data_hash': 'ab' * 32}, f)
      return None

    # (The hash of a diverged run, whose directory is gone: data_hash's.)
    reproduction.execute(here, run_fn, log=lambda m: None,
                         data_hash=lambda run: 'ab' * 32)
    self.assertEqual(here.runs[('tuned', 'main', 2)].record()['data_hash'],
                     'ab' * 32)
    first = here.runs[('tutorial', 'main', 1)]
    with open(os.path.join(records, 'fedrecon_tutorial',
                           first.experiment + '.json')) as f:
      record = json.load(f)
    self.assertEqual(record['summary']['test_metrics'],
                     {'fedrecon': {'rating_accuracy': 1.3, 'mse': 1.0,
                                   'rmse': 1.0}})
    # The table's val columns and figure column, as metrics.csv has them.
    self.assertEqual(record['curves'], {
        'val/mse': [[5, 4.0], [10, 3.0]],
        'val/rating_accuracy': [[5, 0.2], [10, 0.3]]})
    self.assertEqual((record['seed'], record['command'], record['data_hash'],
                      record['diverged']),
                     (1, first.command, 'ab' * 32, None))
    self.assertEqual(record['commit'], reproduction.git_commit())
    report_here = reproduction.collect(here)

    there = reproduction.plan(table, 'smoke', 3, 'synthetic', None,
                              self.create_tempdir().full_path,
                              records_dir=records)
    with self.assertRaisesRegex(
        ValueError, r'^\S+/fedrecon_tutorial/tutorial-main-\w+-seed0\.json: '
        r'recorded on other data \(content hash abababababab, here '
        r'cdcdcdcdcdcd\): '):
      reproduction.execute(there, self.fail, log=lambda m: None,
                           data_hash=lambda run: 'cd' * 32)
    logged = []
    reproduction.execute(there, self.fail, log=logged.append,
                         data_hash=lambda run: 'ab' * 32)
    self.assertLen(logged, 6)
    self.assertTrue(logged[5].endswith(
        f'recorded before (git {record["commit"]}, {record["date"]}, '
        'diverged), skipped.'), logged[5])
    report_there = reproduction.collect(there)
    self.assertEqual(report_there.values, report_here.values)
    self.assertEqual(report_there.values[('tutorial', 'val_mse')],
                     [2.0, 3.0, 4.0])
    self.assertEqual(report_there.diverged[('tuned', 'mse')], [2])
    self.assertEqual(report_there.recorded,
                     ((record['commit'], (record['date'],)),))
    paths = reproduction.write_outputs(report_there)
    values = lambda path: [{k: v for k, v in line.items()
                            if not k.endswith('_command')}
                           for line in _read_csv(path)]
    self.assertEqual(values(paths['runs_csv']), values(
        reproduction.write_outputs(report_here)['runs_csv']))
    with open(paths['md']) as f:
      md = f.read()
    self.assertIn(f"Built from the runs' records in {records}/"
                  f'fedrecon_tutorial/; the runs were made at git '
                  f'{record["commit"]} ({record["date"]}).', md)
    self.assertIn(f'--records_dir={records}', md)
    self.assertIn(f'- `{there.runs[("tuned", "main", 2)].experiment}`: '
                  f'{message}', md)
    self.assertGreater(os.path.getsize(paths['png']), 10_000)

  def test_runs_finished_before_the_records_are_recorded(self):
    out = self.create_tempdir().full_path
    table = reproduction.load_table('fedrecon_tutorial')
    the_plan = reproduction.plan(table, 'smoke', 1, 'synthetic', None, out)
    reproduction.execute(the_plan, lambda run: self._finish(
        run, {'fedrecon': {'rating_accuracy': 0.5, 'mse': 1.0, 'rmse': 1.0}},
        2.0), log=lambda m: None)
    records = self.create_tempdir().full_path
    recorded = reproduction.plan(table, 'smoke', 1, 'synthetic', None, out,
                                 records_dir=records)
    logged = []
    reproduction.execute(recorded, self.fail, log=logged.append)
    run = recorded.runs[('tutorial', 'main', 0)]
    self.assertEqual(logged[:2], [
        f'[1/2] {run.experiment}: done before, skipped.',
        f'[1/2] {run.experiment}: recorded in {run.record_path}.'])
    shutil.rmtree(os.path.join(out, 'tables'))
    self.assertEqual(reproduction.collect(recorded).values[
        ('tutorial', 'rating_accuracy')], [0.5])

  def test_a_broken_record_is_one_line(self):
    records = self.create_tempdir()
    the_plan = reproduction.plan(
        reproduction.load_table('fedrecon_tutorial'), 'smoke', 1,
        'synthetic', None, self.create_tempdir().full_path,
        records_dir=records.full_path)
    run = the_plan.runs[('tutorial', 'main', 0)]
    records.create_file(os.path.join('fedrecon_tutorial',
                                     run.experiment + '.json'), '{"format": 1')
    with self.assertRaisesRegex(ValueError, '^' + re.escape(
        f'{run.record_path}: not a record of run {run.experiment} (')):
      reproduction.execute(the_plan, self.fail, log=lambda m: None)


if __name__ == '__main__':
  absltest.main()
