"""Smoke tests of the recommend.py binary on a tiny trained run's export."""

import json
import os
import re
import subprocess
import shutil
import sys
import dataclasses
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
from scipy import sparse

from research.fedrec import recommend
from research.fedrec.algorithms import client_states
from research.fedrec.data import corpus
from research.fedrec.data import side_info
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.evaluation import ranking
from research.fedrec.evaluation import scoring
from research.fedrec.inference import demographics
from research.fedrec.inference import export
from research.fedrec.inference import from_keras
from research.fedrec.inference import implicit
from research.fedrec.inference import reconstruction
from research.fedrec.inference import recommender as recommender_lib
from research.fedrec.models import mf_features
from research.fedrec.privacy import accounting
from research.fedrec.privacy import settings as privacy_settings
from research.fedrec.models import ncf
from research.fedrec.models import ncf_features
from research.fedrec.training import experiment
from research.fedrec.training import loop
from research.fedrec.training import runtime
from research.fedrec.training import trained
from tests import binaries

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
    num_users=30, num_items=40, num_ratings=900, min_ratings_per_user=10))
# Ratings >= 4 are interactions.
_IMPLICIT_DATA = dataclasses.replace(_DATA, feedback=corpus.Feedback.IMPLICIT,
                                     implicit_threshold=4.0)


def _main(*args):
  """Runs recommend.py's main in this process: (exit code, stdout, stderr)."""
  return binaries.run_main(recommend, *args)


def _run(*args, code=None):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # As from a user's shell.
  command = (['-c', code] if code else
             ['-m', 'research.fedrec.recommend', *args])
  return subprocess.run([sys.executable, *command], capture_output=True,
                        text=True, env=env, cwd=_REPO_ROOT, timeout=300,
                        check=False)


class _TrainedRunTest(absltest.TestCase):
  """Trains `_config(root)` once for the class; tests use its export."""

  @classmethod
  def _config(cls, root) -> experiment.ExperimentConfig:
    raise NotImplementedError

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='fedrec_test_')
    config = cls._config(cls.root)
    experiment.run_experiment(config, log=lambda _: None)
    runtime.release()
    cls.flag = f'--experiment_dir={config.output_dir}'
    cls.ratings = corpus.load_corpus(config.data).ratings  # Dense = raw - 1.

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _json(self, *args):
    code, out, err = _main(self.flag, '--format=json', *args)
    self.assertEqual(code, 0, err)
    return json.loads(out)

  def _assert_runs_without_tff(self, *args):
    result = _run(code=(
        'import runpy, sys\n'
        f'sys.argv = ["recommend", "{self.flag}", *{list(args)!r}]\n'
        'try:\n'
        '  runpy.run_module("research.fedrec.recommend", '
        'run_name="__main__")\n'
        'except SystemExit:\n'
        '  pass\n'
        'print("tensorflow_federated" in sys.modules)\n'))
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertEqual(result.stdout.strip().splitlines()[-1], 'False')
    return result.stdout


