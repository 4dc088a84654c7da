"""FedAvg and FedProx in cohorts against the per-client processes.

The references are the per-client processes (TFF's own
`build_weighted_fed_avg` / `build_unweighted_fed_avg`, and fed_prox.py's
client work), one TFF client per user; the cohort process trains many users
in one TFF client. On random corpora whose users have 1 to 14 ratings both run
the same three rounds from the same state, and the global weights (the user
table included) and training metrics must agree to 1e-5 relative, under
several settings: biases and L2, several local epochs whose batches span two
epochs (explicit), fresh negatives per epoch and round (implicit, items met
several times), FedProx's proximal term, `max_examples_per_user`, uniform
weighting and small cohorts; and under user-level DP, where each user (not a
cohort) must be clipped.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest

from research.fedrec.algorithms import cohorts
from research.fedrec.algorithms import fed_avg
from research.fedrec.algorithms import fed_prox
from research.fedrec.data import pipelines
from research.fedrec.models import autorec
from research.fedrec.models import mf
from research.fedrec.models import ncf
from research.fedrec.privacy import aggregation
from research.fedrec.privacy import settings
from research.fedrec.training import experiment
from tests.algorithms import cohort_testing

# Every test here runs TFF processes.
pytestmark = pytest.mark.slow

_NUM_USERS, _NUM_ITEMS = cohort_testing.NUM_USERS, cohort_testing.NUM_ITEMS
_ROUNDS = cohort_testing.ROUNDS


def _processes(store, model, pipeline, uniform, cohort_size, implicit,
               proximal_strength, dp=settings.DPConfig(), zeroing=False,
               noise_multiplier=None, optimizer=('sgd', 0.4)):
  """(per-client process, cohort process) of FedAvg, or FedProx with mu."""
  optimizer_settings = experiment.OptimizerConfig(
      client=optimizer[0], client_learning_rate=optimizer[1], server='sgd',
      server_learning_rate=0.8)
  dp_on = dp.mechanism != settings.Mechanism.NONE
  weighted = not uniform

  def aggregator(cohort):
    return aggregation.build_aggregator(
        dp, settings.AggregationConfig(zeroing=zeroing and not cohort),
        noise_multiplier, 12, weighted=weighted or cohort,
        preclipped=cohort and dp_on)

  if proximal_strength is None:
    reference = fed_avg.build_training_process(
        model, _NUM_ITEMS, _NUM_USERS, optimizer_settings.create(), pipeline,
        store, aggregator(False), uniform_weighting=uniform, implicit=implicit)
  else:
    reference = fed_prox.build_training_process(
        model, _NUM_ITEMS, _NUM_USERS, optimizer_settings.create(), pipeline,
        store, proximal_strength, aggregator(False),
        uniform_weighting=uniform, implicit=implicit)
  in_cohorts = fed_avg.build_cohort_training_process(
      model, _NUM_ITEMS, _NUM_USERS, optimizer_settings.create(),
      optimizer_settings, pipeline, store, aggregator(True), uniform,
      cohort_size, zeroing=zeroing,
      clip_query=aggregation.dp_query(dp, noise_multiplier, 12)
      if dp_on else None,
      implicit=implicit, proximal_strength=proximal_strength or 0.0)
  return reference, in_cohorts


_EXPLICIT_CASES = (
    dict(testcase_name='fedavg_biases_l2_batches_span_epochs',
         model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
         pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                           seed=3),
         uniform=False, cohort_size=0, proximal_strength=None),
    dict(testcase_name='fedavg_item_features_id_dropout',
         model=cohort_testing.feature_model(4),
         pipeline=pipelines.PipelineConfig(batch_size=3, local_epochs=2,
                                           seed=2),
         uniform=False, cohort_size=4, proximal_strength=None),
    # Stateful client optimizers: a state per user, frozen while idle.
    dict(testcase_name='fedavg_momentum',
         model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
         pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                           seed=3),
         uniform=False, cohort_size=0, proximal_strength=None,
         optimizer=('sgdm', 0.2)),
    dict(testcase_name='fedprox_adam_small_cohorts',
         model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
         pipeline=pipelines.PipelineConfig(batch_size=3, local_epochs=3,
                                           seed=5),
         uniform=True, cohort_size=4, proximal_strength=0.5,
         optimizer=('adam', 0.02)),
    dict(testcase_name='fedprox_uniform_small_cohorts',
         model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
         pipeline=pipelines.PipelineConfig(batch_size=3, local_epochs=3,
                                           seed=5),
         uniform=True, cohort_size=4, proximal_strength=0.5),
    dict(testcase_name='fedprox_capped_examples_no_biases',
         model=mf.MFConfig(embedding_dim=4, use_biases=False, seed=4),
         pipeline=pipelines.PipelineConfig(batch_size=5, local_epochs=2,
                                           max_examples_per_user=5, seed=1),
         uniform=False, cohort_size=5, proximal_strength=2.0),
)


def _atol(optimizer):
  """Weights' absolute tolerance (cohort_testing.assert_rounds_agree)."""
  return (cohort_testing.ADAPTIVE_ATOL
          if optimizer[0] in ('adam', 'yogi', 'adagrad') else 1e-6)


