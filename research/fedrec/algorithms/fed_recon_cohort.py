"""Federated Reconstruction of matrix factorization, run in cohorts.

The cohort client work computes, for each of a cohort's K users, exactly what
TFF's FedRecon client work (`tff.learning.algorithms.build_fed_recon`) computes
for that user alone with this project's MF model and SGD, and returns the
users' weighted mean update with their summed weight:

1. Reconstruction: every user's vector (p_u, b_u) starts at the model's
   initial value and takes `recon_epochs` epochs of SGD steps on its own
   batches, the global item model frozen. All K users step together: one
   gradient of the sum of their masked batch losses is each user's own
   gradient, since users share no parameter.
2. Training: with p_u, b_u frozen, each user trains its own copy of the rows
   it rated (q_i, b_i, one per rating: a user rates an item once) and of the
   global bias g for `post_recon_epochs` epochs. The rows of step s of every
   user are held, step-major, in a TensorArray ([K, B, d] per step).
3. A user's update is its initial rows minus its final rows; a non-finite one
   is zeroed with weight 0, as TFF does per client. With adaptive zeroing
   (`zeroing`), a user's update whose max-abs norm exceeds the zeroing norm
   is zeroed and keeps its weight, and every user's norm updates the
   quantile estimate behind the zeroing norm: what TFF's `zeroing_factory`
   does to each client's update in the per-client process (tff.learning's
   default aggregator), applied per user, since zeroing a cohort's summed
   update would zero all its users at once. Users are weighted by their
   training examples (or uniformly), and the cohort's update is their
   weighted mean, scattered to the item table's shape, with the summed weight:
   the server's weighted mean over cohorts is then the mean over users.

Training metrics are the per-client ones summed over users (the Keras metrics
are updated with a mask for padded and idle positions). The process is
composed from TFF's broadcast, the configured aggregator and the server
optimizer's finalizer, so its state is the per-client process's.
"""

import collections

import numpy as np

import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import cohorts as cohorts_lib
from research.fedrec.evaluation import training_metrics
from research.fedrec.models import mf
from research.fedrec.privacy import aggregation


def _phase_active(counts, num_steps, batch_size, steps_max, parity):
  """Per-slot activity of a phase: slot t = epoch * num_steps + step.

  Returns a function of t giving, for each user, whether its batch `step` is
  trained in that slot (it exists, has the phase's parity under
  `split_dataset`, and falls within `steps_max` of the phase's steps).
  """
  batches = (counts + batch_size - 1) // batch_size
  if parity is None:
    per_epoch = batches
  elif parity == 0:
    per_epoch = (batches + 1) // 2
  else:
    per_epoch = batches // 2

  def active(t):
    epoch, step = t // num_steps, t % num_steps
    valid = step < batches
    rank = step
    if parity is not None:
      valid = tf.logical_and(valid, tf.equal(step % 2, parity))
      rank = step // 2
    if steps_max is not None:
      valid = tf.logical_and(valid, epoch * per_epoch + rank < steps_max)
    return valid
  return active


def _create_metrics(implicit: bool, finalizers):
  """The per-client training metrics plus `loss`; records their finalizers."""
  loss = mf.RegularizedBCE() if implicit else mf.RegularizedMSE()
  metrics = training_metrics.create_metrics(implicit) + [
      tf.keras.metrics.MeanMetricWrapper(loss, name='loss')]
  for metric in metrics:
    finalizers[metric.name] = (
        tff.learning.metrics.create_keras_metric_finalizer(metric))
  return metrics


def _position_mask(counts, batch_size: int, step, active):
  """[K, B] 1.0 where batch `step` of an active user holds an example."""
  inside = (step * batch_size + tf.range(batch_size))[None, :] < (
      counts[:, None])
  return tf.cast(tf.logical_and(inside, active[:, None]), tf.float32)