class RecommendTest(_TrainedRunTest):

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='recommend_smoke', data=_DATA,
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False)

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    counts = np.bincount(cls.ratings.users)
    # The lightest users (raw ids), who leave the most items to recommend.
    cls.light = [int(u) + 1 for u in np.argsort(counts, kind='stable')[:2]]

  def test_known_user_excludes_rated_items(self):
    user = self.light[0]
    result = self._json(f'--user_id={user}', '--k=5')
    rated = {int(i) + 1
             for i in self.ratings.items[self.ratings.users == user - 1]}
    items = [r['item'] for r in result['recommendations']]
    self.assertLen(items, 5)
    self.assertEmpty(rated & set(items))
    self.assertEqual(result['rated_items'], len(rated))
    scores = [r['predicted_rating'] for r in result['recommendations']]
    self.assertEqual(scores, sorted(scores, reverse=True))
    self.assertTrue(all(r['title'] for r in result['recommendations']))
    self.assertEqual(result, self._json(f'--user_id={user}', '--k=5'))
    # k beyond the unrated items returns them all and says so.
    everything = self._json(f'--user_id={user}', '--k=1000')
    self.assertLen(everything['recommendations'], 40 - len(rated))
    self.assertIn('unrated items left', everything['note'])

  def test_table_output(self):
    user = self.light[0]
    result = _run(self.flag, f'--user_id={user}', '--k=3')
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = result.stdout.strip().splitlines()
    self.assertStartsWith(lines[0],
                          f'Top 3 for user {user} (fedrecon on synthetic')
    self.assertEqual(lines[1].split()[:3], ['rank', 'item',
                                            'predicted_rating'])
    self.assertLen(lines, 6)  # Heading, header, 3 rows, note.

  def test_cold_start_from_flag_file_and_nothing(self):
    given = self._json('--ratings=1:5,2:1', '--k=4')
    self.assertEqual(given['given_ratings'], 2)
    self.assertNotIn(1, [r['item'] for r in given['recommendations']])
    path = os.path.join(self.create_tempdir().full_path, 'mine.csv')
    with open(path, 'w') as f:
      f.write('item,rating\n1,5\n\n# comment\n2,1\n')
    self.assertEqual(self._json(f'--ratings_file={path}', '--k=4'), given)
    nothing = self._json('--ratings=', '--k=4')
    self.assertIn('no ratings given', nothing['note'])
    self.assertLen(nothing['recommendations'], 4)

  def test_group(self):
    a, b = self.light
    result = self._json(f'--group={a},{b}', '--group_strategy=least_misery',
                        '--k=3')
    rated = {int(i) + 1 for i in self.ratings.items[
        (self.ratings.users == a - 1) | (self.ratings.users == b - 1)]}
    self.assertLen(result['recommendations'], 3)
    for row in result['recommendations']:
      self.assertNotIn(row['item'], rated)
      self.assertAlmostEqual(row['group_score'],
                             min(row[f'user_{a}'], row[f'user_{b}']),
                             places=4)
    self.assertEqual(result['excluded_items'], len(rated))

  def test_runs_without_tff(self):
    self._assert_runs_without_tff('--user_id=1')

  def test_user_mistakes_are_one_line(self):
    for args, message in (
        (['--user_id=999'], '--user_id=999: no such user in synthetic '
         '(ids 1..30).'),
        (['--user_id=1', '--k=0'], '--k=0 must be >= 1.'),
        (['--group='], '--group is empty: list at least one user id.'),
        (['--group=1,31'], '--group=31: no such user in synthetic (ids '
         '1..30).'),
        (['--ratings=1:6'], '--ratings 1:6: rating 6 is off the scale of '
         'synthetic (1 to 5 in steps of 1).'),
        (['--ratings=1:4.5'], '--ratings 1:4.5: rating 4.5 is off the scale '
         'of synthetic (1 to 5 in steps of 1).'),
        (['--ratings=77:4'], "--ratings 77:4: no item '77' in synthetic."),
        (['--ratings=1:4,1:5'], '--ratings 1:5: item 1 is rated twice (also '
         'at --ratings 1:4).'),
        (['--user_id=1', '--group=2'], 'Give exactly one of --user_id, '
         '--ratings (or --ratings_file), --group and --demographics (got '
         '--user_id, --group).'),
        (['--demographics=age=30'], '--demographics=\'age=30\': the '
         'corpus the model was trained on has no user demographics (ml-100k, '
         'ml-1m and atomic corpora with a .user file have them).'),
        (['--demographics=age'], "--demographics='age': 'age' is not "
         'field=value (e.g. age=25,gender=F,occupation=student).'),
    ):
      code, out, err = _main(self.flag, *args)
      self.assertEqual((code, out), (1, ''), args)
      self.assertEqual(err.strip().splitlines(),
                       [f'recommend.py: error: {message}'])
    binary_file = os.path.join(self.create_tempdir().full_path, 'r.csv')
    with open(binary_file, 'wb') as f:
      f.write(b'1,4\n\xff\xfe,5\n')
    code, _, err = _main(self.flag, f'--ratings_file={binary_file}')
    self.assertEqual(code, 1)
    self.assertEqual(err.strip().splitlines(), [
        f'recommend.py: error: {binary_file}: not a UTF-8 text CSV of '
        'item,rating (byte 4: invalid start byte).'])
    # And from the shell, with TensorFlow's start-up output around it:
    result = _run('--experiment_dir=/nonexistent', '--user_id=1')
    self.assertEqual(result.returncode, 1)
    self.assertEqual(result.stderr.strip(), 'recommend.py: error: '
                     '--experiment_dir=/nonexistent: no such directory.')


def _write_atomic_corpus(folder: str) -> corpus.DataConfig:
  """A RecBole atomic corpus (.inter, .user) of 30 users, 40 items: the
  synthetic corpus's ratings, demographics drawn at random."""
  os.makedirs(folder, exist_ok=True)
  table = corpus.load_corpus(_DATA).ratings
  rng = np.random.default_rng(3)
  with open(os.path.join(folder, 'tiny.inter'), 'w') as f:
    f.write('user_id:token\titem_id:token\trating:float\ttimestamp:float\n')
    for u, i, r, t in zip(table.users, table.items, table.ratings,
                          table.timestamps):
      f.write(f'{u + 1}\t{i + 1}\t{r:g}\t{t:g}\n')
  with open(os.path.join(folder, 'tiny.user'), 'w') as f:
    f.write('user_id:token\tage:token\tgender:token\toccupation:token\n')
    for u in range(30):
      f.write(f'{u + 1}\t{rng.integers(12, 70)}\t{"MF"[u % 2]}\t'
              f'{("writer", "student", "artist")[u % 3]}\n')
  return corpus.DataConfig(dataset=corpus.ATOMIC, data_dir=folder)