def _check_rounds(test, reference, in_cohorts, cohort_size, round_ids,
                  atol=1e-6):
  state, cohort_state = reference.initialize(), in_cohorts.initialize()
  # The same initial model. (The states differ elsewhere: TFF's FedAvg keeps
  # its client optimizer's hyperparameters in the client work's state; under
  # uniform weighting the aggregators differ too.)
  for want, have in zip(reference.get_model_weights(state).trainable,
                        in_cohorts.get_model_weights(cohort_state).trainable):
    np.testing.assert_array_equal(have, want)
  outputs = cohort_testing.assert_rounds_agree(
      test, reference, state, in_cohorts, cohort_state, round_ids=round_ids,
      atol=atol)
  size = cohort_size or cohorts.DEFAULT_COHORT_SIZE
  test.assertEqual(in_cohorts.last_round_cohorts,
                   -(-len(_ROUNDS[-1]) // size))
  # The case is real: the user table moved, users' rows differently.
  initial = reference.get_model_weights(state).trainable[0]
  final = reference.get_model_weights(outputs[-1][0].state).trainable[0]
  test.assertGreater(len(np.unique(np.round(final - initial, 6), axis=0)), 20)
  return outputs


class FedAvgCohortTest(cohort_testing.StoreTestCase):

  @parameterized.named_parameters(*_EXPLICIT_CASES)
  def test_three_rounds_equal_the_per_client_process(
      self, model, pipeline, uniform, cohort_size, proximal_strength,
      optimizer=('sgd', 0.4)):
    reference, in_cohorts = _processes(self.store, model, pipeline, uniform,
                                       cohort_size, False, proximal_strength,
                                       optimizer=optimizer)
    _check_rounds(self, reference, in_cohorts, cohort_size, False,
                  _atol(optimizer))

  @parameterized.parameters(settings.Mechanism.FIXED,
                            settings.Mechanism.ADAPTIVE)
  def test_dp_clips_each_user_not_the_cohort(self, mechanism):
    # Without noise the DP rounds are deterministic: each user's update is
    # clipped to 0.1 (adaptive: at first; the users' unclipped count moves
    # it every round) and the sum divided by the expected 12 users; with
    # adaptive zeroing before the clipping, per user.
    clip = 0.1
    dp = settings.DPConfig(mechanism=mechanism, noise_multiplier=0.0,
                           clip=clip, clip_learning_rate=0.5)
    reference, in_cohorts = _processes(
        self.store, mf.MFConfig(embedding_dim=3, l2=0.05, seed=5),
        pipelines.PipelineConfig(batch_size=3, local_epochs=2, seed=4),
        True, 5, False, None, dp=dp, zeroing=True, noise_multiplier=0.0)
    state = reference.initialize()
    outputs = cohort_testing.assert_rounds_agree(
        self, reference, state, in_cohorts, in_cohorts.initialize())
    # The case is real: the round's summed clipped updates are far longer
    # than one clip, so clipping a cohort's sum (5 users) would differ.
    cohort_testing.assert_clipping_mattered(self, reference, state,
                                            outputs[0][0].state, clip)
    if mechanism == settings.Mechanism.ADAPTIVE:
      cohort_testing.assert_clips_agree(self, outputs, clip)


class ImplicitFedAvgCohortTest(cohort_testing.StoreTestCase):
  """Implicit feedback: fresh negatives per epoch and round, drawn with
  replacement from 25 items, so users meet items several times."""

  _split = staticmethod(cohort_testing.implicit_split)

  @parameterized.named_parameters(
      dict(testcase_name='fedavg_biases_l2_two_epochs',
           model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
           pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                             seed=3),
           uniform=False, cohort_size=0, proximal_strength=None),
      dict(testcase_name='fedprox_published_negatives_uniform',
           model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
           pipeline=pipelines.PipelineConfig(
               batch_size=3, local_epochs=3, seed=5, num_negatives=2,
               exclude_heldout=True),
           uniform=True, cohort_size=4, proximal_strength=0.5),
      dict(testcase_name='fedavg_capped_examples_no_biases',
           model=mf.MFConfig(embedding_dim=4, use_biases=False, seed=4),
           pipeline=pipelines.PipelineConfig(
               batch_size=2, max_examples_per_user=5, seed=1,
               num_negatives=3),
           uniform=False, cohort_size=5, proximal_strength=None),
      # NCF: per-user copies of the dense layers.
      dict(testcase_name='fedavg_neumf_l2_two_epochs',
           model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(6, 4, 2),
                                 l2=0.05, seed=6),
           pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                             seed=2),
           uniform=False, cohort_size=0, proximal_strength=None),
      dict(testcase_name='fedprox_gmf_uniform',
           model=ncf.GMFConfig(embedding_dim=3, l2=0.1, seed=7),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=4,
                                             exclude_heldout=True),
           uniform=True, cohort_size=4, proximal_strength=0.5),
      dict(testcase_name='fedprox_neumf_item_features_id_dropout',
           model=cohort_testing.neumf_feature_model(5),
           pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                             seed=3, num_negatives=2),
           uniform=False, cohort_size=4, proximal_strength=0.5),
      dict(testcase_name='fedavg_mlp_small_cohorts',
           model=ncf.MLPConfig(mlp_layers=(4, 3), seed=8),
           pipeline=pipelines.PipelineConfig(batch_size=5, local_epochs=2,
                                             seed=6, num_negatives=2),
           uniform=False, cohort_size=5, proximal_strength=None),
      # Adam and Adagrad per user; items met again after steps without
      # them still move by their accumulators.
      dict(testcase_name='fedavg_neumf_adam',
           model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(6, 4, 2),
                                 l2=0.05, seed=6),
           pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                             seed=2),
           uniform=False, cohort_size=5, proximal_strength=None,
           optimizer=('adam', 0.02)),
      dict(testcase_name='fedprox_adagrad',
           model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=3),
           pipeline=pipelines.PipelineConfig(batch_size=3, local_epochs=2,
                                             seed=1),
           uniform=False, cohort_size=0, proximal_strength=0.5,
           optimizer=('adagrad', 0.02)),
      # U-AutoRec: per-user copies of the whole autoencoder, one example
      # (the user's vector, labels over all items) per epoch; capped
      # positives, negatives drawn twice, Keras L2 of the kernels.
      dict(testcase_name='fedavg_autorec_l2_two_epochs',
           model=autorec.AutoRecConfig(hidden_units=4, l2=0.05, seed=3),
           pipeline=pipelines.PipelineConfig(batch_size=4, local_epochs=2,
                                             seed=2, num_negatives=2),
           uniform=False, cohort_size=0, proximal_strength=None),
      dict(testcase_name='fedprox_autorec_adam_capped_uniform',
           model=autorec.AutoRecConfig(hidden_units=3, seed=5),
           pipeline=pipelines.PipelineConfig(
               batch_size=2, local_epochs=3, seed=4, num_negatives=3,
               max_examples_per_user=5, exclude_heldout=True),
           uniform=True, cohort_size=4, proximal_strength=0.5,
           optimizer=('adam', 0.02)),
  )
  def test_three_rounds_equal_the_per_client_process(
      self, model, pipeline, uniform, cohort_size, proximal_strength,
      optimizer=('sgd', 0.4)):
    reference, in_cohorts = _processes(self.store, model, pipeline, uniform,
                                       cohort_size, True, proximal_strength,
                                       optimizer=optimizer)
    _check_rounds(self, reference, in_cohorts, cohort_size, True,
                  _atol(optimizer))


if __name__ == '__main__':
  absltest.main()
