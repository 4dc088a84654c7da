"""FedRecon in cohorts against the per-client process (the reference).

The per-client process is TFF's own `build_fed_recon`, one TFF client per
user; the cohort process trains many users in one TFF client. On a random
corpus whose users have 1 to 14 ratings (so partial last batches, one-batch
users and idle steps all occur) both run the same three rounds from the same
state, and the global weights and training metrics must agree to 1e-5
relative, under several settings: biases and L2, several epochs of both
phases, `split_dataset`, step caps, `max_examples_per_user`, uniform
weighting and small cohorts; and with adaptive zeroing, on a case where it
zeroes some users of a cohort but not all.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from research.fedrec.algorithms import client_data
from research.fedrec.algorithms import cohorts
from research.fedrec.algorithms import fed_recon
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.models import mf
from research.fedrec.models import ncf
from research.fedrec.privacy import aggregation
from research.fedrec.privacy import settings
from research.fedrec.training import experiment
from research.fedrec.training import runtime
from tests.algorithms import cohort_testing

# Every test here runs TFF processes.
pytestmark = pytest.mark.slow

_NUM_USERS, _NUM_ITEMS = cohort_testing.NUM_USERS, cohort_testing.NUM_ITEMS
_ROUNDS = cohort_testing.ROUNDS
# Items that do not exist while the model trains (item_cold_start).
_NEW_ITEMS = tuple(range(1, _NUM_ITEMS, 3))
# Large enough that some users' updates exceed the zeroing norm, not all.
_ZEROING_LEARNING_RATE = 2.0

class FedReconCohortTest(cohort_testing.StoreTestCase):

  @parameterized.named_parameters(
      dict(testcase_name='biases_l2_two_epochs_each',
           model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
           recon=fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=3),
           uniform=False, cohort_size=0),
      dict(testcase_name='split_dataset_step_caps_uniform_small_cohorts',
           model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
           recon=fed_recon.ReconConfig(
               recon_epochs=2, recon_steps_max=3, post_recon_epochs=3,
               post_recon_steps_max=4, split_dataset=True),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=5),
           uniform=True, cohort_size=4),
      dict(testcase_name='capped_examples_no_biases',
           model=mf.MFConfig(embedding_dim=4, use_biases=False, seed=4),
           recon=fed_recon.ReconConfig(post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=2,
                                             max_examples_per_user=5, seed=1),
           uniform=False, cohort_size=5),
      # Stateful optimizers (each user's state frozen while it is idle):
      # explicit ratings laid out epoch by epoch (cohorts.EpochCohortPacker),
      # with split_dataset's even / odd batches and step caps; and momentum
      # with Adagrad under an example cap.
      dict(testcase_name='adam_split_dataset_step_caps',
           model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
           recon=fed_recon.ReconConfig(
               recon_epochs=2, recon_steps_max=3, post_recon_epochs=2,
               post_recon_steps_max=3, split_dataset=True),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=3),
           uniform=False, cohort_size=4,
           optimizers=(('adam', 0.02), ('adam', 0.02))),
      # MF with item features: the projection and feature bias whole per
      # user, id dropout drawn per user batch as the Keras layer draws it.
      dict(testcase_name='item_features_id_dropout',
           model=cohort_testing.feature_model(3),
           recon=fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=4),
           uniform=False, cohort_size=4),
      dict(testcase_name='item_features_no_biases_split_dataset',
           model=cohort_testing.feature_model(5, use_biases=False),
           recon=fed_recon.ReconConfig(post_recon_epochs=2,
                                       split_dataset=True),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=2),
           uniform=True, cohort_size=0),
      dict(testcase_name='momentum_adagrad_capped_uniform',
           model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
           recon=fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=2,
                                             max_examples_per_user=5, seed=1),
           uniform=True, cohort_size=0,
           optimizers=(('sgdm', 0.1), ('adagrad', 0.2))),
  )
  def test_three_rounds_equal_the_per_client_process(
      self, model, recon, pipeline, uniform, cohort_size,
      optimizers=(('sgd', 0.3), ('sgd', 0.2))):
    (client, client_lr), (reconstruction, reconstruction_lr) = optimizers
    optimizer_settings = experiment.OptimizerConfig(
        client=client, client_learning_rate=client_lr, server='sgd',
        server_learning_rate=0.7, reconstruction=reconstruction,
        reconstruction_learning_rate=reconstruction_lr)
    aggregator_args = (settings.DPConfig(),
                       settings.AggregationConfig(zeroing=False), None, 12)
    reference = fed_recon.build_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(), pipeline,
        self.store, aggregation.build_aggregator(
            *aggregator_args, weighted=not uniform),
        uniform_weighting=uniform)
    in_cohorts = fed_recon.build_cohort_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(),
        optimizer_settings, pipeline, self.store,
        aggregation.build_aggregator(*aggregator_args, weighted=True),
        uniform, cohort_size)
    state = reference.initialize()
    cohort_state = in_cohorts.initialize()
    if not uniform:
      # The same state: a run resumes from either's checkpoints.
      tf.nest.assert_same_structure(state, cohort_state)
      cohort_state = state
    # (Uniform weighting: per_client averages its users with an unweighted
    # mean, cohorts with a weighted mean of cohorts; the aggregator states
    # differ, so each process runs from its own.)
    adaptive = {client, reconstruction} & {'adam', 'adagrad', 'yogi'}
    cohort_testing.assert_rounds_agree(
        self, reference, state, in_cohorts, cohort_state,
        atol=cohort_testing.ADAPTIVE_ATOL if adaptive else 1e-6)
    # Small cohorts: several per round, never an empty one.
    size = cohort_size or cohorts.DEFAULT_COHORT_SIZE
    self.assertEqual(in_cohorts.last_round_cohorts,
                     -(-len(_ROUNDS[-1]) // size))

  def test_adaptive_zeroing_acts_on_each_user(self):
    # A client learning rate that makes the heavier users' updates exceed the
    # zeroing norm (2 * 10 + 1 at first) while lighter users' stay below: a
    # cohort zeroed as one client would lose them all, or keep them all.
    optimizer_settings = experiment.OptimizerConfig(
        client='sgd', client_learning_rate=_ZEROING_LEARNING_RATE,
        server='sgd', server_learning_rate=0.5, reconstruction='sgd',
        reconstruction_learning_rate=0.1)
    model = mf.MFConfig(embedding_dim=2, seed=3)
    recon = fed_recon.ReconConfig(post_recon_epochs=3)
    pipeline = pipelines.PipelineConfig(batch_size=2, seed=2)
    zeroing = settings.AggregationConfig()  # tff.learning's default.
    reference = fed_recon.build_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(), pipeline,
        self.store, aggregation.build_aggregator(
            settings.DPConfig(), zeroing, None, 12, weighted=True))
    in_cohorts = fed_recon.build_cohort_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(),
        optimizer_settings, pipeline, self.store,
        aggregation.build_aggregator(
            settings.DPConfig(), settings.AggregationConfig(zeroing=False),
            None, 12, weighted=True), False, cohort_size=0, zeroing=True)
    outputs = cohort_testing.assert_rounds_agree(
        self, reference, reference.initialize(), in_cohorts,
        in_cohorts.initialize())
    norms, zeroed = [], []
    for expected, got in outputs:
      want, have = expected.metrics, got.metrics
      # Measured under the same names as the per-client aggregator's.
      self.assertEqual(have['aggregator']['zeroed_count'],
                       want['aggregator']['zeroed_count'])
      np.testing.assert_allclose(have['aggregator']['zeroing_norm'],
                                 want['aggregator']['zeroing_norm'],
                                 rtol=1e-6)
      norms.append(float(want['aggregator']['zeroing_norm']))
      zeroed.append(int(want['aggregator']['zeroed_count']))
    # The case is real: some users of a round zeroed, not all (the whole
    # round is one cohort), and the zeroing norm adapted between rounds.
    self.assertTrue(any(0 < z < len(ids) for z, ids in zip(zeroed, _ROUNDS)),
                    zeroed)
    self.assertEqual(norms[0], 21.0)
    self.assertNotEqual(norms[1], norms[0])
    self.assertEqual(in_cohorts.last_round_cohorts, 1)

  def _dp_processes(self, noise_multiplier, clip, zeroing,
                    mechanism=settings.Mechanism.FIXED, secure=False,
                    users_per_record=5):
    """Per-client and cohort DP-FedRecon (uniform weighting)."""
    optimizer_settings = experiment.OptimizerConfig(
        client='sgd', client_learning_rate=0.3, server='sgd',
        server_learning_rate=1.0, reconstruction='sgd',
        reconstruction_learning_rate=0.2)
    model = mf.MFConfig(embedding_dim=3, l2=0.05, seed=5)
    recon = fed_recon.ReconConfig(post_recon_epochs=2)
    pipeline = pipelines.PipelineConfig(batch_size=3, seed=4)
    # Adaptive: the clip moves by up to exp(0.5) per round, towards the
    # median of the users' update norms.
    dp = settings.DPConfig(mechanism=mechanism,
                           noise_multiplier=noise_multiplier, clip=clip,
                           target_quantile=0.5, clip_learning_rate=0.5)
    reference = fed_recon.build_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(), pipeline,
        self.store, aggregation.build_aggregator(
            dp, settings.AggregationConfig(
                zeroing=zeroing, secure_aggregation=secure), noise_multiplier,
            12, weighted=False), uniform_weighting=True)
    in_cohorts = fed_recon.build_cohort_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(),
        optimizer_settings, pipeline, self.store,
        aggregation.build_aggregator(
            dp, settings.AggregationConfig(
                zeroing=False, secure_aggregation=secure), noise_multiplier,
            12, weighted=True, preclipped=True,
            users_per_record=users_per_record), True, cohort_size=5,
        zeroing=zeroing, clip_query=aggregation.dp_query(
            dp, noise_multiplier, 12))
    return reference, in_cohorts

  def test_dp_clips_each_user_not_the_cohort(self):
    # Without noise the DP rounds are deterministic: the cohort process must
    # match per-client DP-FedRecon (each user's update clipped to 0.2, the
    # sum divided by the expected 12 clients per round), with zeroing too.
    clip = 0.2
    reference, in_cohorts = self._dp_processes(0.0, clip, zeroing=True)
    state = reference.initialize()
    outputs = cohort_testing.assert_rounds_agree(
        self, reference, state, in_cohorts, in_cohorts.initialize())
    # The case is real: the round's summed clipped updates are far longer
    # than one clip, so clipping a cohort's sum as one record (cohorts of 5
    # users here) would have changed it.
    cohort_testing.assert_clipping_mattered(self, reference, state,
                                            outputs[0][0].state, clip)

  def test_secure_sum_bound_is_scaled_to_the_cohort(self):
    # Secure aggregation bounds each coordinate of a client's record by the
    # clip; a cohort's record sums up to 5 users' clipped updates, so its
    # bound is 5 clips. With it the rounds are per-client DP-FedRecon's;
    # with the per-user bound the cohort sums are cut and they are not.
    runtime.release()
    runtime.start(secure_aggregation=True)
    try:
      reference, in_cohorts = self._dp_processes(0.0, 0.2, zeroing=False,
                                                 secure=True)
      state = reference.initialize()
      cohort_testing.assert_rounds_agree(self, reference, state, in_cohorts,
                                         in_cohorts.initialize())
      _, unscaled = self._dp_processes(0.0, 0.2, zeroing=False, secure=True,
                                       users_per_record=1)
      want = reference.next(state, _ROUNDS[0]).state
      got = unscaled.next(unscaled.initialize(), _ROUNDS[0]).state
      gap = max(np.max(np.abs(a - b)) for a, b in zip(
          unscaled.get_model_weights(got).trainable,
          reference.get_model_weights(want).trainable))
      self.assertGreater(gap, 1e-3)
    finally:
      runtime.release()
      runtime.start()

  def test_adaptive_dp_clips_and_counts_each_user(self):
    # Adaptive clipping (Andrew et al.) without noise is deterministic too:
    # each round's clip is broadcast from the server's DP aggregator, each
    # user clipped by it, and the users' unclipped count (not the cohorts')
    # moves the clip. Both runs must match, clip by clip.
    reference, in_cohorts = self._dp_processes(
        0.0, 0.2, zeroing=False, mechanism=settings.Mechanism.ADAPTIVE)
    state = reference.initialize()
    outputs = cohort_testing.assert_rounds_agree(
        self, reference, state, in_cohorts, in_cohorts.initialize())
    # The case is real: the clip bit (summed clipped updates far longer than
    # one clip) and moved every round. Counting a cohort as one record would
    # move it by another amount: rounds of 12 users are 3 cohorts here.
    cohort_testing.assert_clipping_mattered(self, reference, state,
                                            outputs[0][0].state, 0.2)
    cohort_testing.assert_clips_agree(self, outputs, 0.2)

  def test_dp_event_and_noise_scale_are_the_per_client_ones(self):
    reference, in_cohorts = self._dp_processes(1.0, 0.5, zeroing=False)
    states = [process.next(process.initialize(), _ROUNDS[0]).state.aggregator
              for process in (reference, in_cohorts)]
    # The same DP event (what the accountant composes) and query state: the
    # noise N(0, (z C)^2) on the sum, divided by the expected clients.
    self.assertEqual(states[1].dp_event, states[0].dp_event)
    self.assertEqual(states[1].query_state, states[0].query_state)
    self.assertEqual(states[0].dp_event.noise_multiplier, 1.0)
    self.assertEqual(states[0].query_state.numerator_state.stddev, 0.5)
    self.assertEqual(states[0].query_state.denominator, 12.0)

  def test_adaptive_dp_event_is_the_per_client_one(self):
    # With noise: the value noise and the clipped-count noise of adaptive
    # clipping, composed into one event, as per client.
    reference, in_cohorts = self._dp_processes(
        1.0, 0.5, zeroing=False, mechanism=settings.Mechanism.ADAPTIVE)
    events = [process.next(process.initialize(), _ROUNDS[0])
              .state.aggregator.dp_event for process in (reference, in_cohorts)]
    self.assertEqual(events[1], events[0])
    self.assertEqual(events[0].class_name, b'ComposedDpEvent')
    self.assertLen(events[0].events, 2)

  def test_a_user_whose_update_is_not_finite_is_left_out(self):
    # A huge client learning rate blows up every user with more than one
    # training step (batches of 2): its second step overflows. TFF zeroes
    # such a client's update with weight 0, and so must the cohort; users of
    # one or two ratings take one step and stay finite.
    optimizer_settings = experiment.OptimizerConfig(
        client='sgd', client_learning_rate=1e25, server='sgd',
        server_learning_rate=1.0, reconstruction='sgd',
        reconstruction_learning_rate=0.1)
    model = mf.MFConfig(embedding_dim=2, seed=1)
    recon = fed_recon.ReconConfig()
    pipeline = pipelines.PipelineConfig(batch_size=2)
    everyone = [str(u) for u in range(_NUM_USERS)]
    args = (settings.DPConfig(), settings.AggregationConfig(zeroing=False),
            None, 12)
    reference = fed_recon.build_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(), pipeline,
        self.store, aggregation.build_aggregator(*args, weighted=True))
    in_cohorts = fed_recon.build_cohort_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(),
        optimizer_settings, pipeline, self.store,
        aggregation.build_aggregator(*args, weighted=True), False)
    state = reference.initialize()
    expected = reference.get_model_weights(
        reference.next(state, everyone).state).trainable
    got = in_cohorts.get_model_weights(
        in_cohorts.next(state, everyone).state).trainable
    for want, have in zip(expected, got):
      self.assertTrue(np.all(np.isfinite(have)))
      np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
    # The case is real: some users' updates were not finite, some were.
    initial = reference.get_model_weights(state).trainable
    self.assertFalse(np.allclose(expected[0], initial[0]))


class ImplicitFedReconCohortTest(cohort_testing.StoreTestCase):
  """Implicit feedback: fresh negatives per epoch and round, drawn with
  replacement from 25 items, so users meet items several times."""

  _split = staticmethod(cohort_testing.implicit_split)

  @parameterized.named_parameters(
      dict(testcase_name='biases_l2_two_epochs_each',
           model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
           recon=fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=3),
           uniform=False, cohort_size=0),
      dict(testcase_name='published_negatives_step_caps_uniform',
           model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
           recon=fed_recon.ReconConfig(
               recon_epochs=2, recon_steps_max=3, post_recon_epochs=3,
               post_recon_steps_max=4),
           pipeline=pipelines.PipelineConfig(
               batch_size=3, seed=5, num_negatives=2, exclude_heldout=True),
           uniform=True, cohort_size=4),
      dict(testcase_name='capped_examples_no_biases',
           model=mf.MFConfig(embedding_dim=4, use_biases=False, seed=4),
           recon=fed_recon.ReconConfig(post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(
               batch_size=2, max_examples_per_user=5, seed=1,
               num_negatives=3),
           uniform=False, cohort_size=5),
      # NCF: two local vectors (NeuMF), per-user copies of dense layers.
      dict(testcase_name='neumf_l2_two_epochs_each',
           model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(6, 4, 2),
                                 l2=0.05, seed=6),
           recon=fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=2),
           uniform=False, cohort_size=0),
      dict(testcase_name='gmf_step_caps_uniform',
           model=ncf.GMFConfig(embedding_dim=3, l2=0.1, seed=7),
           recon=fed_recon.ReconConfig(recon_steps_max=2, post_recon_epochs=2,
                                       post_recon_steps_max=3),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=4,
                                             exclude_heldout=True),
           uniform=True, cohort_size=4),
      dict(testcase_name='item_features_negatives',
           model=cohort_testing.feature_model(6),
           recon=fed_recon.ReconConfig(post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=3,
                                             num_negatives=2),
           uniform=False, cohort_size=5),
      dict(testcase_name='neumf_item_features_id_dropout',
           model=cohort_testing.neumf_feature_model(7),
           recon=fed_recon.ReconConfig(post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=4,
                                             num_negatives=2),
           uniform=False, cohort_size=5),
      dict(testcase_name='mlp_small_cohorts',
           model=ncf.MLPConfig(mlp_layers=(4, 3), seed=8),
           recon=fed_recon.ReconConfig(),
           pipeline=pipelines.PipelineConfig(batch_size=5, seed=6,
                                             num_negatives=2),
           uniform=False, cohort_size=5),
      # Stateful optimizers, a state per user and phase, frozen while the
      # user is idle (step caps, between epochs): the implicit defaults
      # (Adam, both phases), and momentum / Yogi.
      dict(testcase_name='neumf_adam_step_caps',
           model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(6, 4, 2),
                                 l2=0.05, seed=6),
           recon=fed_recon.ReconConfig(recon_epochs=2, recon_steps_max=3,
                                       post_recon_epochs=2),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=2),
           uniform=False, cohort_size=5,
           optimizers=(('adam', 0.02), ('adam', 0.02))),
      dict(testcase_name='mf_momentum_yogi_uniform',
           model=mf.MFConfig(embedding_dim=3, l2=0.05, seed=1),
           recon=fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=2,
                                       post_recon_steps_max=4),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=3),
           uniform=True, cohort_size=4,
           optimizers=(('sgdm', 0.2), ('yogi', 0.02))),
      # --split_dataset: reconstruction on the even-positioned positives,
      # training on the odd ones (phases of different lengths; a user of one
      # positive trains on nothing).
      dict(testcase_name='split_dataset_step_caps_uniform',
           model=mf.MFConfig(embedding_dim=2, l2=0.1, seed=2),
           recon=fed_recon.ReconConfig(
               recon_epochs=2, recon_steps_max=3, post_recon_epochs=2,
               post_recon_steps_max=3, split_dataset=True),
           pipeline=pipelines.PipelineConfig(batch_size=3, seed=5,
                                             num_negatives=2),
           uniform=True, cohort_size=4),
      dict(testcase_name='split_dataset_neumf_adam',
           model=ncf.NeuMFConfig(embedding_dim=3, mlp_layers=(6, 4, 2),
                                 l2=0.05, seed=6),
           recon=fed_recon.ReconConfig(post_recon_epochs=2,
                                       split_dataset=True),
           pipeline=pipelines.PipelineConfig(batch_size=4, seed=2,
                                             exclude_heldout=True),
           uniform=False, cohort_size=0,
           optimizers=(('adam', 0.02), ('adam', 0.02))),
  )
  def test_three_rounds_equal_the_per_client_process(
      self, model, recon, pipeline, uniform, cohort_size,
      optimizers=(('sgd', 0.5), ('sgd', 0.3))):
    (client, client_lr), (reconstruction, reconstruction_lr) = optimizers
    optimizer_settings = experiment.OptimizerConfig(
        client=client, client_learning_rate=client_lr, server='sgd',
        server_learning_rate=0.7, reconstruction=reconstruction,
        reconstruction_learning_rate=reconstruction_lr)
    aggregator_args = (settings.DPConfig(),
                       settings.AggregationConfig(zeroing=False), None, 12)
    reference = fed_recon.build_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(), pipeline,
        self.store, aggregation.build_aggregator(
            *aggregator_args, weighted=not uniform),
        uniform_weighting=uniform, implicit=True)
    in_cohorts = fed_recon.build_cohort_training_process(
        model, _NUM_ITEMS, recon, optimizer_settings.create(),
        optimizer_settings, pipeline, self.store,
        aggregation.build_aggregator(*aggregator_args, weighted=True),
        uniform, cohort_size, implicit=True)
    state = reference.initialize()
    cohort_state = state if not uniform else in_cohorts.initialize()
    adaptive = {client, reconstruction} & {'adam', 'adagrad', 'yogi'}
    cohort_testing.assert_rounds_agree(
        self, reference, state, in_cohorts, cohort_state, round_ids=True,
        atol=cohort_testing.ADAPTIVE_ATOL if adaptive else 1e-6)
    size = cohort_size or cohorts.DEFAULT_COHORT_SIZE
    self.assertEqual(in_cohorts.last_round_cohorts,
                     -(-len(_ROUNDS[-1]) // size))

  @parameterized.named_parameters(('whole', False, ()), ('split', True, ()),
                                  ('new_items', False, _NEW_ITEMS))
  def test_cohorts_hold_the_per_client_examples(self, split_dataset,
                                                unavailable_items):
    # The packer's examples of a user are its per-client dataset's, epoch by
    # epoch (under split_dataset, reconstruction's and training's differ in
    # number); repeated items share one slot. Both users (of different
    # rounds) are drawn in one call. Items that do not exist yet
    # (item_cold_start's cold items) are never negatives, in either.
    pipeline = pipelines.PipelineConfig(batch_size=4, seed=3, num_negatives=4,
                                        exclude_heldout=True,
                                        unavailable_items=unavailable_items)
    packer = cohorts.ImplicitCohortPacker(self.store, pipeline, _NUM_ITEMS,
                                          1, 2, cohort_size=1,
                                          split_dataset=split_dataset)
    data = client_store.create_client_data(
        self.store, client_store.TRAIN, with_heldout=True).preprocess(
            client_data.create_implicit_recon_train_fn(
                pipeline, _NUM_ITEMS, 1, 2, split_dataset))
    packed = {int(c['users'][0]): c for c in packer.cohorts(['3/2', '17/5'])}
    self.assertLen(packed, 2)
    for client_id in ('3/2', '17/5'):
      cohort = packed[int(client_id.partition('/')[0])]
      batches = list(data.serializable_dataset_fn(
          client_id).as_numpy_iterator())
      count, recon_count = (int(cohort['counts'][0]),
                            int(cohort['recon_counts'][0]))
      items = cohort['items'].reshape(3, -1)
      labels = cohort['labels'].reshape(3, -1)
      for epoch, size in enumerate((recon_count, count, count)):
        mine = [b for b in batches if b['x']['epoch'][0] == epoch]
        np.testing.assert_array_equal(
            items[epoch, :size],
            np.concatenate([b['x']['item'] for b in mine]))
        np.testing.assert_array_equal(
            labels[epoch, :size], np.concatenate([b['y'] for b in mine]))
      negatives = np.concatenate([
          items[epoch, :size][labels[epoch, :size] == 0.0]
          for epoch, size in enumerate((recon_count, count, count))])
      self.assertGreater(negatives.size, 0)
      self.assertFalse(np.isin(negatives, unavailable_items).any())
      trained = items[1:, :count]
      slots = cohort['slots'].reshape(2, -1)[:, :count]
      np.testing.assert_array_equal(cohort['slot_items'][0][slots], trained)
      self.assertLen(cohort['slot_items'][0], len(np.unique(trained)))
      self.assertLess(len(np.unique(trained)), trained.size)
      positives = (recon_count + (count if split_dataset else 0)) // 5
      if split_dataset:  # Even- and odd-positioned positives.
        self.assertEqual(recon_count // 5, (positives + 1) // 2)
        self.assertEqual(count // 5, positives // 2)
      else:
        self.assertEqual(count, recon_count)


if __name__ == '__main__':
  absltest.main()