def _reference_map(info, users, targets):
  """The ridge attribute map of `users` (rows of `info`) to their parts
  `targets`, by augmented least squares (a reference solver): one-hot
  columns of each field's values over all of `info` (ages in bands), then
  the intercept. Returns (new user's row of attributes -> its parts)."""
  columns = [(f, v) for f in ('age', 'gender', 'occupation')
             for v in sorted({side_info.age_band(x) if f == 'age' else x
                              for x in info.fields[f]})]

  def z(attributes):
    return [float((side_info.age_band(attributes.get(f, ''))
                   if f == 'age' else attributes.get(f, '')) == v)
            for f, v in columns] + [1.0]

  rows = np.array([z({f: info.fields[f][u] for f in info.fields})
                   for u in users])
  n = len(columns)
  weights = np.linalg.lstsq(
      np.concatenate([rows, np.eye(n + 1)[:n] *
                      np.sqrt(demographics.DEFAULT_L2)]),
      np.concatenate([targets, np.zeros((n, targets.shape[1]))]),
      rcond=None)[0]
  return lambda attributes: np.array(z(attributes)) @ weights


class DemographicsTest(_TrainedRunTest):
  """A new user known only by demographics (FedRecon, explicit)."""

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='demographics',
        data=_write_atomic_corpus(os.path.join(root, 'tiny')),
        split=splits.SplitConfig(kind=splits.SplitKind.USER_DISJOINT,
                                 val_fraction=0.2, test_fraction=0.2),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False)

  def test_evaluate_compares_how_new_users_are_served(self):
    config = self._config(self.root)
    with runtime.local_runtime(False):
      run = trained.load_run(config.output_dir)
    new = trained.new_users(run, 'test')
    overall = trained.evaluate_run(run, 'test').overall
    data = corpus.load_corpus(config.data)
    split = splits.split(data.ratings, config.split)
    query = split.test.query
    self.assertEqual((new['users'], new['ratings'], new['map_users']),
                     (len(np.unique(query.users)), len(query),
                      len(np.unique(split.train.users))))
    model = export.load_export(
        os.path.join(config.output_dir, 'export')).model
    # The run's own evaluation is the support-ratings row.
    self.assertAlmostEqual(new['rmse']['support ratings'], overall['rmse'],
                           places=6)
    # The average user: b_i + g.
    self.assertAlmostEqual(
        new['rmse']['average user (b_i + g)'],
        float(np.sqrt(np.mean((model.item_bias[query.items] +
                               model.global_bias - query.ratings) ** 2))),
        places=5)
    self.assertLen(new['rmse'], 5)
    self.assertEqual(new['fields'], ['age', 'gender', 'occupation'])
    # Served from the export's user prior: its mean user.
    self.assertEqual((new['prior'], new['prior_noise_std']),
                     ("the export's", 0.0))
    mean = export.load_export(os.path.join(
        config.output_dir, 'export')).user_prior.mean_row()
    predicted = (model.item_embeddings[query.items] @ mean[:-1] + mean[-1] +
                 model.item_bias[query.items] + model.global_bias)
    self.assertAlmostEqual(
        new['rmse']['mean training user'],
        float(np.sqrt(np.mean((predicted - query.ratings) ** 2))), places=5)
    # evaluate.py prints the comparison and writes it to test.json.
    out = self.create_tempdir().full_path
    result = binaries.run_binary('evaluate', self.flag, f'--output_dir={out}')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn(f'New users ({new["users"]} test users who never trained',
                  result.stdout)
    self.assertIn('demographics alone', result.stdout)
    with open(os.path.join(out, 'test.json')) as f:
      written = json.load(f)['new_users']
    for name, value in new['rmse'].items():
      self.assertAlmostEqual(written['rmse'][name], value, places=6)

  def test_a_new_user_is_served_from_the_attribute_map(self):
    config = self._config(self.root)
    data = corpus.load_corpus(config.data)
    info = data.user_info(config.data)
    exported = export.load_export(os.path.join(config.output_dir, 'export'))
    model = exported.model
    dense = {int(raw): i for i, raw in enumerate(data.id_maps.raw_items)}
    # The training users, each reconstructed from its training ratings as
    # its device would: the sums of the export's user prior.
    split = splits.split(data.ratings, config.split)
    users = np.unique(split.train.users)
    vectors, biases = reconstruction.reconstruct(
        model, *splits.ratings_by_user(split.train, users), exported.settings)
    targets = np.concatenate([vectors, biases[:, None]], axis=1)
    prior = exported.user_prior
    self.assertEqual(prior.num_users, len(users))
    encoder = side_info.DemographicEncoder.fit(info)
    gram, cross = demographics.sums(encoder.encode(info)[users], targets)
    np.testing.assert_array_equal(prior.gram, gram)
    np.testing.assert_allclose(prior.cross, cross, rtol=1e-5, atol=1e-6)
    # No rating: the mean training user.
    mean = targets.mean(axis=0)
    expected = (model.item_embeddings @ mean[:-1] + mean[-1] +
                model.item_bias + model.global_bias)
    nothing = self._json('--ratings=', '--k=40')
    for row in nothing['recommendations']:
      self.assertAlmostEqual(row['predicted_rating'],
                             float(expected[dense[row['item']]]), places=3)
    self.assertEqual(nothing['note'], (
        'no ratings given: ranked by the model\'s rating for the mean of its '
        f'{len(users)} training users (their vectors and biases), ties by '
        'popularity'))
    mapped = _reference_map(info, users, targets)
    for age, gender, job in (('30', 'F', 'writer'), ('61', 'M', 'student')):
      result = self._json(
          f'--demographics=age={age},gender={gender},occupation={job}',
          '--k=40')
      out = mapped(dict(age=age, gender=gender, occupation=job))
      expected = (model.item_embeddings @ out[:-1] + out[-1] +
                  model.item_bias + model.global_bias)
      self.assertEqual(result['mode'], 'new_user_demographics')
      self.assertLen(result['recommendations'], 40)  # Nothing rated.
      for row in result['recommendations']:
        self.assertAlmostEqual(row['predicted_rating'],
                               float(expected[dense[row['item']]]), places=3)
      self.assertIn(f'attribute-to-vector map fitted over the {len(users)} '
                    'users', result['note'])
    # With ratings, the new user's reconstruction starts at that vector.
    result = self._json('--ratings=1:5,2:1',
                        '--demographics=age=61,gender=M,occupation=student')
    start = (out[:-1].astype(np.float32)[None],
             np.array([out[-1]], np.float32))
    vector, bias = reconstruction.reconstruct(
        model, [np.array([0, 1])], [np.array([5.0, 1.0])], exported.settings,
        start)
    for row in result['recommendations']:
      item = dense[row['item']]
      self.assertAlmostEqual(
          row['predicted_rating'],
          float(model.item_embeddings[item] @ vector[0] + bias[0] +
                model.item_bias[item] + model.global_bias), places=3)
    self.assertEqual((result['mode'], result['given_ratings']),
                     ('new_user', 2))
    self.assertIn('starting at the vector of its age, gender, occupation',
                  result['note'])
    table = _run(self.flag, '--demographics=gender=F', '--k=2')
    self.assertEqual(table.returncode, 0, table.stderr)
    lines = table.stdout.strip().splitlines()
    self.assertStartsWith(lines[-5], 'Top 2 for a new user with no rating, '
                          'gender F (fedrecon on ')
    self.assertStartsWith(lines[-1], '(a new user known only by gender: ')
    for text, message in (
        ('gender=X', "gender 'X' is not one of the training users': F, M."),
        ('zip=1', 'no user field zip (known: age, gender, occupation).'),
        ('age=3,age=4', 'field age is given twice.')):
      code, out, err = _main(self.flag, f'--demographics={text}')
      self.assertEqual((code, out), (1, ''), text)
      self.assertEqual(err.strip().splitlines(), [
          f"recommend.py: error: --demographics={text!r}: {message}"])


