"""Federated Reconstruction run in cohorts: MF, and NCF (implicit feedback).

The cohort client work computes, for each of a cohort's K users, exactly what
TFF's FedRecon client work (`tff.learning.algorithms.build_fed_recon`) computes
for that user alone with this project's model and SGD, and returns the users'
weighted mean update with their summed weight. Explicit feedback (MF, below);
implicit feedback (`build_implicit_client_work`: any model with a scorer in
`cohort_scores.SCORERS`, any optimizers) does the same with each epoch's own
examples, and copies of every global weight per user; explicit ratings go
through it too under a stateful optimizer (`by_epoch`).

1. Reconstruction: every user's vector (p_u, b_u) starts at the model's
   initial value and takes `recon_epochs` epochs of SGD steps on its own
   batches, the global item model frozen. All K users step together: one
   gradient of the sum of their masked batch losses is each user's own
   gradient, since users share no parameter.
2. Training: with p_u, b_u frozen, each user trains its own copy of the rows
   it rated (q_i, b_i, one per rating: a user rates an item once) and of the
   global bias g for `post_recon_epochs` epochs. The rows of step s of every
   user are held, step-major, in a TensorArray ([K, B, d] per step).
3. A user's update is its initial rows minus its final rows, combined with
   the others' as algorithms/cohort_work.py describes (weighting, the
   non-finite guard, adaptive zeroing and DP clipping per user), scattered
   to the item table's shape.

Training metrics are the per-client ones summed over users (the Keras metrics
are updated with a mask for padded and idle positions). The process is
composed from TFF's broadcast, the configured aggregator and the server
optimizer's finalizer, so its state is the per-client process's.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import cohort_optimizers
from research.fedrec.algorithms import cohort_scores
from research.fedrec.algorithms import cohort_work
from research.fedrec.algorithms import cohorts as cohorts_lib
from research.fedrec.evaluation import training_metrics
from research.fedrec.models import builder
from research.fedrec.models import mf


@tf.autograph.experimental.do_not_convert
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


@tf.autograph.experimental.do_not_convert
def _create_metrics(implicit: bool, finalizers):
  """The per-client training metrics plus `loss`; records their finalizers."""
  loss = mf.RegularizedBCE() if implicit else mf.RegularizedMSE()
  metrics = training_metrics.create_metrics(implicit) + [
      tf.keras.metrics.MeanMetricWrapper(loss, name='loss')]
  for metric in metrics:
    finalizers[metric.name] = (
        tff.learning.metrics.create_keras_metric_finalizer(metric))
  return metrics






def _mf_losses(example_loss, model_config: mf.MFConfig, targets, mask, user,
               user_bias, rows, row_biases, global_bias):
  """Per-user masked batch losses and predictions of MF.

  `user` [K, d] and `user_bias` [K, 1] are each user's, `rows` [K, B, d] and
  `row_biases` [K, B] the items of its batch, `global_bias` [K] its g; the
  scores are `cohort_scores.mf_scores`'.
  """
  params = {'user_embedding': user, 'item_embedding': rows}
  if model_config.use_biases:
    params.update(user_bias=user_bias, item_bias=row_biases[..., None],
                  global_bias=global_bias)
  prediction, squares = cohort_scores.mf_scores(model_config, params)
  return cohort_work.masked_losses(example_loss, model_config.l2, targets,
                                   mask, prediction, squares), prediction


def _reconstruct(local, num_users, num_slots, batch_at, learning_rate: float,
                 loss_at):
  """Phase 1: SGD on every user's vector and bias, the item side frozen.

  `batch_at(t)` gives slot t's `(mask, targets, rows, row_biases)`;
  `loss_at(...)` is `_mf_losses` with the example loss bound.
  Returns the users' vectors [K, d] and biases [K, 1].
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
                      clip_query=None, silos=None):
  """The cohort `ClientWorkProcess` of FedRecon MF (explicit, SGD).

  `weights_type` is the TFF type of the model's global weights. With
  `zeroing`, adaptive zeroing per user (see the module doc): the process's
  state is the zeroing quantile estimator's, and its measurements carry
  `zeroing` (`zeroing_norm`, `zeroed_count`) beside `train`. With
  `clip_query` (user-level DP, fixed or adaptive clip: `aggregation.dp_query`)
  each user's update is clipped by it and the cohort's result is the sum of
  the clipped updates, for an aggregator over `aggregation.PreclippedQuery`.
  With `silos` (`cohort_work.SiloRecords`), each cohort is one silo.
  """
  cohort_type = tff.SequenceType(
      tff.types.tensorflow_to_type(cohorts_lib.ELEMENT_SPEC))
  zeroing_work, params_type, norm_type = cohort_work.zeroing_parts(zeroing)
  clip_work, clip_type = cohort_work.clip_parts(clip_query)
  biases = model_config.use_biases
  parity = (0, 1) if recon.split_dataset else (None, None)
  finalizers = collections.OrderedDict()

  @tff.tensorflow.computation(weights_type, cohort_type, params_type,
                              norm_type, clip_type)
  @tf.function
  def client_update(initial_weights, dataset, quantile_params, zeroing_norm,
                    clip_params):
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
      return cohort_work.position_mask(counts, batch_size, step, active)

    def user_losses(step_ratings, mask, user, user_bias, rows, row_biases,
                    global_bias):
      return _mf_losses(
          cohort_work.squared_error, model_config, step_ratings, mask, user,
          user_bias, rows, row_biases, global_bias)

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

    parts = [(tf.gather(item_table, items) - per_user(row_array), items,
              num_items)]
    if biases:
      parts.append((tf.gather(item_bias_table, items) -
                    per_user(bias_array)[..., None], items, num_items))
      parts.append((global_bias0 - global_bias, None, None))
    (update, total_weight, quantile_record, zeroed_count,
     upload) = cohort_work.combine(
        parts, examples, uniform_weighting, zeroing_work, quantile_params,
        zeroing_norm, clip_query, clip_params, silos)
    unfinalized = cohort_work.with_upload(
        tff.learning.models.ReconstructionModel.read_metric_variables(metrics),
        upload)
    return (tff.learning.templates.ClientResult(update, total_weight),
            unfinalized, quantile_record, zeroed_count)

  return cohort_work.client_work_process(client_update, weights_type,
                                         cohort_type, zeroing_work, finalizers,
                                         clip_work)


