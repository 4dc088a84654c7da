"""Smoke tests of the train.py binary: a tiny run, and user-mistake exits."""

import dataclasses
import json
import os
import re

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
import pytest

from research.fedrec import train
from tests import binaries

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

FLAGS = flags.FLAGS


def _run_binary(*args):
  return binaries.run_binary('train', *args)


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

  def test_cohort_execution_gives_the_per_client_numbers(self):
    root = self.create_tempdir().full_path
    metrics = {}
    for execution in ('per_client', 'cohort'):
      with flagsaver.flagsaver(
          root_output_dir=root, experiment_name=execution, rounds=2,
          clients_per_round=8, synthetic_users=40, synthetic_items=30,
          synthetic_ratings=800, eval_every=1, centralized_baseline=False,
          execution=execution, progress=False):
        train.main(['train'])
      with open(os.path.join(root, execution, 'summary.json')) as f:
        metrics[execution] = json.load(f)['test_metrics']['fedrecon']
    self.assertEqual(sorted(metrics['cohort']), sorted(metrics['per_client']))
    for name, value in metrics['per_client'].items():
      self.assertAlmostEqual(metrics['cohort'][name], value, delta=1e-5,
                             msg=name)
    # A combination cohorts do not reproduce yet is refused in one line.
    code, _, stderr = binaries.run_main(
        train, f'--root_output_dir={root}', '--execution=cohort',
        '--compression=quantize')
    self.assertEqual(code, 1)
    self.assertEqual(stderr.strip().splitlines(), [
        'train.py: error: --execution=cohort: --compression has no per-user '
        'form in cohorts yet; use --execution=per_client or auto.'])

  def test_missing_data_dir_is_one_line_and_nonzero_exit(self):
    # The binary's one subprocess smoke test of a user mistake; the others
    # run its main in this process (binaries.run_main).
    result = _run_binary('--dataset=ml-1m', '--data_dir=/nonexistent')
    self.assertEqual(result.returncode, 1)
    self.assertEqual(result.stderr.strip().splitlines(), [
        'train.py: error: --data_dir=/nonexistent: no such directory (get '
        'ml-1m with: python data/download_movielens.py --corpus=ml-1m).'])

  def test_impossible_flag_combination_is_one_line(self):
    code, _, stderr = binaries.run_main(
        train, '--algorithm=fedavg', '--split=user_disjoint',
        f'--root_output_dir={self.create_tempdir().full_path}')
    self.assertEqual(code, 1)
    (line,) = stderr.strip().splitlines()
    self.assertStartsWith(line, 'train.py: error: --algorithm=fedavg cannot')


  def test_invalid_privacy_settings_are_one_line(self):
    root_dir = self.create_tempdir().full_path
    root = f'--root_output_dir={root_dir}'
    for args, message in (
        (['--dp=adaptive', '--dp_noise_multiplier=11'],
         '--dp=adaptive with noise multiplier 11 needs --clients_per_round > '
         '110 (10 x the noise multiplier); got 100.'),
        (['--dp=fixed', '--target_epsilon=-1'],
         '--target_epsilon=-1 must be > 0.'),
        (['--dp=fixed', '--target_epsilon=1', '--target_delta=1'],
         '--target_delta=1 must be in (0, 1).'),
        (['--target_epsilon=1'], '--target_epsilon needs --dp=fixed or '
         '--dp=adaptive.'),
    ):
      code, _, stderr = binaries.run_main(train, root, *args)
      self.assertEqual(code, 1, args)
      self.assertEqual(stderr.strip().splitlines(),
                       [f'train.py: error: {message}'])
      # Refused settings leave no run directory (no half-written output).
      self.assertFalse(os.path.exists(os.path.join(root_dir, 'default')),
                       args)

  def test_method_choices_and_settings_come_from_the_registry(self):
    root = f'--root_output_dir={self.create_tempdir().full_path}'
    code, _, stderr = binaries.run_main(train, root, '--algorithm=fedavg',
                                        '--proximal_strength=0.1')
    self.assertEqual(code, 1)
    self.assertEqual(stderr.strip().splitlines(), [
        'train.py: error: --proximal_strength is not a setting of '
        '--algorithm=fedavg.'])
    with self.assertRaisesRegex(ValueError, re.escape(
        'flag --algorithm=fedsgd: value should be one of <fedrecon|fedavg|'
        'fedprox|fedmf|pfedrec|fedrecon_dualper|centralized|popularity>')):
      train.config_from_args(['--algorithm=fedsgd'])
    with flagsaver.flagsaver(algorithm='fedprox', proximal_strength=0.2):
      config = train.build_config()
    self.assertEqual(config.method_settings, {'proximal_strength': 0.2})

  def test_no_flags_build_exactly_the_library_defaults(self):
    from research.fedrec.data import corpus  # pylint: disable=g-import-not-at-top
    from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
    for args, feedback in (([], corpus.Feedback.EXPLICIT),
                           (['--feedback=implicit'], corpus.Feedback.IMPLICIT)):
      with flagsaver.flagsaver():  # The other tests keep their flags.
        config = train.config_from_args(args)
      expected = experiment.default_config('runs', 'default', feedback)
      # The progress bar is not a setting: on only on a terminal.
      expected = dataclasses.replace(expected, loop=dataclasses.replace(
          expected.loop, progress=config.loop.progress))
      self.assertEqual(config, expected, args)
    # And the library's own objects carry the explicit defaults.
    self.assertEqual(
        experiment.default_config('runs', 'default'),
        experiment.ExperimentConfig(root_output_dir='runs',
                                    experiment_name='default'))


if __name__ == '__main__':
  absltest.main()