class PrivateUserPriorTest(_TrainedRunTest):
  """A DP run releases its user prior noised, inside its epsilon."""

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='dp_prior',
        data=_write_atomic_corpus(os.path.join(root, 'tiny')),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=6, run_centralized_baseline=False, seed=4,
        dp=privacy_settings.DPConfig(
            mechanism=privacy_settings.Mechanism.FIXED, noise_multiplier=1.0,
            prior_noise_multiplier=2.0, prior_clip=0.5))

  def test_the_prior_is_clipped_noised_and_accounted(self):
    config = self._config(self.root)
    data = corpus.load_corpus(config.data)
    exported = export.load_export(os.path.join(config.output_dir, 'export'))
    split = splits.split(data.ratings, config.split)
    users = np.unique(split.train.users)
    vectors, biases = reconstruction.reconstruct(
        exported.model, *splits.ratings_by_user(split.train, users),
        exported.settings)
    info = data.user_info(config.data)
    encoder = side_info.DemographicEncoder.fit(info)
    # The noise's seed is a secret of the run directory, not of the flags.
    seed = from_keras.prior_noise_seed(config.output_dir)
    self.assertNotIn(str(seed), json.dumps(exported.metadata))
    self.assertEqual(oct(os.stat(os.path.join(
        config.output_dir, from_keras.PRIOR_SEED_FILE)).st_mode & 0o777),
                     '0o600')
    expected = demographics.UserPrior.of(
        encoder, encoder.encode(info)[users],
        np.concatenate([vectors, biases[:, None]], axis=1), clip=0.5,
        noise_multiplier=2.0, seed=seed)
    prior = exported.user_prior
    self.assertAlmostEqual(prior.noise_std,
                           2.0 * demographics.sensitivity(3, 0.5))
    np.testing.assert_allclose(prior.gram, expected.gram, rtol=1e-9)
    np.testing.assert_allclose(prior.cross, expected.cross, rtol=1e-5,
                               atol=1e-6)
    with open(os.path.join(config.output_dir, 'summary.json')) as f:
      privacy = json.load(f)['privacy']
    setting = accounting.PrivacySetting(
        len(users), 6, config.sampling, accounting.default_delta(len(users)),
        release_noise_multiplier=2.0)
    self.assertEqual(privacy['epsilon'], setting.epsilon(1.0, 2))
    self.assertEqual(privacy['prior_noise_multiplier'], 2.0)
    self.assertIn('releases its user prior', privacy['statement'])
    result = self._json('--demographics=gender=F', '--k=3')
    self.assertEqual(result['mode'], 'new_user_demographics')
    self.assertLen(result['recommendations'], 3)
    nothing = self._json('--ratings=', '--k=3')
    self.assertIn(f'the mean of its {prior.num_users} training users',
                  nothing['note'])

  def test_without_the_flag_a_dp_run_releases_none(self):
    config = self._config(self.root)
    for dp, message in (
        (dataclasses.replace(config.dp, prior_noise_multiplier=None), None),
        (config.dp, 'this run releases no user prior (the users keep their '
         'vectors on their devices); drop the flag.')):
      changed = dataclasses.replace(
          config, dp=dp, algorithm='fedmf' if message else config.algorithm)
      if message:
        with self.assertRaisesRegex(
            ValueError, f'^--dp_prior_noise_multiplier: {re.escape(message)}$'):
          experiment.resolve_privacy(changed, 24, log=lambda _: None)
      else:
        self.assertEqual(
            from_keras.user_prior_withheld(changed),
            'the run is differentially private and was given no '
            '--dp_prior_noise_multiplier')


