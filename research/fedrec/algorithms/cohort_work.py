"""The client work shared by the methods that train in cohorts.

A cohort is K users in one TFF client (algorithms/cohorts.py packs them). A
method's cohort client work trains every user side by side, each on its own
copies of the parameters it touches, and returns the users' weighted mean
update (`combine`): each user weighted by its training examples (or
uniformly), a user whose update is not finite left out with weight 0, as TFF
does per client. The server's weighted mean over cohorts, each weighted by its
users' summed weight, is then the mean over users.

What TFF's aggregators would do to each client's update in the per-client
process is done here to each user, since doing it to a cohort's sum would
treat many users as one:

* adaptive zeroing (`ZeroingWork`): a user's update whose max-abs norm exceeds
  the zeroing norm is zeroed and keeps its weight, and every user's norm
  updates the quantile estimate behind the zeroing norm (TFF's
  `zeroing_factory`, tff.learning's default aggregator);
* user-level DP (fixed or adaptive clip): each user's update is clipped by
  the DP query's own `preprocess_record` with the round's clip, broadcast from
  the server's DP aggregator, and the cohort returns the plain sum (with its
  users' unclipped count under adaptive clipping), which the server's DP
  aggregator noises (and from which it adapts the clip).

`client_work_process` wraps a method's cohort computation as a
`ClientWorkProcess`, and `compose` builds the learning process from it with
TFF's broadcast, the configured aggregator and the server optimizer's
finalizer, so the state is the per-client process's.
"""

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import sparse_uploads
from research.fedrec.privacy import aggregation


@tf.autograph.experimental.do_not_convert
def position_mask(counts, batch_size: int, step, active):
  """[K, B] 1.0 where batch `step` of an active user holds an example."""
  inside = (step * batch_size + tf.range(batch_size))[None, :] < (
      counts[:, None])
  return tf.cast(tf.logical_and(inside, active[:, None]), tf.float32)


@tf.autograph.experimental.do_not_convert
def masked_losses(example_loss, l2: float, targets, mask, prediction,
                  squares):
  """Per-user masked batch losses [K], as the Keras loss of each user.

  `example_loss(targets, predictions)` is the per-example loss (squared error
  or binary cross-entropy of the logit); `squares` [K, B] each example's sum
  of squares of its pair's embeddings, whose L2 term is per example, as
  `mf.PairL2`. Each user's loss is its batch mean.
  """
  size = tf.reduce_sum(mask, axis=1)
  return tf.math.divide_no_nan(
      tf.reduce_sum(mask * example_loss(targets, prediction), axis=1),
      size) + tf.math.divide_no_nan(
          tf.reduce_sum(mask * l2 * squares, axis=1), size)


@tf.autograph.experimental.do_not_convert
def update_metrics(metrics, explicit: bool, step_labels, logits, mask,
                   losses, active) -> None:
  """A step's training metrics of a cohort (`metrics[-1]` is the loss).

  Padded and idle positions are left out: by weight (explicit) or by label
  -1 (implicit, whose metrics take no weights).
  """
  for metric in metrics[:-1]:
    if explicit:
      metric.update_state(tf.reshape(step_labels, [-1]),
                          tf.reshape(logits, [-1]),
                          sample_weight=tf.reshape(mask, [-1]))
    else:
      labelled = tf.where(mask > 0, step_labels, -1.0)
      metric.update_state(tf.reshape(labelled, [-1]),
                          tf.reshape(logits, [-1]))
  tf.keras.metrics.Mean.update_state(
      metrics[-1], losses, sample_weight=tf.cast(active, tf.float32))


@tf.autograph.experimental.do_not_convert
def item_side_parts(initial, copies, is_table, slot_items, num_items):
  """`combine`'s parts of users' copies of the global weights: item tables'
  rows by `slot_items`, every other weight whole."""
  return [(start - copy, slot_items, num_items) if table else
          (start - copy, None, None)
          for start, copy, table in zip(initial, copies, is_table)]


def squared_error(targets, predictions):
  return tf.square(targets - predictions)