def _user_losses(example_loss, model_config: mf.MFConfig, targets, mask, user,
                 user_bias, rows, row_biases, global_bias):
  """Per-user masked batch losses and predictions, as the Keras loss.

  `example_loss(targets, predictions)` is the per-example loss (squared error
  or binary cross-entropy of the logit); the L2 term is per example, as
  `mf.PairL2`. Each user's loss is its batch mean.
  """
  prediction = tf.reduce_sum(user[:, None, :] * rows, axis=-1)
  squares = (tf.reduce_sum(tf.square(user), axis=-1)[:, None] +
             tf.reduce_sum(tf.square(rows), axis=-1))
  if model_config.use_biases:
    prediction += user_bias + row_biases + global_bias[:, None]
    squares += tf.square(user_bias) + tf.square(row_biases)
  size = tf.reduce_sum(mask, axis=1)
  per_batch = tf.math.divide_no_nan(
      tf.reduce_sum(mask * example_loss(targets, prediction), axis=1),
      size) + tf.math.divide_no_nan(
          tf.reduce_sum(mask * model_config.l2 * squares, axis=1), size)
  return per_batch, prediction


def _squared_error(targets, predictions):
  return tf.square(targets - predictions)


def _cross_entropy(labels, logits):
  return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def _reconstruct(local, num_users, num_slots, batch_at, learning_rate: float,
                 loss_at):
  """Phase 1: SGD on every user's vector and bias, the item side frozen.

  `batch_at(t)` gives slot t's `(mask, targets, rows, row_biases)`;
  `loss_at(...)` is `_user_losses` with the example loss bound. Returns the
  users' vectors [K, d] and biases [K, 1].
  """
  user = tf.tile(local[0], [num_users, 1])
  biases = len(local) > 1
  user_bias = tf.tile(local[1], [num_users, 1]) if biases else tf.zeros(
      [num_users, 1])
  for t in tf.range(num_slots):
    mask, targets, rows, row_biases = batch_at(t)
    with tf.GradientTape() as tape:
      tape.watch([user, user_bias])
      losses, _ = loss_at(targets, mask, user, user_bias, rows, row_biases)
      total = tf.reduce_sum(losses)
    grad_user, grad_bias = tape.gradient(total, [user, user_bias])
    user -= learning_rate * grad_user
    if biases:
      user_bias -= learning_rate * grad_bias
  return user, user_bias