class ImplicitNewUsersTest(_TrainedRunTest):
  """How a user-disjoint split's new users are served, implicit feedback."""

  @classmethod
  def _config(cls, root):
    data = dataclasses.replace(
        _write_atomic_corpus(os.path.join(root, 'tiny')),
        feedback=corpus.Feedback.IMPLICIT, implicit_threshold=3.0)
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='implicit_new_users',
        data=data, model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(4, 2)),
        split=splits.SplitConfig(kind=splits.SplitKind.USER_DISJOINT,
                                 val_fraction=0.2, test_fraction=0.2),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False,
        ranking=ranking.RankingConfig(ks=(5,), eval_negatives=5))

  def test_each_way_of_serving_a_new_user_is_ranked(self):
    config = self._config(self.root)
    with runtime.local_runtime(False):
      run = trained.load_run(config.output_dir)
    new = trained.new_users(run, 'test')
    with open(os.path.join(config.output_dir, 'summary.json')) as f:
      reported = json.load(f)['test_metrics']
    metrics = new['metrics']
    self.assertEqual(list(metrics), [
        'popularity', 'mean training user', 'demographics alone',
        'support interactions', 'support interactions, from the demographics'])
    # The run's own test evaluation and its popularity floor.
    for name, key in (('support interactions', 'fedrecon'),
                      ('popularity', 'popularity')):
      shared = sorted(set(reported[key]) & set(metrics[name]))
      self.assertContainsSubset(['full/ndcg@5', 'sampled/hr@5'], shared)
      for metric in shared:
        self.assertAlmostEqual(metrics[name][metric], reported[key][metric],
                               places=6, msg=f'{name} {metric}')
    # The mean user and the demographics, scored through recommend.py's
    # path (ImplicitRecommender.row_scores), ranked by the same task.
    exported = export.load_export(os.path.join(config.output_dir, 'export'))
    prior = exported.user_prior
    features = prior.encoder.encode(run.data.user_info(config.data))
    serving = recommender_lib.ImplicitRecommender(exported)
    task = scoring.build_partition(run.data, run.split, 'test').task
    logits = lambda p: np.log(p) - np.log1p(-p)  # pylint: disable=g-long-lambda
    mean_scores = logits(serving.row_scores(prior.mean_row()))
    mapped = prior.attribute_map().rows(features)
    for name, score_fn in (
        ('mean training user', lambda rows: np.tile(mean_scores,
                                                    (len(rows), 1))),
        ('demographics alone', lambda rows: np.stack([
            logits(serving.row_scores(mapped[u]))
            for u in task.users[rows]]))):
      expected = ranking.evaluate(task, score_fn, config.ranking).overall
      for metric, value in expected.items():
        self.assertAlmostEqual(metrics[name][metric], value, places=4,
                               msg=f'{name} {metric}')
    self.assertNotEqual(metrics['support interactions, from the demographics'],
                        metrics['support interactions'])
    self.assertEqual((new['prior'], new['map_users']),
                     ("the export's", len(np.unique(run.split.train.users))))
    # evaluate.py prints the comparison.
    out = self.create_tempdir().full_path
    result = binaries.run_binary('evaluate', self.flag, f'--output_dir={out}')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertIn('held-out interactions), served from:', result.stdout)
    self.assertIn('support interactions, from the demographics',
                  result.stdout)