# (model config, items) -> `_recon_parameters`, for hashable configs (an
# evaluation every round asks again).
_RECON_PARAMETERS = {}


def _recon_parameters(model_config, num_items: int):
  """Names of the reconstruction layout's global and local weights.

  In the order of `ReconstructionModel`'s global and local trainable
  variables (its layers' weights, layer by layer), named as `cohort_scores`
  reads them; global ones with whether they are an item table.
  """
  key = (model_config, num_items)
  try:
    hash(key)
  except TypeError:  # A config holding arrays (item features).
    return _build_recon_parameters(model_config, num_items)
  if key not in _RECON_PARAMETERS:
    _RECON_PARAMETERS[key] = tuple(
        map(tuple, _build_recon_parameters(model_config, num_items)))
  global_weights, local_names = _RECON_PARAMETERS[key]
  return list(global_weights), list(local_names)


def _build_recon_parameters(model_config, num_items: int):
  with tf.Graph().as_default():
    layers = builder.create_keras_model(model_config, num_items)
    names = cohort_scores.weight_names(layers.model)
    global_weights = [
        (names[id(w)], isinstance(layer, tf.keras.layers.Embedding))
        for layer in layers.global_layers for w in layer.trainable_weights]
    local_names = [names[id(w)] for layer in layers.user_layers
                   for w in layer.trainable_weights]
  return global_weights, local_names