def cross_entropy(labels, logits):
  return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


_LOG_FLOOR = -100.0  # torch.nn.BCELoss clamps each log here,
_BCE_EPS = 1e-12  # and the gradient's denominator p (1 - p) here.


@tf.custom_gradient
def _bce_of_probabilities(labels, probabilities):
  """torch.nn.BCELoss(reduction='none') of float32 probabilities: its value
  and its backward formula (aten binary_cross_entropy_backward)."""
  p = probabilities
  loss = -(labels * tf.maximum(tf.math.log(p), _LOG_FLOOR) +
           (1.0 - labels) * tf.maximum(tf.math.log(1.0 - p), _LOG_FLOOR))

  def grad(upstream):
    return (tf.zeros_like(labels),
            upstream * (p - labels) / tf.maximum((1.0 - p) * p, _BCE_EPS))
  return loss, grad


def probability_cross_entropy(labels, logits):
  """The binary cross-entropy as PFedRec's code computes it: BCELoss of
  sigmoid(logits) in float32 (`--probability_loss`). Equal to
  `cross_entropy` while sigmoid(logits) is not saturated; once it is (p
  rounds to 1 above about logit 17; p (1 - p) falls under 1e-12 below about
  logit -28) the gradient vanishes instead of staying |p - label|."""
  return _bce_of_probabilities(labels, tf.sigmoid(logits))


def zeroing_parts(zeroing: bool):
  """(`ZeroingWork` or None, its params' TFF type, its norm's TFF type)."""
  if not zeroing:
    return None, tff.StructType([]), tff.StructType([])
  work = ZeroingWork()
  return work, work.params_type, tff.TensorType(np.float32)


@dataclasses.dataclass(frozen=True)
class SiloRecords:
  """Cross-silo rounds (data/silos.py): each cohort is one silo's users.

  `uniform`: the server weighs every silo as one (else by its users' summed
  weight, as any cohort). `clip_silo` (silo-level DP): the DP record is the
  silo's update, its users' weighted mean clipped as one record, instead of
  each user's clipped update (user-level DP, the cohorts' default).
  `sparsify`: each silo sends a share of its update's item rows
  (algorithms/sparse_uploads.py).
  """

  uniform: bool = False
  clip_silo: bool = False
  # Sparsified uploads (`sparse_uploads.SparsifyConfig`), each silo's
  # residual kept in `residual_dir`, randomk's draws from `seed`.
  sparsify: Optional[sparse_uploads.SparsifyConfig] = None
  residual_dir: str = ''
  seed: int = 0

  @property
  def sparsified(self) -> bool:
    return self.sparsify is not None and self.sparsify.enabled