def build_client_work(model_fn, weights_type, model_config: mf.MFConfig,
                      num_items: int, recon, batch_size: int,
                      client_learning_rate: float,
                      reconstruction_learning_rate: float,
                      uniform_weighting: bool, zeroing: bool = False,
                      clip_query=None):
  """The cohort `ClientWorkProcess` of FedRecon MF (explicit, SGD).

  `weights_type` is the TFF type of the model's global weights. With
  `zeroing`, adaptive zeroing per user (see the module doc): the process's
  state is the zeroing quantile estimator's, and its measurements carry
  `zeroing` (`zeroing_norm`, `zeroed_count`) beside `train`. With
  `clip_query` (user-level DP with a fixed clip: `aggregation.fixed_clip_query`)
  each user's update is clipped by it and the cohort's result is the sum of
  the clipped updates, for an aggregator over `aggregation.PreclippedQuery`.
  """
  cohort_type = tff.SequenceType(
      tff.types.tensorflow_to_type(cohorts_lib.ELEMENT_SPEC))
  zeroing_work, params_type, norm_type = _zeroing_parts(zeroing)
  biases = model_config.use_biases
  parity = (0, 1) if recon.split_dataset else (None, None)
  finalizers = collections.OrderedDict()

  @tff.tensorflow.computation(weights_type, cohort_type, params_type,
                              norm_type)
  @tf.function
  def client_update(initial_weights, dataset, quantile_params, zeroing_norm):
    with tf.init_scope():
      model = model_fn()
      metrics = _create_metrics(False, finalizers)
    local = tff.learning.models.ReconstructionModel.get_local_variables(
        model).trainable
    cohort = dataset.get_single_element()
    counts, items, ratings = (cohort['counts'], cohort['items'],
                              cohort['ratings'])
    num_users = tf.shape(items)[0]
    num_steps = tf.shape(items)[1] // batch_size
    # Step-major views: [S, K, B].
    items_by_step = tf.transpose(
        tf.reshape(items, [num_users, num_steps, batch_size]), [1, 0, 2])
    ratings_by_step = tf.transpose(
        tf.reshape(ratings, [num_users, num_steps, batch_size]), [1, 0, 2])

    def position_mask(step, active):
      return _position_mask(counts, batch_size, step, active)

    def user_losses(step_ratings, mask, user, user_bias, rows, row_biases,
                    global_bias):
      return _user_losses(_squared_error, model_config, step_ratings, mask,
                          user, user_bias, rows, row_biases, global_bias)

    item_table = initial_weights.trainable[0]
    item_bias_table = initial_weights.trainable[1] if biases else None
    global_bias0 = initial_weights.trainable[2] if biases else tf.constant(0.)
    global_bias = tf.fill([num_users], global_bias0)

    # 1. Reconstruction of every user's vector.
    recon_active = _phase_active(counts, num_steps, batch_size,
                                 recon.recon_steps_max, parity[0])

    def recon_batch(t):  # Every epoch sees the same batches.
      step = t % num_steps
      mask = position_mask(step, recon_active(t))
      step_items = items_by_step[step]
      row_biases = (tf.gather(item_bias_table, step_items)[..., 0] if biases
                    else tf.zeros_like(mask))
      return (mask, ratings_by_step[step], tf.gather(item_table, step_items),
              row_biases)

    user, user_bias = _reconstruct(
        local, num_users, recon.recon_epochs * num_steps, recon_batch,
        reconstruction_learning_rate,
        lambda *args: user_losses(*args, global_bias))

    # 2. Training of each user's copies of its rows and of g.
    row_array = tf.TensorArray(tf.float32, size=num_steps,
                               element_shape=[None, batch_size,
                                              model_config.embedding_dim])
    bias_array = tf.TensorArray(tf.float32, size=num_steps,
                                element_shape=[None, batch_size])
    row_array = row_array.unstack(tf.gather(item_table, items_by_step))
    if biases:
      bias_array = bias_array.unstack(
          tf.gather(item_bias_table, items_by_step)[..., 0])
    else:
      bias_array = bias_array.unstack(tf.zeros(tf.shape(items_by_step)))
    train_active = _phase_active(counts, num_steps, batch_size,
                                 recon.post_recon_steps_max, parity[1])
    examples = tf.zeros([num_users], tf.float32)
    for t in tf.range(recon.post_recon_epochs * num_steps):
      step = t % num_steps
      active = train_active(t)
      mask = position_mask(step, active)
      rows, row_biases = row_array.read(step), bias_array.read(step)
      with tf.GradientTape() as tape:
        tape.watch([rows, row_biases, global_bias])
        losses, prediction = user_losses(ratings_by_step[step], mask, user,
                                         user_bias, rows, row_biases,
                                         global_bias)
        total = tf.reduce_sum(losses)
      grad_rows, grad_biases, grad_global = tape.gradient(
          total, [rows, row_biases, global_bias])
      row_array = row_array.write(
          step, rows - client_learning_rate * grad_rows)
      if biases:
        bias_array = bias_array.write(
            step, row_biases - client_learning_rate * grad_biases)
        global_bias -= client_learning_rate * grad_global
      flat_mask = tf.reshape(mask, [-1])
      for metric in metrics[:-1]:
        metric.update_state(tf.reshape(ratings_by_step[step], [-1]),
                            tf.reshape(prediction, [-1]),
                            sample_weight=flat_mask)
      tf.keras.metrics.Mean.update_state(
          metrics[-1], losses, sample_weight=tf.cast(active, tf.float32))
      examples += tf.reduce_sum(mask, axis=1)

    # 3. Per-user updates, weighted and summed.
    def per_user(array):  # [S, K, B, ...] -> [K, L, ...]
      stacked = array.stack()
      rank = len(stacked.shape)
      moved = tf.transpose(stacked, [1, 0, 2] + list(range(3, rank)))
      return tf.reshape(moved, tf.concat(
          [[num_users, -1], tf.shape(stacked)[3:]], axis=0))

    row_deltas = tf.gather(item_table, items) - per_user(row_array)
    deltas = [row_deltas]
    if biases:
      deltas.append(tf.gather(item_bias_table, items)[..., 0] -
                    per_user(bias_array))
      deltas.append(global_bias0 - global_bias)
    update, total_weight, quantile_record, zeroed_count = _combine(
        deltas, items, num_items, examples, uniform_weighting, zeroing_work,
        quantile_params, zeroing_norm, clip_query)
    unfinalized = tff.learning.models.ReconstructionModel.read_metric_variables(
        metrics)
    return (tff.learning.templates.ClientResult(update, total_weight),
            unfinalized, quantile_record, zeroed_count)

  return _client_work_process(client_update, weights_type, cohort_type,
                              zeroing_work, finalizers)