def build_implicit_client_work(
    model_fn, weights_type, model_config, num_items: int, recon,
    batch_size: int, client_optimizer: cohort_optimizers.UserOptimizer,
    reconstruction_optimizer: cohort_optimizers.UserOptimizer,
    uniform_weighting: bool, zeroing: bool = False, clip_query=None,
    explicit: bool = False, silos=None):
  """The cohort `ClientWorkProcess` of FedRecon, implicit feedback.

  With `explicit`, the same over explicit ratings laid out epoch by epoch
  (`cohorts.EpochCohortPacker`; MF with stateful optimizers): squared error
  of the predicted rating, the explicit metrics.

  For a model with a scorer in `cohort_scores.SCORERS` (MF, GMF, MLP,
  NeuMF), over `cohorts.ImplicitCohortPacker`'s cohorts: each epoch of a
  user has its own examples (fresh negatives), the loss is the binary
  cross-entropy of the logit (`mf.RegularizedBCE`). Reconstruction trains
  each user's local vectors from their initial value, the global model
  frozen; then each user trains its own copies of the global weights: a
  copy of each item row per distinct item it touches (`slot_items`), each
  example updating its item's copy (an item met twice in a batch gets both
  gradients, as an embedding's does), and a whole copy of every other
  global weight (the global bias, dense layers: batched matmuls), so that a
  user's update is the per-client one. Each phase's optimizer starts afresh
  per user, as per client; a stateful one steps on the gradient of the
  user's whole copies and freezes the user where it has no batch
  (`cohort_optimizers.UserOptimizer`).
  """
  cohort_type = tff.SequenceType(
      tff.types.tensorflow_to_type(cohorts_lib.IMPLICIT_ELEMENT_SPEC))
  zeroing_work, params_type, norm_type = cohort_work.zeroing_parts(zeroing)
  clip_work, clip_type = cohort_work.clip_parts(clip_query)
  scores = cohort_scores.SCORERS[model_config.model_name]
  example_loss = (cohort_work.squared_error if explicit else
                  cohort_work.cross_entropy)
  global_weights, local_names = _recon_parameters(model_config, num_items)
  global_names = [name for name, _ in global_weights]
  is_table = [table for _, table in global_weights]
  recon_epochs = recon.recon_epochs
  epochs = recon.recon_epochs + recon.post_recon_epochs
  finalizers = collections.OrderedDict()

  @tff.tensorflow.computation(weights_type, cohort_type, params_type,
                              norm_type, clip_type)
  @tf.function
  def client_update(initial_weights, dataset, quantile_params, zeroing_norm,
                    clip_params):
    with tf.init_scope():
      model = model_fn()
      metrics = _create_metrics(not explicit, finalizers)
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
    weights = list(initial_weights.trainable)

    def whole(weight):  # Each user's copy of a whole weight: [K, ...].
      return tf.tile(weight[None], [num_users] + [1] * weight.shape.rank)

    def user_losses(params, step_labels, mask, step_items):
      logits, squares = scores(model_config, params,
                               dict(items=step_items, mask=mask))
      return cohort_work.masked_losses(
          example_loss, model_config.l2, step_labels, mask, logits,
          squares), logits

    # 1. Reconstruction of every user's local vectors, the global side
    # frozen, on its reconstruction epochs: the same for every user, so the
    # dense weights are given once (one matmul over the cohort, not one per
    # user: `cohort_scores`).
    frozen = [None if table else w for w, table in zip(weights, is_table)]
    users = [whole(v[0]) for v in local]  # [K, d]: each user's vector.
    recon_state = reconstruction_optimizer.initialize(users)
    recon_counts = cohort['recon_counts']  # Differ under split_dataset.
    recon_active = _phase_active(recon_counts, num_steps, batch_size,
                                 recon.recon_steps_max, None)
    for t in tf.range(recon_epochs * num_steps):
      mask = cohort_work.position_mask(recon_counts, batch_size,
                                       t % num_steps, recon_active(t))
      step_items = items_by_step[t]
      global_params = [tf.gather(w, step_items) if table else copy
                       for w, copy, table in zip(weights, frozen, is_table)]
      with tf.GradientTape() as tape:
        tape.watch(users)
        losses, _ = user_losses(
            dict(zip(global_names + local_names, global_params + users)),
            labels_by_step[t], mask, step_items)
        total = tf.reduce_sum(losses)
      grads = tape.gradient(total, users)
      recon_state, users = reconstruction_optimizer.next(
          recon_state, users, grads, recon_active(t))

    # 2. Training of each user's copies of the global weights.
    initial = [tf.gather(w, slot_items) if table else whole(w)
               for w, table in zip(weights, is_table)]
    copies = list(initial)
    client_state = client_optimizer.initialize(copies)
    user_index = tf.tile(tf.range(num_users)[:, None], [1, batch_size])
    train_active = _phase_active(counts, num_steps, batch_size,
                                 recon.post_recon_steps_max, None)
    examples = tf.zeros([num_users], tf.float32)
    for t in tf.range(recon.post_recon_epochs * num_steps):
      active = train_active(t)
      mask = cohort_work.position_mask(counts, batch_size, t % num_steps,
                                       active)
      step_labels = labels_by_step[recon_epochs * num_steps + t]
      index = tf.stack([user_index, slots_by_step[t]], axis=-1)
      step = [tf.gather_nd(c, index) if table else c
              for c, table in zip(copies, is_table)]
      with tf.GradientTape() as tape:
        tape.watch(step)
        losses, logits = user_losses(
            dict(zip(global_names + local_names, step + users)),
            step_labels, mask, items_by_step[recon_epochs * num_steps + t])
        total = tf.reduce_sum(losses)
      grads = tape.gradient(total, step)
      # Duplicate slots in a batch add up, as an embedding's gradient does.
      client_state, copies = client_optimizer.step(
          client_state, copies, grads, active,
          [index if table else None for table in is_table])
      cohort_work.update_metrics(metrics, explicit, step_labels, logits,
                                 mask, losses, active)
      examples += tf.reduce_sum(mask, axis=1)

    # 3. Per-user updates, weighted and summed.
    parts = cohort_work.item_side_parts(initial, copies, is_table,
                                        slot_items, num_items)
    (update, total_weight, quantile_record, zeroed_count,
     upload) = cohort_work.combine(
        parts, examples, uniform_weighting, zeroing_work, quantile_params,
        zeroing_norm, clip_query, clip_params, silos)
    unfinalized = cohort_work.with_upload(
        tff.learning.models.ReconstructionModel.read_metric_variables(metrics),
        upload)
    return (tff.learning.templates.ClientResult(update, total_weight),
            unfinalized, quantile_record, zeroed_count)

  return cohort_work.client_work_process(client_update, weights_type,
                                         cohort_type, zeroing_work, finalizers,
                                         clip_work)