@tf.autograph.experimental.do_not_convert
def combine(parts, examples, uniform_weighting: bool, zeroing_work,
            quantile_params, zeroing_norm, clip_query, clip_params,
            silos: Optional[SiloRecords] = None):
  """A cohort's result from its users' updates.

  Args:
    parts: The update's tensors in the order of the model's trainable
      weights, each `(delta, segment_ids, num_segments)`: `delta` holds each
      user's update (initial minus final) of the tensor, [K, ...]; for a
      table of which each user holds copies of some rows, `delta` is
      [K, L, ...] and `segment_ids` [K, L] says which row of the
      `num_segments`-row table each position is (padding: any row, with a
      zero update); for a tensor every user holds whole, both are None.
    examples: [K] each user's training examples (its weight).
    uniform_weighting: Weight users equally instead.
    zeroing_work: `ZeroingWork` for adaptive zeroing per user, or None.
    quantile_params, zeroing_norm: Its broadcast params and norm.
    clip_query: The DP query clipping each user (`aggregation.dp_query`),
      or None.
    clip_params: Its sample params for the round (the clip).
    silos: The cohort is a silo (`SiloRecords`); None: users sampled into
      cohorts.

  Returns:
    `(update, total_weight, quantile_record, zeroed_count, upload_bytes)`:
    the update is the users' weighted mean (a non-finite user left out with
    weight 0, as TFF does per client), its tensors in the order of `parts`;
    under DP the cohort's record for `aggregation.PreclippedQuery` (its users'
    clipped updates summed, with their unclipped indicators under adaptive
    clipping). `upload_bytes`: what the cohort's records take sent
    row-sparse (`sparse_upload_bytes`).
  """
  deltas = [delta for delta, _, _ in parts]
  num_users = tf.shape(examples)[0]
  finite = tf.reduce_all(tf.stack([
      tf.reduce_all(tf.math.is_finite(tf.reshape(d, [num_users, -1])),
                    axis=1) for d in deltas]), axis=0)
  weights = tf.ones([num_users]) if uniform_weighting else examples
  weights = tf.where(finite, weights, 0.0)
  total_weight = tf.reduce_sum(weights)
  kept = finite  # Users whose update enters the sum.
  quantile_record = ()
  zeroed_count = ()

  def per_user(mask, delta):  # A [K] mask shaped to broadcast over delta.
    return tf.reshape(mask, [-1] + [1] * (len(delta.shape) - 1))

  if zeroing_work is not None:
    # As TFF's zeroing of a client: the max-abs norm of the (finite, else
    # zero) update against the zeroing norm; a zeroed user keeps its
    # weight. Every user's norm updates the quantile estimate.
    norms = tf.reduce_max(tf.stack([
        tf.reduce_max(tf.abs(tf.reshape(
            tf.where(per_user(finite, d), d, 0.0), [num_users, -1])), axis=1)
        for d in deltas]), axis=0)
    zeroed = norms > zeroing_norm
    kept = tf.logical_and(finite, tf.logical_not(zeroed))
    zeroed_count = tf.reduce_sum(tf.cast(zeroed, tf.int32))
    quantile_record = zeroing_work.record_sum(quantile_params, norms)

  clip_silo = clip_query is not None and silos is not None and silos.clip_silo
  indicators = None
  if clip_query is not None and not clip_silo:
    # User-level DP: each user's update clipped by the DP query's own
    # preprocess_record, with the round's clip (rows the user never touched
    # are zero, so the norm is the dense record's; a user left out or zeroed
    # is a zero record, as the per-client aggregator sees it); the cohort
    # returns the plain sum (and, under adaptive clipping, the sum of its
    # users' unclipped indicators), which the server's DP aggregator noises
    # and normalizes (uniform weighting).
    deltas, indicators = aggregation.clip_each(
        clip_query, clip_params,
        [tf.where(per_user(kept, d), d, 0.0) for d in deltas])
    weights = tf.ones([num_users])
    total_weight = tf.constant(1.0)  # The sum passes through undivided.

  def weighted_sum(delta, segment_ids, num_segments):
    delta = tf.where(per_user(kept, delta), delta, 0.0)
    scaled = delta * per_user(weights, delta)
    if num_segments is None:
      return tf.reduce_sum(scaled, axis=0)
    flat = tf.reshape(scaled, tf.concat([[-1], tf.shape(scaled)[2:]], 0))
    return tf.math.unsorted_segment_sum(flat, tf.reshape(segment_ids, [-1]),
                                        num_segments)

  update = [tf.math.divide_no_nan(weighted_sum(delta, ids, num), total_weight)
            for delta, (_, ids, num) in zip(deltas, parts)]
  if clip_silo:
    # Silo-level DP: the silo's update (its users' weighted mean) is one
    # record, clipped by the query's own preprocess_record.
    clipped, indicators = aggregation.clip_each(
        clip_query, clip_params, [u[None] for u in update])
    update = [c[0] for c in clipped]
    total_weight = tf.constant(1.0)
  elif silos is not None and silos.uniform and clip_query is None:
    # The server's mean over silos (a silo none of whose users is finite
    # keeps weight 0).
    total_weight = tf.cast(total_weight > 0, tf.float32)
  upload = sparse_upload_bytes(
      parts, deltas if silos is None else None, finite, update,
      dense=clip_query is not None)
  if clip_query is not None:
    update = aggregation.cohort_record(
        clip_query, update,
        None if indicators is None else tf.reduce_sum(indicators))
  return update, total_weight, quantile_record, zeroed_count, upload


