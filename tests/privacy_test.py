"""Smoke tests of the privacy binary (python -m research.fedrec.privacy)."""

import os
import subprocess
import sys

from absl.testing import absltest
import pytest

from research.fedrec.algorithms import sampling
from research.fedrec.privacy import accounting

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return subprocess.run([sys.executable, '-m', 'research.fedrec.privacy',
                         *args], capture_output=True, text=True, env=env,
                        cwd=_REPO_ROOT, timeout=300, check=False)


class PrivacyBinaryTest(absltest.TestCase):

  def test_epsilon_and_statement(self):
    result = _run('--num_users=943', '--clients_per_round=50', '--rounds=50',
                  '--noise_multiplier=1.5')
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = result.stdout.splitlines()
    setting = accounting.PrivacySetting(943, 50, sampling.SamplingScheme.UNIFORM,
                                        accounting.default_delta(943))
    self.assertEqual(lines[0], f'epsilon = {setting.epsilon(1.5, 50):.4f}')
    self.assertIn("one user's entire rating history", result.stdout)
    self.assertIn('Not covered: choosing hyperparameters', result.stdout)

  def test_noise_for_a_target(self):
    result = _run('--num_users=943', '--clients_per_round=50', '--rounds=50',
                  '--target_epsilon=4', '--sampling=poisson', '--delta=1e-5')
    self.assertEqual(result.returncode, 0, result.stderr)
    setting = accounting.PrivacySetting(943, 50, sampling.SamplingScheme.POISSON,
                                        1e-5)
    self.assertStartsWith(result.stdout,
                          f'noise_multiplier = {setting.calibrate(4, 50):.4f}')

  def test_user_mistakes_are_one_line(self):
    for args, message in (
        (['--num_users=10', '--clients_per_round=5', '--rounds=3',
          '--target_epsilon=0'], '--target_epsilon=0 must be > 0.'),
        (['--num_users=10', '--clients_per_round=5', '--rounds=3',
          '--noise_multiplier=1', '--delta=1'],
         '--delta=1 must be in (0, 1).'),
        (['--num_users=10', '--clients_per_round=5', '--rounds=3'],
         'Give exactly one of --noise_multiplier (prints epsilon) and '
         '--target_epsilon (prints the noise multiplier).'),
        (['--clients_per_round=5', '--rounds=3', '--noise_multiplier=1'],
         '--num_users is required and must be >= 1.'),
    ):
      result = _run(*args)
      self.assertEqual(result.returncode, 1, args)
      self.assertEqual(result.stderr.strip().splitlines(),
                       [f'privacy.py: error: {message}'])


if __name__ == '__main__':
  absltest.main()