def by_epoch(client_optimizer: cohort_optimizers.UserOptimizer,
             reconstruction_optimizer: cohort_optimizers.UserOptimizer,
             model_config=None) -> bool:
  """Whether explicit feedback trains on the epoch-by-epoch layout.

  MF's own client work (`build_client_work`) steps MF with SGD; a stateful
  optimizer steps each user's whole copies, as the implicit client work
  does, so explicit ratings then go through it
  (`cohorts.EpochCohortPacker`), as do the other models with a scorer.
  """
  return (client_optimizer.stateful or reconstruction_optimizer.stateful or
          (model_config is not None and model_config.model_name != 'mf'))


def build_training_process(model_fn, model_config: mf.MFConfig,
                           num_items: int, recon, optimizers, batch_size: int,
                           client_optimizer: cohort_optimizers.UserOptimizer,
                           reconstruction_optimizer: cohort_optimizers
                           .UserOptimizer, aggregator,
                           uniform_weighting: bool, zeroing: bool = False,
                           clip_query=None, implicit: bool = False,
                           silos=None):
  """FedRecon whose clients are cohorts (`cohorts.CohortPacker`: MF with
  SGD; `cohorts.EpochCohortPacker`: MF with a stateful optimizer (`by_epoch`);
  `cohorts.ImplicitCohortPacker` with `implicit`: any optimizers).

  Composed like `tff.learning.algorithms.build_fed_recon`, with the same
  initial weights, broadcast, aggregator and server finalizer, so the state
  is the per-client process's. With `zeroing`, the client work zeroes each
  user's update as the per-client aggregator's adaptive zeroing would (so
  `aggregator` must not zero: it would zero whole cohorts). With
  `clip_query`, each user is clipped in the client work (user-level DP) and
  `aggregator` is a DP aggregator over `aggregation.PreclippedQuery`. With
  `silos` (`cohort_work.SiloRecords`), each cohort is one silo's users.
  """
  initial_weights = tff.tensorflow.computation(
      lambda: tff.learning.models.ReconstructionModel.get_global_variables(
          model_fn()))
  weights_type = initial_weights.type_signature.result
  if implicit or by_epoch(client_optimizer, reconstruction_optimizer,
                          model_config):
    client_work = build_implicit_client_work(
        model_fn, weights_type, model_config, num_items, recon, batch_size,
        client_optimizer, reconstruction_optimizer, uniform_weighting,
        zeroing, clip_query, explicit=not implicit, silos=silos)
  else:
    client_work = build_client_work(
        model_fn, weights_type, model_config, num_items, recon, batch_size,
        client_optimizer.learning_rate,
        reconstruction_optimizer.learning_rate, uniform_weighting, zeroing,
        clip_query, silos)
  return cohort_work.compose(
      initial_weights, client_work, aggregator, optimizers.server,
      silos and silos.sparsify,
      [table for _, table in _recon_parameters(model_config, num_items)[0]])