def with_silo_uploads(process, composed, silo_of, silos):
  """`process` (a host-side process over cohorts: `cohorts.CohortProcess`,
  `stateful.StatefulProcess`) sending sparsified silo uploads through
  `composed` (its `compose`d TFF process) when `silos` asks for them."""
  if silos is not None and silos.sparsified:
    process.uploads = sparse_uploads.build(
        composed, silo_of, int(np.max(silo_of)) + 1, silos.residual_dir,
        silos.seed)
  return process


UPLOAD_BYTES = 'upload_bytes'  # The training metric of `sparse_upload_bytes`.


def with_upload(unfinalized, upload_bytes):
  """A cohort's unfinalized training metrics with its records' row-sparse
  upload bytes (summed over the round's cohorts: `train/upload_bytes`)."""
  return collections.OrderedDict(unfinalized, **{UPLOAD_BYTES: [upload_bytes]})


@tf.autograph.experimental.do_not_convert
def sparse_upload_bytes(parts, user_deltas, finite, update,
                        dense: bool = False) -> tf.Tensor:
  """Bytes a cohort's records take when item tables are sent row-sparse.

  A record sends, of each table of which users hold copies of some rows
  (`parts` with segment ids), only the rows its update changed, each as its
  values (float32) and its row id (int32), or the table whole where that is
  smaller (a silo's many users change most rows); every other tensor whole.
  Rows an update leaves unchanged add nothing to the sum, so the server's
  aggregate is the dense one exactly. Per user (`user_deltas`: each finite
  user is a record, e.g. a sampled device) or, with `user_deltas` None,
  the cohort's `update` as one record (a silo's). With `dense` (under DP a
  data-dependent choice of rows would reveal which items the users rated),
  every record is sent whole.
  """
  total = tf.constant(0.0)
  records = (tf.reduce_sum(tf.cast(finite, tf.float32))
             if user_deltas is not None else tf.constant(1.0))
  for k, (_, segment_ids, _) in enumerate(parts):
    whole = tf.cast(tf.size(update[k]), tf.float32) * 4.0
    if segment_ids is None or dense:
      total += records * whole
      continue
    if user_deltas is None:  # The record's rows: [1, rows, row size].
      rows = tf.reshape(update[k], [1, tf.shape(update[k])[0], -1])
    else:  # [K, L, ...]: each user's copies of rows (one per distinct row).
      delta = user_deltas[k]
      rows = tf.where(
          tf.reshape(finite, [-1] + [1] * (len(delta.shape) - 1)), delta,
          0.0)
      rows = tf.reshape(rows, tf.concat([tf.shape(rows)[:2], [-1]], 0))
    changed = tf.reduce_sum(tf.cast(tf.reduce_any(
        tf.not_equal(rows, 0.0), axis=2), tf.float32), axis=1)
    row_bytes = tf.cast(tf.shape(rows)[2], tf.float32) * 4.0 + 4.0
    sparse = tf.minimum(changed * row_bytes, whole)
    if user_deltas is not None:  # A non-finite user sends nothing.
      sparse = tf.where(finite, sparse, 0.0)
    total += tf.reduce_sum(sparse)
  return total


def clip_parts(clip_query):
  """(`ClipWork` or None, the TFF type of its params) for `clip_query`."""
  if clip_query is None:
    return None, tff.StructType([])
  work = ClipWork(clip_query)
  return work, work.params_type


