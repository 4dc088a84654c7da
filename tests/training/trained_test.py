"""A finished run reloaded from its directory: evaluation and export.

The vectorized evaluation (which train.py and evaluate.py report) must
reproduce TFF's federated evaluation (`build_fed_recon_eval`, run here on the
run's client store) to 1e-6, and FedAvg's global model's metrics.
"""

import dataclasses
import os

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.algorithms import fed_recon
from research.fedrec.data import client_store
from research.fedrec.data import corpus
from research.fedrec.data import pipelines
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.inference import export as export_lib
from research.fedrec.training import centralized
from research.fedrec.training import experiment
from research.fedrec.training import loop
from research.fedrec.training import runtime
from research.fedrec.training import trained

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

_DATA = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
    num_users=40, num_items=50, num_ratings=1500, min_ratings_per_user=10))


def setUpModule():
  runtime.start()


def tearDownModule():
  runtime.release()


def _run(root, name, **overrides):
  settings = dict(
      root_output_dir=root, experiment_name=name, data=_DATA,
      loop=loop.LoopConfig(total_rounds=3, progress=False),
      clients_per_round=6, run_centralized_baseline=False,
      centralized=centralized.CentralizedConfig(epochs=1))
  settings.update(overrides)
  config = experiment.ExperimentConfig(**settings)
  summary = experiment.run_experiment(config, log=lambda _: None)
  runtime.start()  # run_experiment shut its runtime down.
  return config, summary


def _federated_evaluation(run: trained.TrainedRun) -> dict[str, float]:
  """TFF's own FedRecon evaluation of the run's test users (the reference)."""
  config = run.config
  store = client_store.create_client_store(
      run.split, config.cache_dir or os.path.join(config.root_output_dir,
                                                  'cache'))
  process, client_ids = fed_recon.build_evaluation(
      experiment.model_config_of(config, run.split, run.data), run.data.num_items,
      config.recon, config.optimizers.create().reconstruction,
      config.pipeline, store, 'test')
  state = process.set_model_weights(process.initialize(), run.model_weights)
  metrics = process.next(state, list(client_ids)).metrics
  return {k: float(v) for k, v in
          metrics['client_work']['eval']['current_round_metrics'].items()
          if k != 'loss'}


class TrainedTest(absltest.TestCase):

  def _assert_reproduces(self, directory, summary, algorithm):
    run = trained.load_run(directory)
    self.assertEqual(run.round_num, 3)
    report = trained.evaluate_run(run, 'test')
    reported = summary['test_metrics'][algorithm]
    expected = (_federated_evaluation(run) if algorithm == 'fedrecon' else
                reported)
    self.assertEqual(list(expected), list(reported))
    for name, value in expected.items():
      self.assertAlmostEqual(report.overall[name], value, delta=1e-6,
                             msg=name)
      self.assertAlmostEqual(reported[name], value, delta=1e-6, msg=name)
    self.assertEqual(report.overall['ratings'], summary['test_ratings'])
    return run, report

  def test_fedrecon_holdout_reproduces_and_exports(self):
    root = self.create_tempdir().full_path
    config, summary = _run(root, 'recon')
    directory = os.path.join(root, 'recon')
    run, report = self._assert_reproduces(directory, summary, 'fedrecon')
    participation = {r['slice']: r for r in report.slices
                     if r['slice_kind'] == 'participation'}
    seen = trained.participants(run)
    self.assertLessEqual(len(seen), 3 * 6)
    self.assertEqual(participation['seen']['users'],
                     len(seen & {u['user'] for u in report.users}))
    # The export holds the same global model and the run's settings.
    exported = export_lib.load_export(os.path.join(directory, 'export'))
    self.assertEqual(exported.user_source, export_lib.RECONSTRUCT)
    np.testing.assert_array_equal(exported.model.item_embeddings,
                                  run.model.item_embeddings)
    np.testing.assert_array_equal(exported.model.item_bias,
                                  run.model.item_bias)
    self.assertAlmostEqual(exported.model.global_bias, run.model.global_bias,
                           places=6)
    self.assertEqual(exported.settings.learning_rate,
                     config.optimizers.reconstruction_learning_rate)
    self.assertEqual(exported.metadata['data_config']['synthetic_config'][
        'num_users'], 40)

  def test_fedrecon_user_disjoint_other_settings_reproduces(self):
    root = self.create_tempdir().full_path
    _, summary = _run(
        root, 'cold',
        split=splits.SplitConfig(kind=splits.SplitKind.USER_DISJOINT,
                                 val_fraction=0.2, test_fraction=0.25),
        pipeline=pipelines.PipelineConfig(batch_size=4,
                                          max_examples_per_user=15, seed=3),
        recon=fed_recon.ReconConfig(recon_epochs=2, recon_steps_max=5),
        optimizers=experiment.OptimizerConfig(
            reconstruction='adam', reconstruction_learning_rate=0.05),
        model=dataclasses.replace(experiment.ExperimentConfig(
            root_output_dir='', experiment_name='x').model, l2=0.01))
    _, report = self._assert_reproduces(os.path.join(root, 'cold'), summary,
                                        'fedrecon')
    participation = {r['slice']: r for r in report.slices
                     if r['slice_kind'] == 'participation'}
    self.assertEqual(participation['seen']['users'], 0)
    self.assertEqual(participation['unseen']['users'], 10)

  def test_fedavg_reproduces_and_exports_its_user_table(self):
    root = self.create_tempdir().full_path
    _, summary = _run(root, 'avg', algorithm='fedavg')
    run, _ = self._assert_reproduces(os.path.join(root, 'avg'), summary,
                                     'fedavg')
    exported = export_lib.load_export(os.path.join(root, 'avg', 'export'))
    self.assertEqual(exported.user_source, export_lib.USER_TABLE)
    np.testing.assert_array_equal(exported.user_vectors, run.user_vectors)

  def test_not_a_federated_run(self):
    root = self.create_tempdir().full_path
    _run(root, 'central', algorithm='centralized')
    with self.assertRaisesRegex(ValueError, 'centralized run'):
      trained.load_run(os.path.join(root, 'central'))
    with self.assertRaisesRegex(ValueError, 'hparams.json: no such file'):
      trained.load_run(root)


if __name__ == '__main__':
  absltest.main()
