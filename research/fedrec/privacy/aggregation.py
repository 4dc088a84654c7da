"""The model-update aggregator: DP, secure aggregation, compression, zeroing.

`build_aggregator` composes TFF aggregation factories, outermost first:

1. Non-finite guard: a client update holding NaN or Inf is mapped to +Inf so
   that the zeroing below catches it (TFF's zeroing compares norms with `>`,
   which a NaN norm never satisfies).
2. Adaptive zeroing (`tff.learning`'s default: the zeroing norm tracks the
   98th percentile of update norms, times 2, plus 1): a corrupted or absurdly
   large update is replaced by zeros and counted in `zeroed_count`.
3. The mean:
   * `--dp=fixed` / `adaptive`: tensorflow-privacy's Gaussian query through
     `tff.aggregators.DifferentiallyPrivateFactory` (fixed L2 clip, McMahan et
     al. 2018; or adaptive clipping, Andrew et al. 2021). The sum of clipped
     updates gets N(0, (z C)^2) noise and is divided by the expected number of
     clients per round. Clients are unweighted.
   * otherwise TFF's (weighted or unweighted) mean.
4. The sum of (clipped) updates: with `--secure_aggregation`, TFF's
   `SecureSumFactory` (bounded integer secure sum; under fixed-clip DP the
   bounds are +-C, so DP noise is added to the securely summed clipped
   updates); with `--compression=quantize`, TFF's
   `EncodedSumFactory.quantize_above_threshold` (uniform quantization of every
   tensor with more than 20,000 values); else the plain sum.

`bytes_per_client` is the size of what one client uploads per round under
that configuration, computed from the update's tensor shapes and the
encodings' formats.
"""

import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from research.fedrec.privacy import accounting
from research.fedrec.privacy import settings

QUANTIZE_THRESHOLD = 20_000  # Tensors at most this large stay float32.


# The settings live in settings.py (free of TensorFlow, so binaries parse and
# check their flags before importing it); re-exported for the factories' users.
Mechanism = settings.Mechanism
Compression = settings.Compression
DPConfig = settings.DPConfig
AggregationConfig = settings.AggregationConfig
check_adaptive_noise = settings.check_adaptive_noise


class _NonFiniteToInf:
  """Maps NaN/Inf entries of each client's update to +Inf, then `inner`."""

  def __init__(self, inner):
    self._inner = inner

  def create(self, value_type, *weight_type):
    inner = self._inner.create(value_type, *weight_type)

    @tff.tensorflow.computation(value_type)
    def sanitize(value):
      return tf.nest.map_structure(
          lambda t: tf.where(tf.math.is_finite(t), t,
                             tf.constant(np.inf, t.dtype)), value)

    if weight_type:
      @tff.federated_computation(inner.next.type_signature.parameter)
      def next_fn(state, value, weight):
        return inner.next(state, tff.federated_map(sanitize, value), weight)
    else:
      @tff.federated_computation(inner.next.type_signature.parameter)
      def next_fn(state, value):
        return inner.next(state, tff.federated_map(sanitize, value))

    return tff.templates.AggregationProcess(inner.initialize, next_fn)


class _UnweightedGuard(_NonFiniteToInf,
                       tff.aggregators.UnweightedAggregationFactory):
  pass


class _WeightedGuard(_NonFiniteToInf,
                     tff.aggregators.WeightedAggregationFactory):
  pass


# `tff.learning`'s adaptive zeroing: the norm tracks the 98th percentile C of
# update norms (max-abs) and a client is zeroed above ZEROING_MULTIPLIER * C +
# ZEROING_INCREMENT. Cohort execution applies the same rule to each user
# (algorithms/fed_recon_cohort.py), with the same quantile query.
_ZEROING_QUANTILE = dict(initial_estimate=10.0, target_quantile=0.98,
                         learning_rate=math.log(10.0))
ZEROING_MULTIPLIER = 2.0
ZEROING_INCREMENT = 1.0


def zeroing_quantile_query() -> tfp.NoPrivacyQuantileEstimatorQuery:
  """The quantile estimator of adaptive zeroing (no noise: not a DP query).

  The query `PrivateQuantileEstimationProcess.no_noise` builds.
  """
  return tfp.NoPrivacyQuantileEstimatorQuery(geometric_update=True,
                                             **_ZEROING_QUANTILE)