def client_work_process(client_update, weights_type, cohort_type,
                         zeroing_work, finalizers, clip_work=None,
                         client_outputs: bool = False):
  """The `ClientWorkProcess` around a cohort's `client_update` computation.

  Broadcasts the zeroing quantile estimator's params and norm (with
  `zeroing_work`), sums the cohorts' training metrics and quantile records,
  and updates the estimator. With `clip_work` (user-level DP), the round's
  clip comes from the server's DP aggregator, whose state holds it: the
  process then has `next_with_clip`, which takes the broadcast clip params
  as a fourth argument and which `compose`'s learning process calls; its
  plain `next` clips with the query's initial params.

  With `client_outputs`, `client_update` returns a fifth value, what each
  cohort keeps on its users' devices (a stateful method's new local states:
  algorithms/stateful.py); the process's `run(state, weights, cohorts,
  clip_params)` returns it, placed at the clients, beside the measured
  output (`compose`'s `next_with_client_outputs` calls it), and `next`
  drops it (a ClientWorkProcess returns nothing to the clients).
  """
  zeroing = zeroing_work is not None
  if zeroing:
    initialize = zeroing_work.initialize
    state_type = zeroing_work.state_type
  else:
    initialize = tff.federated_computation(
        lambda: tff.federated_value((), tff.SERVER))
    state_type = tff.StructType([])
  argument_types = (tff.FederatedType(state_type, tff.SERVER),
                    tff.FederatedType(weights_type, tff.CLIENTS),
                    tff.FederatedType(cohort_type, tff.CLIENTS))

  def run(state, weights, cohorts, clip_params):
    if zeroing:
      params = tff.federated_broadcast(
          tff.federated_map(zeroing_work.derive_params, state))
      zeroing_norm = tff.federated_map(zeroing_work.norm, state)
      norms = tff.federated_broadcast(zeroing_norm)
    else:
      params = norms = tff.federated_value((), tff.CLIENTS)
    outputs = tff.federated_map(
        client_update, (weights, cohorts, params, norms, clip_params))
    result, unfinalized, records, zeroed = (outputs[i] for i in range(4))
    aggregate_metrics = tff.learning.metrics.sum_then_finalize(
        collections.OrderedDict(finalizers, **{UPLOAD_BYTES: _first}),
        unfinalized.type_signature.member)
    measurements = collections.OrderedDict(
        train=aggregate_metrics(unfinalized))
    if zeroing:
      state = tff.federated_map(zeroing_work.next_state,
                                (tff.federated_sum(records), state))
      measurements['zeroing'] = tff.federated_zip(collections.OrderedDict(
          zeroing_norm=zeroing_norm, zeroed_count=tff.federated_sum(zeroed)))
    measured = tff.templates.MeasuredProcessOutput(
        state=state, result=result,
        measurements=tff.federated_zip(measurements))
    if client_outputs:
      return measured, outputs[4]
    return measured

  @tff.federated_computation(*argument_types)
  def next_fn(state, weights, cohorts):
    if clip_work is None:
      clip_params = tff.federated_value((), tff.CLIENTS)
    else:
      clip_params = tff.federated_broadcast(
          tff.federated_eval(clip_work.initial_params, tff.SERVER))
    output = run(state, weights, cohorts, clip_params)
    return output[0] if client_outputs else output

  process = tff.learning.templates.ClientWorkProcess(initialize, next_fn)
  if client_outputs:
    process.run = run
  if clip_work is not None:
    @tff.federated_computation(
        *argument_types,
        tff.FederatedType(clip_work.params_type, tff.CLIENTS,
                          all_equal=True))
    def next_with_clip(state, weights, cohorts, clip_params):
      return run(state, weights, cohorts, clip_params)
    process.next_with_clip = next_with_clip
    process.clip_work = clip_work
  return process


def _first(values):
  return values[0]


class ClipWork:
  """The TFF computations of a DP query's clip, for clipping per user.

  The query (`aggregation.dp_query`) lives in the server's DP aggregator
  (over `aggregation.PreclippedQuery`); each round its sample params (the
  clip, and under adaptive clipping the quantile estimator's params) are
  derived from the aggregator's query state and broadcast to the cohorts.
  """

  def __init__(self, query):
    initial_state = tff.tensorflow.computation(query.initial_global_state)
    self.state_type = initial_state.type_signature.result
    self.derive_params = tff.tensorflow.computation(
        query.derive_sample_params, self.state_type)
    self.params_type = self.derive_params.type_signature.result
    self.initial_params = tff.tensorflow.computation(
        lambda: query.derive_sample_params(query.initial_global_state()))