class ImplicitDemographicsTest(_TrainedRunTest):
  """A new user known only by demographics under NeuMF, implicit feedback:
  the map reaches both of its user vectors."""

  @classmethod
  def _config(cls, root):
    data = dataclasses.replace(
        _write_atomic_corpus(os.path.join(root, 'tiny')),
        feedback=corpus.Feedback.IMPLICIT, implicit_threshold=4.0)
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='implicit_demographics',
        data=data, model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(4, 2)),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False,
        ranking=ranking.RankingConfig(ks=(5,), eval_negatives=5))

  def test_a_new_user_is_served_through_both_user_vectors(self):
    config = self._config(self.root)
    data = corpus.load_corpus(config.data)
    info = data.user_info(config.data)
    exported = export.load_export(os.path.join(config.output_dir, 'export'))
    layers = ['gmf_user_embedding', 'mlp_user_embedding']
    # The training users reconstructed from their training interactions,
    # side by side.
    train = splits.split(data.ratings, config.split).train
    users = np.unique(train.users)
    known = sparse.csr_matrix(
        (np.ones(len(train)), (np.searchsorted(users, train.users),
                               train.items)),
        shape=(len(users), data.num_items))
    model = exported.keras_model(len(users))
    targets = np.concatenate(implicit.reconstruct_users(
        model, layers, [exported.weights[f'initial/{n}'] for n in layers],
        users, known, exported.settings), axis=1)
    self.assertEqual(targets.shape, (len(users), 3 + 2))
    row = _reference_map(info, users, targets)({'gender': 'F'})
    single = exported.keras_model(1)
    single.get_layer(layers[0]).set_weights([row[None, :3]])
    single.get_layer(layers[1]).set_weights([row[None, 3:]])
    expected = 1 / (1 + np.exp(-implicit.score_items(single, [0],
                                                     data.num_items)[0]))
    result = self._json('--demographics=gender=F', f'--k={data.num_items}')
    self.assertEqual(result['mode'], 'new_user_demographics')
    self.assertLen(result['recommendations'], data.num_items)
    dense = {int(raw): i for i, raw in enumerate(data.id_maps.raw_items)}
    for r in result['recommendations']:
      self.assertAlmostEqual(r['probability'], expected[dense[r['item']]],
                             places=4)