def build_implicit_client_work(model_fn, weights_type,
                               model_config: mf.MFConfig, num_items: int,
                               recon, batch_size: int,
                               client_learning_rate: float,
                               reconstruction_learning_rate: float,
                               uniform_weighting: bool, zeroing: bool = False,
                               clip_query=None):
  """The cohort `ClientWorkProcess` of FedRecon MF, implicit feedback (SGD).

  As `build_client_work`, over `cohorts.ImplicitCohortPacker`'s cohorts: each
  epoch of a user has its own examples (fresh negatives), the loss is the
  binary cross-entropy of the logit (`mf.RegularizedBCE`), and in the
  training phase a user's copies of item rows are one per distinct item it
  touches (`slot_items`), each example updating its item's copy (an item met
  twice in a batch gets both gradients, as an embedding's does), so that a
  user's update is the per-client one.
  """
  cohort_type = tff.SequenceType(
      tff.types.tensorflow_to_type(cohorts_lib.IMPLICIT_ELEMENT_SPEC))
  zeroing_work, params_type, norm_type = _zeroing_parts(zeroing)
  biases = model_config.use_biases
  recon_epochs = recon.recon_epochs
  epochs = recon.recon_epochs + recon.post_recon_epochs
  finalizers = collections.OrderedDict()

  @tff.tensorflow.computation(weights_type, cohort_type, params_type,
                              norm_type)
  @tf.function
  def client_update(initial_weights, dataset, quantile_params, zeroing_norm):
    with tf.init_scope():
      model = model_fn()
      metrics = _create_metrics(True, finalizers)
    local = tff.learning.models.ReconstructionModel.get_local_variables(
        model).trainable
    cohort = dataset.get_single_element()
    counts, slot_items = cohort['counts'], cohort['slot_items']
    num_users = tf.shape(counts)[0]
    num_steps = tf.shape(cohort['items'])[1] // (epochs * batch_size)

    def by_step(x):  # [K, E * S * B] -> [E * S, K, B]: slot t = e * S + s.
      return tf.transpose(tf.reshape(x, [num_users, -1, batch_size]),
                          [1, 0, 2])

    items_by_step = by_step(cohort['items'])
    labels_by_step = by_step(cohort['labels'])
    slots_by_step = by_step(cohort['slots'])

    def position_mask(step, active):
      return _position_mask(counts, batch_size, step, active)

    def user_losses(step_labels, mask, user, user_bias, rows, row_biases,
                    global_bias):
      return _user_losses(_cross_entropy, model_config, step_labels, mask,
                          user, user_bias, rows, row_biases, global_bias)

    item_table = initial_weights.trainable[0]
    item_bias_table = initial_weights.trainable[1] if biases else None
    global_bias0 = initial_weights.trainable[2] if biases else tf.constant(0.)
    global_bias = tf.fill([num_users], global_bias0)

    # 1. Reconstruction of every user's vector on its reconstruction epochs.
    recon_active = _phase_active(counts, num_steps, batch_size,
                                 recon.recon_steps_max, None)

    def recon_batch(t):  # Each epoch has its own examples.
      mask = position_mask(t % num_steps, recon_active(t))
      step_items = items_by_step[t]
      row_biases = (tf.gather(item_bias_table, step_items)[..., 0] if biases
                    else tf.zeros_like(mask))
      return (mask, labels_by_step[t], tf.gather(item_table, step_items),
              row_biases)

    user, user_bias = _reconstruct(
        local, num_users, recon_epochs * num_steps, recon_batch,
        reconstruction_learning_rate,
        lambda *args: user_losses(*args, global_bias))

    # 2. Training of each user's copies of the items it touches, and of g.
    local_rows = tf.gather(item_table, slot_items)  # [K, M, d]
    local_biases = (tf.gather(item_bias_table, slot_items)[..., 0] if biases
                    else tf.zeros(tf.shape(slot_items)))
    user_index = tf.tile(tf.range(num_users)[:, None], [1, batch_size])
    train_active = _phase_active(counts, num_steps, batch_size,
                                 recon.post_recon_steps_max, None)
    examples = tf.zeros([num_users], tf.float32)
    for t in tf.range(recon.post_recon_epochs * num_steps):
      active = train_active(t)
      mask = position_mask(t % num_steps, active)
      step_labels = labels_by_step[recon_epochs * num_steps + t]
      index = tf.stack([user_index, slots_by_step[t]], axis=-1)
      rows = tf.gather_nd(local_rows, index)
      row_biases = tf.gather_nd(local_biases, index)
      with tf.GradientTape() as tape:
        tape.watch([rows, row_biases, global_bias])
        losses, logits = user_losses(step_labels, mask, user, user_bias, rows,
                                     row_biases, global_bias)
        total = tf.reduce_sum(losses)
      grad_rows, grad_biases, grad_global = tape.gradient(
          total, [rows, row_biases, global_bias])
      # Duplicate slots in a batch add up, as an embedding's gradient does.
      local_rows = tf.tensor_scatter_nd_sub(
          local_rows, index, client_learning_rate * grad_rows)
      if biases:
        local_biases = tf.tensor_scatter_nd_sub(
            local_biases, index, client_learning_rate * grad_biases)
        global_bias -= client_learning_rate * grad_global
      # Padded and idle positions carry label -1: left out of the metrics.
      labelled = tf.where(mask > 0, step_labels, -1.0)
      for metric in metrics[:-1]:
        metric.update_state(tf.reshape(labelled, [-1]),
                            tf.reshape(logits, [-1]))
      tf.keras.metrics.Mean.update_state(
          metrics[-1], losses, sample_weight=tf.cast(active, tf.float32))
      examples += tf.reduce_sum(mask, axis=1)

    # 3. Per-user updates, weighted and summed.
    deltas = [tf.gather(item_table, slot_items) - local_rows]
    if biases:
      deltas.append(tf.gather(item_bias_table, slot_items)[..., 0] -
                    local_biases)
      deltas.append(global_bias0 - global_bias)
    update, total_weight, quantile_record, zeroed_count = _combine(
        deltas, slot_items, num_items, examples, uniform_weighting,
        zeroing_work, quantile_params, zeroing_norm, clip_query)
    unfinalized = tff.learning.models.ReconstructionModel.read_metric_variables(
        metrics)
    return (tff.learning.templates.ClientResult(update, total_weight),
            unfinalized, quantile_record, zeroed_count)

  return _client_work_process(client_update, weights_type, cohort_type,
                              zeroing_work, finalizers)


