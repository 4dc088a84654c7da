"""Smoke tests of the train.py binary: a tiny run, and user-mistake exits."""

import json
import os
import subprocess
import sys

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver

from research.fedrec import train

FLAGS = flags.FLAGS
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_binary(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  # As from a user's shell: jax, imported by this test process, sets it.
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.run(
      [sys.executable, '-m', 'research.fedrec.train', *args],
      capture_output=True, text=True, env=env, cwd=_REPO_ROOT, timeout=600,
      check=False)


class TrainTest(absltest.TestCase):

  def test_tiny_run_end_to_end(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        root_output_dir=root, experiment_name='smoke', rounds=2,
        clients_per_round=3, synthetic_users=30, synthetic_items=40,
        synthetic_ratings=900, eval_every=1, centralized_epochs=1,
        progress=False):
      train.main(['train'])
    out = os.path.join(root, 'smoke')
    with open(os.path.join(out, 'summary.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['num_users'], 30)
    self.assertEqual(list(summary['test_metrics']), ['fedrecon', 'centralized'])
    with open(os.path.join(out, 'hparams.json')) as f:
      recorded = json.load(f)['flags']
    self.assertEqual(recorded['rounds'], 2)
    self.assertEqual(recorded['algorithm'], 'fedrecon')
    self.assertEqual(recorded['split'], 'holdout')
    self.assertIn('learning_curves.png', os.listdir(out))

  def test_missing_data_dir_is_one_line_and_nonzero_exit(self):
    result = _run_binary('--dataset=ml-1m', '--data_dir=/nonexistent')
    self.assertEqual(result.returncode, 1)
    self.assertEqual(result.stderr.strip().splitlines(), [
        'train.py: error: --data_dir=/nonexistent: no such directory (get '
        'ml-1m with: python data/download_movielens.py --corpus=ml-1m).'])

  def test_impossible_flag_combination_is_one_line(self):
    result = _run_binary('--algorithm=fedavg', '--split=user_disjoint',
                         f'--root_output_dir={self.create_tempdir().full_path}')
    self.assertEqual(result.returncode, 1)
    (line,) = result.stderr.strip().splitlines()
    self.assertStartsWith(line, 'train.py: error: --algorithm=fedavg cannot')


  def test_invalid_privacy_settings_are_one_line(self):
    root_dir = self.create_tempdir().full_path
    root = f'--root_output_dir={root_dir}'
    for args, message in (
        (['--dp=adaptive', '--dp_noise_multiplier=6'],
         '--dp=adaptive with noise multiplier 6 needs --clients_per_round > '
         '60 (10 x the noise multiplier); got 50.'),
        (['--dp=fixed', '--target_epsilon=-1'],
         '--target_epsilon=-1 must be > 0.'),
        (['--dp=fixed', '--target_epsilon=1', '--target_delta=1'],
         '--target_delta=1 must be in (0, 1).'),
        (['--target_epsilon=1'], '--target_epsilon needs --dp=fixed or '
         '--dp=adaptive.'),
    ):
      result = _run_binary(root, *args)
      self.assertEqual(result.returncode, 1, args)
      self.assertEqual(result.stderr.strip().splitlines(),
                       [f'train.py: error: {message}'])
      # Refused settings leave no run directory (no half-written output).
      self.assertFalse(os.path.exists(os.path.join(root_dir, 'default')),
                       args)

if __name__ == '__main__':
  absltest.main()
