"""Smoke tests of the evaluate.py binary on a tiny trained run."""

import csv
import json
import os
import shutil
import tempfile

from absl.testing import absltest
import pytest

from research.fedrec.data import corpus
from research.fedrec.data import synthetic
from research.fedrec.training import experiment
from research.fedrec.training import loop
from research.fedrec.training import runtime
from tests import binaries

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow


def _run_binary(*args):
  return binaries.run_binary('evaluate', *args)


class EvaluateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='fedrec_test_')
    config = experiment.ExperimentConfig(
        root_output_dir=cls.root, experiment_name='evaluate_smoke',
        data=corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
            num_users=30, num_items=40, num_ratings=900,
            min_ratings_per_user=10)),
        loop=loop.LoopConfig(total_rounds=2, progress=False),
        clients_per_round=4, run_centralized_baseline=False)
    cls.summary = experiment.run_experiment(config, log=lambda _: None)
    runtime.release()
    cls.directory = config.output_dir


  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _evaluate_test_users(self, *args):
    """Runs evaluate.py on the run; (result, test.json, output dir)."""
    out = os.path.join(self.create_tempdir().full_path, 'eval')
    result = _run_binary(f'--experiment_dir={self.directory}',
                         f'--output_dir={out}', *args)
    self.assertEqual(result.returncode, 0, result.stderr)
    with open(os.path.join(out, 'test.json')) as f:
      return result, json.load(f), out

  def test_reproduces_train_metrics_and_writes_outputs(self):
    result, output, out = self._evaluate_test_users('--activity_buckets=25,35')
    self.assertIn('train.py reported test RMSE', result.stdout)
    self.assertIn('activity: 25-34', result.stdout)
    for name, value in self.summary['test_metrics']['fedrecon'].items():
      self.assertAlmostEqual(output['metrics'][name], value, delta=1e-6)
    self.assertEqual(output['checkpoint_round'], 2)
    self.assertEqual(output['reconstruction_epochs'], 1)
    self.assertEqual(output['train_reported_test_metrics'],
                     self.summary['test_metrics']['fedrecon'])
    with open(os.path.join(out, 'test_slices.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([r['slice'] for r in rows],
                     ['all', '<25', '25-34', '>=35', 'seen', 'unseen'])
    with open(os.path.join(out, 'test_users.csv')) as f:
      users = list(csv.DictReader(f))
    self.assertLen(users, 30)
    self.assertEqual(users[0]['user'], '1')  # Raw corpus ids.
    self.assertEqual(sum(int(u['ratings']) for u in users),
                     self.summary['test_ratings'])
    self.assertCountEqual(os.listdir(out), ['test.json', 'test_slices.csv',
                                            'test_users.csv'])

  def test_validation_split_default_output_dir(self):
    result = _run_binary(f'--experiment_dir={self.directory}', '--split=val')
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertNotIn('train.py reported', result.stdout)
    with open(os.path.join(self.directory, 'evaluation', 'val.json')) as f:
      self.assertEqual(json.load(f)['split'], 'val')

  def test_longer_reconstruction(self):
    result, output, _ = self._evaluate_test_users('--eval_recon_epochs=3')
    self.assertIn('users reconstructed for 3 epochs', result.stdout)
    self.assertNotIn('train.py reported', result.stdout)
    self.assertEqual(output['reconstruction_epochs'], 3)
    self.assertIsNone(output['train_reported_test_metrics'])
    # Three epochs of SGD on each user vector score differently than one.
    self.assertNotAlmostEqual(
        output['metrics']['rmse'],
        self.summary['test_metrics']['fedrecon']['rmse'], places=4)

  def test_user_mistakes_are_one_line(self):
    for args, start in (
        (['--experiment_dir=/nonexistent'],
         'evaluate.py: error: --experiment_dir=/nonexistent: no such'),
        ([], 'evaluate.py: error: --experiment_dir is required'),
        ([f'--experiment_dir={self.directory}', '--activity_buckets=50,20'],
         'evaluate.py: error: --activity_buckets=50,20 must be'),
        ([f'--experiment_dir={self.root}'],
         'evaluate.py: error: ' + os.path.join(self.root, 'hparams.json')),
    ):
      result = _run_binary(*args)
      self.assertEqual(result.returncode, 1, args)
      (line,) = result.stderr.strip().splitlines()
      self.assertStartsWith(line, start)


if __name__ == '__main__':
  absltest.main()