def _zeroing_parts(zeroing: bool):
  """(`_ZeroingWork` or None, its params' TFF type, its norm's TFF type)."""
  if not zeroing:
    return None, tff.StructType([]), tff.StructType([])
  work = _ZeroingWork()
  return work, work.params_type, tff.TensorType(np.float32)


def _combine(deltas, segment_ids, num_items: int, examples,
             uniform_weighting: bool, zeroing_work, quantile_params,
             zeroing_norm, clip_query):
  """A cohort's result from its users' updates (step 3 of the module doc).

  Args:
    deltas: Per-user updates (initial minus final): rows [K, L, d] whose
      positions are item `segment_ids` [K, L]; with biases also the item
      biases [K, L] and the global bias [K].
    segment_ids: The item of every row position (padding: any item, with a
      zero update).
    num_items: Rows of the item table.
    examples: [K] each user's training examples (its weight).
    uniform_weighting: Weight users equally instead.
    zeroing_work: `_ZeroingWork` for adaptive zeroing per user, or None.
    quantile_params, zeroing_norm: Its broadcast params and norm.
    clip_query: The fixed-clip DP query clipping each user, or None.

  Returns:
    `(update, total_weight, quantile_record, zeroed_count)`.
  """
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

  if clip_query is not None:
    # User-level DP: each user's update clipped by the DP query's own
    # preprocess_record (rows the user never touched are zero, so the norm
    # is the dense record's); the cohort returns the plain sum, which the
    # server's DP aggregator noises and normalizes (uniform weighting).
    params = clip_query.derive_sample_params(
        clip_query.initial_global_state())
    kept_deltas = tuple(tf.where(per_user(kept, d), d, 0.0) for d in deltas)
    deltas = list(tf.map_fn(
        lambda record: clip_query.preprocess_record(params, record),
        kept_deltas, fn_output_signature=tuple(
            tf.TensorSpec(d.shape[1:], d.dtype) for d in kept_deltas)))
    weights = tf.ones([num_users])
    total_weight = tf.constant(1.0)  # The sum passes through undivided.

  def weighted_sum(delta, num_segments):
    delta = tf.where(per_user(kept, delta), delta, 0.0)
    scaled = delta * per_user(weights, delta)
    if num_segments is None:
      return tf.reduce_sum(scaled, axis=0)
    flat = tf.reshape(scaled, tf.concat([[-1], tf.shape(scaled)[2:]], 0))
    return tf.math.unsorted_segment_sum(flat, tf.reshape(segment_ids, [-1]),
                                        num_segments)

  update = [weighted_sum(deltas[0], num_items)]
  if len(deltas) > 1:  # Biases.
    update.append(weighted_sum(deltas[1], num_items)[:, None])
    update.append(weighted_sum(deltas[2], None))
  update = [tf.math.divide_no_nan(u, total_weight) for u in update]
  return update, total_weight, quantile_record, zeroed_count