def _default_zeroing(inner):
  """`tff.learning`'s adaptive zeroing (see the module docstring)."""
  zeroing_norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      multiplier=ZEROING_MULTIPLIER, increment=ZEROING_INCREMENT,
      **_ZEROING_QUANTILE)
  return tff.aggregators.zeroing_factory(zeroing_norm, inner)


class PreclippedQuery(tfp.SumAggregationDPQuery):
  """A DP query whose records arrive preprocessed: `inner` without its clipping.

  Cohort execution preprocesses each user's update with
  `inner.preprocess_record` inside the cohort (`clip_each`: a cohort's sum
  must not be clipped as one record) and sends the sum of its users'
  records; the server sums the cohorts' sums and `inner` adds the noise,
  normalizes, adapts its clip (adaptive clipping) and reports the DP event
  exactly as for per-client records. A record is `inner`'s sample state:
  the clipped update (fixed clip), or the clipped update with the users'
  unclipped indicators (`QuantileAdaptiveClipSumQuery`'s `_SampleState`).
  """

  def __init__(self, inner: tfp.DPQuery):
    self._inner = inner

  def initial_global_state(self):
    return self._inner.initial_global_state()

  def derive_sample_params(self, global_state):
    return self._inner.derive_sample_params(global_state)

  def initial_sample_state(self, template=None):
    # The template is a record, already shaped as `inner`'s sample state.
    return tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype),
                                 template)

  def preprocess_record(self, params, record):
    del params
    return record

  def get_noised_result(self, sample_state, global_state):
    return self._inner.get_noised_result(sample_state, global_state)

  def derive_metrics(self, global_state):
    return self._inner.derive_metrics(global_state)


def dp_query(dp: DPConfig, noise_multiplier: float,
             clients_per_round: int) -> tfp.DPQuery:
  """The tensorflow-privacy query of `--dp=fixed` or `--dp=adaptive`.

  The query TFF's `gaussian_fixed` / `gaussian_adaptive` build (a
  `NormalizedQuery` by the expected clients per round around a Gaussian sum,
  or around `QuantileAdaptiveClipSumQuery`).
  """
  if dp.mechanism == Mechanism.FIXED:
    factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        noise_multiplier, clients_per_round, dp.clip)
  else:
    check_adaptive_noise(noise_multiplier, clients_per_round)
    factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
        noise_multiplier, clients_per_round, initial_l2_norm_clip=dp.clip,
        target_unclipped_quantile=dp.target_quantile,
        learning_rate=dp.clip_learning_rate)
  return factory._query  # pylint: disable=protected-access


def _adaptive_numerator(query: tfp.DPQuery):
  """`query`'s `QuantileAdaptiveClipSumQuery` (under a normalization), or None."""
  numerator = getattr(query, '_numerator', query)
  return (numerator if isinstance(numerator, tfp.QuantileAdaptiveClipSumQuery)
          else None)


def clip_each(query: tfp.DPQuery, params, updates: Sequence[tf.Tensor]):
  """Each user's record of a DP query, for a cohort's users side by side.

  Args:
    query: The DP query (`dp_query`).
    params: Its sample params for the round (`derive_sample_params`).
    updates: The users' updates, each tensor [K, ...] (user first).

  Returns:
    `(clipped, indicators)`: the updates clipped per user by
    `query.preprocess_record` (each [K, ...]), and under adaptive clipping
    each user's unclipped indicator [K] (the quantile estimator's record),
    else None.
  """
  adaptive = _adaptive_numerator(query) is not None
  specs = tuple(tf.TensorSpec(u.shape[1:], u.dtype) for u in updates)

  def one(update):
    record = query.preprocess_record(params, update)
    if adaptive:
      return tuple(record.sum_state), record.quantile_estimator_state
    return tuple(record), tf.zeros([])

  clipped, indicators = tf.map_fn(
      one, tuple(updates),
      fn_output_signature=(specs, tf.TensorSpec([], tf.float32)))
  return list(clipped), (indicators if adaptive else None)


def cohort_record(query: tfp.DPQuery, clipped_sum: Sequence[tf.Tensor],
                  indicator_sum: Optional[tf.Tensor]):
  """A cohort's record for `PreclippedQuery(query)`: its users' summed ones."""
  adaptive = _adaptive_numerator(query)
  if adaptive is None:
    return list(clipped_sum)
  return adaptive._SampleState(list(clipped_sum), indicator_sum)  # pylint: disable=protected-access