class ZeroingWork:
  """The TFF computations of adaptive zeroing per user (the server side).

  The quantile estimator is `aggregation.zeroing_quantile_query`, the one
  TFF's zeroing of per-client updates runs: its state is the client work's
  state, its sample params and the zeroing norm (multiplier * estimate +
  increment) are broadcast to the cohorts, each cohort sums its users'
  preprocessed records, and the summed records update the estimate.
  """

  def __init__(self):
    query = aggregation.zeroing_quantile_query()
    self._query = query
    initial_state = tff.tensorflow.computation(query.initial_global_state)
    self.state_type = initial_state.type_signature.result
    self.initialize = tff.federated_computation(
        lambda: tff.federated_eval(initial_state, tff.SERVER))
    self.derive_params = tff.tensorflow.computation(
        query.derive_sample_params, self.state_type)
    self.params_type = self.derive_params.type_signature.result
    record_type = tff.tensorflow.computation(
        query.preprocess_record, self.params_type,
        np.float32).type_signature.result

    @tff.tensorflow.computation(self.state_type)
    def norm(state):
      return (aggregation.ZEROING_MULTIPLIER * state.current_estimate +
              aggregation.ZEROING_INCREMENT)
    self.norm = norm

    @tff.tensorflow.computation(record_type, self.state_type)
    def next_state(record_sum, state):
      return query.get_noised_result(record_sum, state)[1]
    self.next_state = next_state

  def record_sum(self, params, norms: tf.Tensor):
    """The sum of every user's preprocessed record (in the client work)."""
    example = self._query.preprocess_record(params, tf.constant(0.0))
    records = tf.map_fn(
        lambda norm: self._query.preprocess_record(params, norm), norms,
        fn_output_signature=tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype), example))
    return tf.nest.map_structure(lambda t: tf.reduce_sum(t, axis=0), records)