class NewItemTest(_TrainedRunTest):
  """MF with item features on item_cold_start: new items, described items."""

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='features', data=_DATA,
        split=splits.SplitConfig(kind=splits.SplitKind.ITEM_COLD_START,
                                 cold_item_fraction=0.25, seed=1),
        model=mf_features.FeatureMFConfig(embedding_dim=4),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False)

  def test_a_described_item_is_scored_as_the_corpus_item_it_copies(self):
    # A cold item of the corpus and the same genres and year described
    # anew score alike: both are their feature part alone.
    data = corpus.load_corpus(_DATA)
    info = data.item_info(_DATA)
    split = splits.split(data.ratings, self._config(self.root).split)
    # A training user and a test-cold item the user never rated.
    dense_user = int(split.train.users[0])
    rated = data.ratings.items[data.ratings.users == dense_user]
    cold = int(np.setdiff1d(split.test.cold_items, rated)[0])
    genres = '|'.join(g for g, on in zip(info.genre_names, info.genres[cold])
                      if on)
    user = int(data.id_maps.raw_users[dense_user])
    result = self._json(f'--user_id={user}', '--k=40',
                        f'--new_item=Copy ({int(info.years[cold])})::{genres}')
    ranked = {r['item']: r['predicted_rating']
              for r in result['recommendations']}
    raw_cold = int(data.id_maps.raw_items[cold])
    self.assertIn(raw_cold, ranked)  # A new item is recommendable.
    self.assertAlmostEqual(result['new_item']['predicted_rating'],
                           ranked[raw_cold], places=3)
    self.assertEqual(result['new_item']['year'], int(info.years[cold]))
    higher = sum(score > result['new_item']['predicted_rating']
                 for score in ranked.values())
    self.assertIn(result['new_item']['rank'], (higher + 1, higher))
    table = _run(self.flag, f'--user_id={user}', '--k=2',
                 '--new_item=Copy::genre_0')
    self.assertEqual(table.returncode, 0, table.stderr)
    self.assertStartsWith(table.stdout.strip().splitlines()[-1],
                          'New item Copy [genre_0]: predicted rating ')
    for args, message in (
        (['--user_id=1', '--new_item=X::Noir'], "--new_item='X::Noir': genre "
         "'Noir' is not one of the corpus's: genre_0"),
        (['--group=1,2', '--new_item=X::genre_0'], '--new_item scores an item '
         'for --user_id or a new user with --ratings'),
    ):
      code, out, err = _main(self.flag, *args)
      self.assertEqual((code, out), (1, ''), args)
      self.assertLen(err.strip().splitlines(), 1)
      self.assertStartsWith(err.strip(), f'recommend.py: error: {message}')


class ImplicitNewItemTest(_TrainedRunTest):
  """MF with item features under implicit feedback, on item_cold_start."""

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='implicit_features',
        data=_IMPLICIT_DATA,
        split=splits.SplitConfig(kind=splits.SplitKind.ITEM_COLD_START,
                                 cold_item_fraction=0.25, seed=1),
        model=mf_features.FeatureMFConfig(embedding_dim=4),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False,
        ranking=ranking.RankingConfig(ks=(5,), eval_negatives=5))

  def test_a_described_item_is_ranked_as_the_corpus_item_it_copies(self):
    # A cold item and the same genres and year described anew have the
    # same interaction probability, for a known user (reconstructed from
    # its interactions) and for a new one (from the given ones).
    config = self._config(self.root)
    data = corpus.load_corpus(config.data)
    info = data.item_info(config.data)
    split = splits.split(data.ratings, config.split)
    dense_user = int(split.train.users[0])
    rated = data.ratings.items[data.ratings.users == dense_user]
    cold = int(np.setdiff1d(split.test.cold_items, rated)[0])
    genres = '|'.join(g for g, on in zip(info.genre_names, info.genres[cold])
                      if on)
    described = f'--new_item=Copy ({int(info.years[cold])})::{genres}'
    raw_cold = int(data.id_maps.raw_items[cold])
    user = int(data.id_maps.raw_users[dense_user])
    given = ','.join(str(int(data.id_maps.raw_items[i])) for i in rated[:3])
    for args in ([f'--user_id={user}'], [f'--ratings={given}']):
      result = self._json(*args, '--k=40', described)
      ranked = {r['item']: r['probability']
                for r in result['recommendations']}
      self.assertIn(raw_cold, ranked)  # A new item is recommendable.
      new = result['new_item']
      self.assertNotIn('predicted_rating', new)
      self.assertAlmostEqual(new['probability'], ranked[raw_cold], places=4)
      # Shown rounded to 4 digits: items within rounding of it may be either
      # side (the cold item itself among them).
      higher = sum(p > new['probability'] for p in ranked.values())
      level = sum(p == new['probability'] for p in ranked.values())
      self.assertBetween(new['rank'] - 1, higher, higher + level)
    table = _run(self.flag, f'--user_id={user}', '--k=2', described)
    self.assertEqual(table.returncode, 0, table.stderr)
    self.assertStartsWith(table.stdout.strip().splitlines()[-1],
                          f'New item Copy ({int(info.years[cold])}) '
                          f'[{genres}]: probability ')


class ImplicitNeuMFNewItemTest(ImplicitNewItemTest):
  """The same with NeuMF with item features: a described item is scored
  through both towers of the model with one more item."""

  @classmethod
  def _config(cls, root):
    return dataclasses.replace(
        super()._config(root), experiment_name='neumf_features',
        model_name='neumf_features',
        model=ncf_features.NeuMFFeaturesConfig(embedding_dim=4,
                                               mlp_layers=(8, 4)))