def _client_work_process(client_update, weights_type, cohort_type,
                         zeroing_work, finalizers):
  """The `ClientWorkProcess` around a cohort's `client_update` computation.

  Broadcasts the zeroing quantile estimator's params and norm (with
  `zeroing_work`), sums the cohorts' training metrics and quantile records,
  and updates the estimator.
  """
  zeroing = zeroing_work is not None
  if zeroing:
    initialize = zeroing_work.initialize
    state_type = zeroing_work.state_type
  else:
    initialize = tff.federated_computation(
        lambda: tff.federated_value((), tff.SERVER))
    state_type = tff.StructType([])

  @tff.federated_computation(
      tff.FederatedType(state_type, tff.SERVER),
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(cohort_type, tff.CLIENTS))
  def next_fn(state, weights, cohorts):
    if zeroing:
      params = tff.federated_broadcast(
          tff.federated_map(zeroing_work.derive_params, state))
      zeroing_norm = tff.federated_map(zeroing_work.norm, state)
      norms = tff.federated_broadcast(zeroing_norm)
    else:
      params = norms = tff.federated_value((), tff.CLIENTS)
    result, unfinalized, records, zeroed = tff.federated_map(
        client_update, (weights, cohorts, params, norms))
    aggregate_metrics = tff.learning.metrics.sum_then_finalize(
        finalizers, unfinalized.type_signature.member)
    measurements = collections.OrderedDict(
        train=aggregate_metrics(unfinalized))
    if zeroing:
      state = tff.federated_map(zeroing_work.next_state,
                                (tff.federated_sum(records), state))
      measurements['zeroing'] = tff.federated_zip(collections.OrderedDict(
          zeroing_norm=zeroing_norm, zeroed_count=tff.federated_sum(zeroed)))
    return tff.templates.MeasuredProcessOutput(
        state=state, result=result,
        measurements=tff.federated_zip(measurements))

  return tff.learning.templates.ClientWorkProcess(initialize, next_fn)




class _ZeroingWork:
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


def build_training_process(model_fn, model_config: mf.MFConfig,
                           num_items: int, recon, optimizers, batch_size: int,
                           client_learning_rate: float,
                           reconstruction_learning_rate: float, aggregator,
                           uniform_weighting: bool, zeroing: bool = False,
                           clip_query=None, implicit: bool = False):
  """FedRecon MF whose clients are cohorts (`cohorts.CohortPacker`, or
  `cohorts.ImplicitCohortPacker` with `implicit`).

  Composed like `tff.learning.algorithms.build_fed_recon`, with the same
  initial weights, broadcast, aggregator and server finalizer, so the state
  is the per-client process's. With `zeroing`, the client work zeroes each
  user's update as the per-client aggregator's adaptive zeroing would (so
  `aggregator` must not zero: it would zero whole cohorts). With
  `clip_query`, each user is clipped in the client work (user-level DP) and
  `aggregator` is a DP aggregator over `aggregation.PreclippedQuery`.
  """
  initial_weights = tff.tensorflow.computation(
      lambda: tff.learning.models.ReconstructionModel.get_global_variables(
          model_fn()))
  weights_type = initial_weights.type_signature.result
  if aggregator is None:
    aggregator = tff.aggregators.MeanFactory()
  if isinstance(aggregator, tff.aggregators.UnweightedAggregationFactory):
    aggregator = tff.aggregators.as_weighted_aggregator(aggregator)
  return tff.learning.templates.compose_learning_process(
      initial_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      (build_implicit_client_work if implicit else build_client_work)(
          model_fn, weights_type, model_config, num_items, recon, batch_size,
          client_learning_rate, reconstruction_learning_rate,
          uniform_weighting, zeroing, clip_query),
      aggregator.create(weights_type.trainable, tff.TensorType(np.float32)),
      tff.learning.templates.build_apply_optimizer_finalizer(
          optimizers.server, weights_type))