def compose(initial_weights, client_work, aggregator, server_optimizer,
            sparsify=None, is_table=None):
  """The learning process of a cohort `client_work` (see the module doc).

  `aggregator` is weighted (an unweighted one is made weighted: a cohort is
  weighted by its users' summed weight); None: the weighted mean. Under
  user-level DP (a `client_work` with `next_with_clip`) the aggregator is a
  DP aggregator over `aggregation.PreclippedQuery`: each round the clip is
  derived from its query state and broadcast to the cohorts (the adaptive
  clip changes every round), and the process is TFF's composition with that
  one step added, its state unchanged.

  With `sparsify` (a `sparse_uploads.SparsifyConfig` that is enabled; each
  cohort a silo), each cohort's update passes through the silo's choice of
  rows (`sparse_uploads.Sparsifier`, `is_table` telling which global
  weights are item tables) before the aggregator: the process then has
  `sparsifier` and `next_with_uploads(state, client_data, residuals,
  keys, server_key)`, which returns the round's output (with the bytes
  sent under `sparse_uploads.UPLOADS`), the cohorts' own outputs (a
  stateful client work's, else empty) and their new residuals, placed at
  the clients; under DP (`sparsify.public`) the server keeps only the
  rows drawn from `server_key` of the aggregate.
  """
  weights_type = initial_weights.type_signature.result
  if aggregator is None:
    aggregator = tff.aggregators.MeanFactory()
  if isinstance(aggregator, tff.aggregators.UnweightedAggregationFactory):
    aggregator = tff.aggregators.as_weighted_aggregator(aggregator)
  # Under DP a cohort's update is its record for the DP query (the clipped
  # sum, with the unclipped count under adaptive clipping).
  update_type = client_work.next.type_signature.result.result.member.update
  distributor = tff.learning.templates.build_broadcast_process(weights_type)
  aggregation_process = aggregator.create(update_type,
                                          tff.TensorType(np.float32))
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer, weights_type)
  process = tff.learning.templates.compose_learning_process(
      initial_weights, distributor, client_work, aggregation_process,
      finalizer)
  clip_work = getattr(client_work, 'clip_work', None)
  run = getattr(client_work, 'run', None)
  sparsifier = None
  if sparsify is not None and sparsify.enabled:
    sparsifier = sparse_uploads.Sparsifier(sparsify, update_type,
                                           is_table)

  def round_body(state, client_data, residuals=None, keys=None,
                 server_key=None):
    # compose_learning_process's next, with the clip broadcast from the
    # aggregator's query state to the client work (under DP), and the
    # cohorts' own outputs kept (a stateful client work's).
    distributed = distributor.next(state.distributor,
                                   state.global_model_weights)
    if clip_work is None:
      clip_params = tff.federated_value((), tff.CLIENTS)
    else:
      clip_params = tff.federated_broadcast(tff.federated_map(
          clip_work.derive_params, state.aggregator.query_state))
    if run is not None:
      work, client_outputs = run(state.client_work, distributed.result,
                                 client_data, clip_params)
    elif clip_work is not None:
      work, client_outputs = client_work.next_with_clip(
          state.client_work, distributed.result, client_data,
          clip_params), None
    else:
      work, client_outputs = client_work.next(
          state.client_work, distributed.result, client_data), None
    update, uploads = work.result.update, None
    if residuals is not None:
      update, residuals, sent_bytes = tff.federated_map(
          sparsifier.computation, (update, residuals, keys))
      uploads = tff.federated_sum(sent_bytes)
    aggregated = aggregation_process.next(state.aggregator, update,
                                          work.result.update_weight)
    aggregate = aggregated.result
    if residuals is not None and sparsifier.config.public:
      aggregate = tff.federated_map(sparsifier.keep_public,
                                    (aggregate, server_key))
    finalized = finalizer.next(state.finalizer, state.global_model_weights,
                               aggregate)
    new_state = tff.federated_zip(tff.learning.templates.LearningAlgorithmState(
        finalized.result, distributed.state, work.state, aggregated.state,
        finalized.state))
    metrics = tff.federated_zip(collections.OrderedDict(
        distributor=distributed.measurements,
        client_work=work.measurements,
        aggregator=aggregated.measurements,
        finalizer=finalized.measurements,
        **({} if uploads is None else {
            sparse_uploads.UPLOADS: tff.federated_zip(collections.OrderedDict(
                **{sparse_uploads.SENT_BYTES: uploads}))})))
    output = tff.learning.templates.LearningProcessOutput(new_state, metrics)
    if residuals is not None:
      return output, client_outputs, residuals
    return output, client_outputs

  if sparsifier is not None:
    # The learning process's `next` (plain TFF) would send dense updates:
    # every round goes through this computation instead.
    @tff.federated_computation(
        *process.next.type_signature.parameter,
        tff.FederatedType(sparsifier.residual_type, tff.CLIENTS),
        tff.FederatedType(sparsifier.key_type, tff.CLIENTS),
        tff.FederatedType(sparsifier.key_type, tff.SERVER))
    def next_with_uploads(state, client_data, residuals, keys, server_key):
      output, client_outputs, residuals = round_body(
          state, client_data, residuals, keys, server_key)
      if client_outputs is None:
        client_outputs = tff.federated_value((), tff.CLIENTS)
      return output, client_outputs, residuals
    process.next_with_uploads = next_with_uploads
    process.sparsifier = sparsifier
    return process
  if run is not None:
    # The learning process stays TFF's (its `next` drops the clients'
    # outputs); this computation returns them, placed at the clients.
    @tff.federated_computation(process.next.type_signature.parameter)
    def next_with_client_outputs(state, client_data):
      return round_body(state, client_data)
    process.next_with_client_outputs = next_with_client_outputs
    return process
  if clip_work is None:
    return process

  @tff.federated_computation(process.next.type_signature.parameter)
  def next_fn(state, client_data):
    return round_body(state, client_data)[0]

  return tff.learning.templates.LearningProcess(
      process.initialize, next_fn, process.get_model_weights,
      process.set_model_weights, get_hparams_fn=process.get_hparams,
      set_hparams_fn=process.set_hparams)