class ImplicitRecommendTest(_TrainedRunTest):
  """An implicit-feedback NeuMF under FedRecon (ratings >= 4 are positives)."""

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='implicit',
        data=_IMPLICIT_DATA,
        split=splits.SplitConfig(kind=splits.SplitKind.LEAVE_ONE_OUT),
        model=ncf.NeuMFConfig(embedding_dim=4, mlp_layers=(8, 4)),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False,
        ranking=ranking.RankingConfig(ks=(5,), eval_negatives=5))

  def test_known_user_is_reconstructed_from_interactions(self):
    mine = self.ratings.items[self.ratings.users == 0] + 1
    result = self._json('--user_id=1', '--k=5')
    self.assertEqual(result['rated_items'], len(mine))
    self.assertIn('reconstructed locally', result['note'])
    rows = result['recommendations']
    self.assertLen(rows, 5)
    self.assertEmpty(set(mine.tolist()) & {r['item'] for r in rows})
    probabilities = [r['probability'] for r in rows]
    self.assertEqual(probabilities, sorted(probabilities, reverse=True))
    self.assertTrue(all(0 < p < 1 for p in probabilities))
    self.assertEqual(result, self._json('--user_id=1', '--k=5'))

  def test_new_user_interactions_below_the_threshold_are_dropped(self):
    bare = self._json('--ratings=1,2', '--k=4')
    self.assertEqual(bare['given_ratings'], 2)
    self.assertEqual(self._json('--ratings=1:5,2:4,3:1', '--k=4'), bare)
    self.assertNotIn(1, [r['item'] for r in bare['recommendations']])
    nothing = self._json('--ratings=3:2', '--k=4')
    self.assertEqual(nothing['given_ratings'], 0)
    self.assertIn('ranked by popularity', nothing['note'])

  def test_table_and_no_tff(self):
    lines = self._assert_runs_without_tff('--user_id=1',
                                          '--k=3').strip().splitlines()
    self.assertStartsWith(lines[0], 'Top 3 for user 1 (fedrecon on synthetic')
    self.assertEqual(lines[1].split()[:3], ['rank', 'item', 'probability'])
    self.assertLen(lines, 7)  # Heading, header, 3 rows, note, "False".


class PersonalViewsRecommendTest(_TrainedRunTest):
  """PFedRec (explicit ratings): a known user is scored as its device does."""

  @classmethod
  def _config(cls, root):
    return experiment.ExperimentConfig(
        root_output_dir=root, experiment_name='pfedrec', data=_DATA,
        algorithm='pfedrec', method_settings={'item_learning_rate_scale': 5.0},
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=30, run_centralized_baseline=False)

  def test_known_user_is_scored_with_its_own_vector_and_item_view(self):
    run_dir = self.flag.split('=', 1)[1]
    exported = export.load_export(os.path.join(run_dir, 'export'))
    self.assertEqual(exported.metadata['device_states'],
                     os.path.join('client_states', 'current'))
    states = client_states.read_folder(
        os.path.join(run_dir, 'client_states', 'current'))
    self.assertEqual(states[client_states.VISITED][0], 1.0)
    # Closed form of MF with the user's own parts: p_u . q~_ui + b_u +
    # b~_ui + g, q~ and b~ the user's personal view of the item side.
    view = states['personal/item_embedding'][0]
    want = (view @ states['user_embedding'][0] + states['user_bias'][0, 0] +
            states['personal/item_bias'][0, :, 0] +
            exported.model.global_bias)
    result = self._json('--user_id=1', '--k=40')
    self.assertIn('personal item views', result['note'])
    rows = result['recommendations']
    self.assertNotEmpty(rows)
    for row in rows:
      self.assertAlmostEqual(row['predicted_rating'], want[row['item'] - 1],
                             places=3)
    # The views matter: the global item side gives other scores.
    global_side = (exported.model.item_embeddings @
                   states['user_embedding'][0] + states['user_bias'][0, 0] +
                   exported.model.item_bias + exported.model.global_bias)
    self.assertGreater(np.abs(global_side - want).max(), 1e-3)
    # Without the devices' folder: the global item side, said in the note.
    hidden = os.path.join(self.root, 'hidden')
    os.rename(os.path.join(run_dir, 'client_states'), hidden)
    try:
      result = self._json('--user_id=1', '--k=3')
    finally:
      os.rename(hidden, os.path.join(run_dir, 'client_states'))
    self.assertIn('not found), so the global item embeddings stand in',
                  result['note'])
    for row in result['recommendations']:
      self.assertAlmostEqual(row['predicted_rating'],
                             global_side[row['item'] - 1], places=3)


if __name__ == '__main__':
  absltest.main()