def build_aggregator(dp: DPConfig, aggregation: AggregationConfig,
                     noise_multiplier: Optional[float],
                     clients_per_round: int, weighted: bool,
                     preclipped: bool = False, users_per_record: int = 1):
  """The model aggregator factory (None: TFF's default weighted mean).

  Args:
    dp: DP settings.
    aggregation: Secure aggregation, compression, zeroing.
    noise_multiplier: The resolved (given or calibrated) noise multiplier.
    clients_per_round: Expected clients per round (the DP denominator).
    weighted: Whether clients are weighted by examples (never under DP).
    preclipped: The records arrive clipped per user (cohort execution;
      `PreclippedQuery`): the same noise, normalization, clip adaptation and
      DP event, no clipping at the server.
    users_per_record: The most users whose updates one client's record sums
      (cohort execution: the cohort size); the secure sum's bound is scaled
      by it, since a cohort's sum of clipped updates may reach that many
      clips in a coordinate.
  """
  if aggregation.secure_aggregation:
    bound = users_per_record * (
        dp.clip if dp.mechanism == Mechanism.FIXED else float(2**20 - 1))
    if dp.mechanism == Mechanism.ADAPTIVE:
      raise ValueError('--secure_aggregation with --dp=adaptive is not '
                       'supported: the secure sum needs a fixed bound; use '
                       '--dp=fixed.')
    record_sum = tff.aggregators.SecureSumFactory(bound, -bound)
  elif aggregation.compression == Compression.QUANTIZE:
    record_sum = tff.aggregators.EncodedSumFactory.quantize_above_threshold(
        quantization_bits=aggregation.quantization_bits,
        threshold=QUANTIZE_THRESHOLD)
  else:
    record_sum = None

  if dp.enabled:
    # The query TFF's gaussian_fixed / gaussian_adaptive build, around the
    # record aggregator (secure sum or quantization) if any.
    query = dp_query(dp, noise_multiplier, clients_per_round)
    factory = tff.aggregators.DifferentiallyPrivateFactory(
        PreclippedQuery(query) if preclipped else query, record_sum)
  elif weighted:
    factory = tff.aggregators.MeanFactory(value_sum_factory=record_sum)
  else:
    factory = tff.aggregators.UnweightedMeanFactory(value_sum_factory=record_sum)
  if aggregation.zeroing:
    factory = _default_zeroing(factory)
  if isinstance(factory, tff.aggregators.WeightedAggregationFactory):
    return _WeightedGuard(factory)
  return _UnweightedGuard(factory)


def _quantized_bytes(shape: tuple[int, ...], bits: int) -> int:
  """Size of one tensor as TFF's quantizing encoder actually encodes it."""
  # pylint: disable=g-import-not-at-top
  from tensorflow_model_optimization.python.core.internal import (
      tensor_encoding as te)
  # pylint: enable=g-import-not-at-top
  encoder = te.encoders.as_simple_encoder(
      te.encoders.uniform_quantization(bits), tf.TensorSpec(shape, tf.float32))
  encoded, _ = encoder.encode(tf.random.stateless_uniform(shape, (0, 0)),
                              encoder.initial_state())
  return sum(int(np.prod(t.shape)) * t.dtype.size
             for t in tf.nest.flatten(encoded))


def bytes_per_client(update_shapes: Sequence[Sequence[int]], dp: DPConfig,
                     aggregation: AggregationConfig, weighted: bool) -> int:
  """Bytes one client uploads per round (payload, not protocol overhead).

  float32 values take 4 bytes; a quantized tensor takes what TFF's encoder
  (tensorflow-model-optimization's uniform quantization with bit packing)
  produces for it, measured by encoding a tensor of that shape; secure
  aggregation sends each value as a 32-bit integer. Adaptive clipping adds the clipped
  indicator and zeroing the over-threshold indicator (4 bytes each); a
  weighted mean adds the weight.
  """
  total = 0
  for shape in update_shapes:
    size = int(np.prod(shape, dtype=np.int64))
    if (aggregation.compression == Compression.QUANTIZE and
        size > QUANTIZE_THRESHOLD):
      total += _quantized_bytes(tuple(shape), aggregation.quantization_bits)
    else:
      total += 4 * size
  if dp.mechanism == Mechanism.ADAPTIVE:
    total += 4
  if aggregation.zeroing:
    total += 4
  if weighted and not dp.enabled:
    total += 4
  return total
