"""FedAvg and FedProx run in cohorts, for every model with a cohort scorer.

The cohort client work computes, for each of a cohort's K users, exactly what
the per-client client work computes for that user alone (TFF's FedAvg client
work, `tff.learning.algorithms.build_weighted_fed_avg`, or fed_prox.py's) with
the model in the classic layout (global user tables); the models are those
of `cohort_scores.SCORERS` (MF, GMF, MLP, NeuMF, U-AutoRec), and any client
optimizer of `optimizers.OptimizerName` (SGD, or stateful ones stepped per
user by `cohort_optimizers.UserOptimizer`):

* Each user trains its own copies of the parameters its batches touch: its
  rows of the user tables, a row of each item table for each distinct item
  it meets, and every other weight whole (the global bias, each dense layer:
  per-user copies of dense layers run as batched matmuls). All K users step
  together: one gradient of the sum of their masked batch losses is each
  user's own gradient, since users share no copy. An item met twice in a
  batch gets both gradients (scattered into its copy), as an embedding's
  does.
* Explicit feedback: the per-client dataset is the user's ratings in their
  seeded order, repeated for `local_epochs` and then batched, so a batch may
  span two epochs; batch t holds positions [tB, (t+1)B) of that sequence,
  position p being rating p mod n of the user's n ratings.
  Implicit feedback: each local epoch has its own examples (fresh negatives)
  and its own batches (`cohorts.ImplicitCohortPacker`, no reconstruction
  epochs). U-AutoRec: each epoch is one step on the user's one example, its
  vector of training items and that epoch's labels over all items
  (`cohorts.UserVectorCohortPacker`); every user holds the whole
  autoencoder, so such models come in smaller cohorts (`users_per_cohort`),
  and its L2 (Keras kernel regularizers) is in the loss trained on but,
  as in TFF's Keras model, not in the `loss` metric.
* FedProx adds mu (w - w_global) to the gradient of every parameter a user
  holds, at every step the user takes, as fed_prox.py does for the whole
  model (rows a user never touched stay at w_global, where the term is 0).
* A stateful client optimizer (momentum, Adam, ...) gets a fresh state per
  user and round, as per client, and steps on the gradient of the user's
  whole copies (rows without a gradient at a step still move by their
  accumulators, as TFF's densified update moves them); a user without a
  batch at a step is frozen.
* A user's update is its initial copies minus its final ones, combined with
  the others' as algorithms/cohort_work.py describes (weighting by training
  examples over all epochs, the non-finite guard, adaptive zeroing and DP
  clipping per user) and scattered to the tables' shapes.

Training metrics are the per-client model's own (its Keras metrics, the
batch-size-weighted `loss`, `num_examples`, `num_batches`), summed over users.
"""

import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import cohort_optimizers
from research.fedrec.algorithms import cohort_scores
from research.fedrec.algorithms import cohort_work
from research.fedrec.algorithms import cohorts as cohorts_lib
from research.fedrec.models import builder

# Metrics every `tff.learning` Keras model adds to its own (keras_utils.py).
_LOSS, _NUM_EXAMPLES, _NUM_BATCHES = 'loss', 'num_examples', 'num_batches'


def _explicit_batches(cohort, batch_size: int, local_epochs: int):
  """(slot_items, num_steps, batch_at) of a `cohorts.CohortPacker` cohort.

  `batch_at(t)` gives step t's `(mask, targets, slots, active, inputs)`:
  [K, B] 1.0 at real positions, their ratings, the position of their item
  among the user's `slot_items`, [K] whether the user has a batch t, and
  the scorer's other inputs (the step's item ids and its mask).
  """
  counts, ratings = cohort['counts'], cohort['ratings']
  total = local_epochs * counts
  num_steps = (tf.reduce_max(total) + batch_size - 1) // batch_size

  def batch_at(t):
    positions = t * batch_size + tf.range(batch_size)
    mask = tf.cast(positions[None, :] < total[:, None], tf.float32)
    slots = positions[None, :] % tf.maximum(counts, 1)[:, None]
    return (mask, tf.gather(ratings, slots, batch_dims=1), slots,
            t * batch_size < total,
            dict(items=tf.gather(cohort['items'], slots, batch_dims=1),
                 mask=mask))
  return cohort['items'], num_steps, batch_at


def _implicit_batches(cohort, batch_size: int, local_epochs: int):
  """As `_explicit_batches`, for a `cohorts.ImplicitCohortPacker` cohort."""
  counts = cohort['counts']
  num_users = tf.shape(counts)[0]
  steps_per_epoch = tf.shape(cohort['items'])[1] // (local_epochs *
                                                      batch_size)

  def by_step(x):  # [K, E * S * B] -> [E * S, K, B]: step t = e * S + s.
    return tf.transpose(tf.reshape(x, [num_users, -1, batch_size]),
                        [1, 0, 2])

  labels, slots = by_step(cohort['labels']), by_step(cohort['slots'])

  def batch_at(t):
    step = t % steps_per_epoch
    active = step * batch_size < counts
    mask = cohort_work.position_mask(counts, batch_size, step, active)
    return mask, labels[t], slots[t], active, dict(
        items=tf.gather(cohort['slot_items'], slots[t], batch_dims=1),
        mask=mask)
  return cohort['slot_items'], local_epochs * steps_per_epoch, batch_at


def _user_vector_batches(cohort, batch_size: int, local_epochs: int):
  """As `_explicit_batches`, for a `cohorts.UserVectorCohortPacker` cohort.

  Step t is epoch t, whose one example per user is its vector `x` and its
  labels over all items (`client_data.create_user_vector_train_fn`): 1 at
  the epoch's positives, 0 at its negatives, the rest left out (mask 0).
  Every user steps once per epoch.
  """
  del batch_size  # One example per user and epoch.
  known = cohort['known']
  num_users, num_items = tf.shape(known)[0], tf.shape(known)[1]
  shape = [num_users, local_epochs, -1]
  items = tf.reshape(cohort['items'], shape)
  labels = tf.reshape(cohort['labels'], shape)
  user_index = tf.tile(tf.range(num_users)[:, None],
                       [1, tf.shape(items)[2]])
  inside = tf.range(tf.shape(items)[2])[None, :] < cohort['counts'][:, None]

  def batch_at(t):
    # Labels + 1 (positives 2, negatives 1; padding 0, which changes
    # nothing) scattered by max onto zeros: a negative drawn twice is one
    # 0 label, and a positive outranks any negative, as in the pipeline.
    marks = tf.tensor_scatter_nd_max(
        tf.zeros([num_users, num_items]),
        tf.stack([user_index, items[:, t]], axis=-1),
        tf.where(inside, labels[:, t] + 1.0, 0.0))
    return (tf.cast(marks > 0, tf.float32), tf.maximum(marks - 1.0, 0.0),
            None, tf.ones([num_users], tf.bool), {'x': known})
  return cohort['slot_items'], local_epochs, batch_at


_USER, _ITEM, _DENSE = 'user', 'item', 'dense'


def _parameters(model_config, num_items: int, num_users: int):
  """The model's trainable weights, and whether its L2 is Keras's.

  Returns:
    `(parameters, keras_regularized)`: (name, kind, size) of each trainable
    weight in the model's order (kinds: a row per user (the user tables),
    rows per item (the other embedding tables), or whole (dense layers, the
    global bias); names as `cohort_scores` reads them (`weight_names`);
    sizes in floats), and whether the L2 is Keras regularization losses
    (U-AutoRec's kernel regularizers), which TFF adds to the loss it trains
    on but not to its `loss` metric (else the L2 is part of the loss,
    `mf.PairL2`).
  """
  with tf.Graph().as_default():
    layers = builder.create_keras_model(model_config, num_items, num_users,
                                        regularization_output=True)
    user_weights = {id(w) for layer in layers.user_layers
                    for w in layer.trainable_weights}
    tables = {id(w) for layer in layers.model.layers
              if isinstance(layer, tf.keras.layers.Embedding)
              for w in layer.trainable_weights}
    names = cohort_scores.weight_names(layers.model)
    parameters = [(names[id(w)], _USER if id(w) in user_weights else
                   _ITEM if id(w) in tables else _DENSE,
                   w.shape.num_elements())
                  for w in layers.model.trainable_variables]
    return parameters, bool(layers.model.losses)


# Floats of one set of a cohort's whole copies (each user's own dense layers)
# at most: the client work holds a few such sets (initial, current, the
# gradient, a stateful optimizer's accumulators).
COPY_FLOATS = 1 << 25


def users_per_cohort(model_config, num_items: int, num_users: int,
                     cohort_size: int) -> int:
  """The cohort size (--cohort_size, 0: automatic) capped by `COPY_FLOATS`.

  Only a model with large dense layers (U-AutoRec: two [items, hidden]
  kernels per user) is capped; at least one user per cohort. A negative
  size is left for the packer to refuse.
  """
  if cohort_size < 0:
    return cohort_size
  parameters, _ = _parameters(model_config, num_items, num_users)
  whole = sum(size for _, kind, size in parameters if kind == _DENSE)
  return max(1, min(cohorts_lib.max_users(cohort_size),
                    COPY_FLOATS // max(whole, 1)))


def build_client_work(model_fn, weights_type, model_config,
                      num_items: int, num_users: int, local_epochs: int,
                      batch_size: int,
                      optimizer: cohort_optimizers.UserOptimizer,
                      proximal_strength: float, uniform_weighting: bool,
                      implicit: bool, zeroing: bool = False,
                      clip_query=None):
  """The cohort `ClientWorkProcess` of FedAvg / FedProx.

  For a model with a scorer in `cohort_scores.SCORERS`. `weights_type` is
  the TFF type of the model's weights; `optimizer` the client optimizer;
  `proximal_strength` is FedProx's mu (0: FedAvg). `zeroing` and
  `clip_query` act on each user (cohort_work.py).
  """
  user_vectors = builder.user_vector_inputs(model_config)
  spec = (cohorts_lib.USER_VECTOR_ELEMENT_SPEC if user_vectors else
          cohorts_lib.IMPLICIT_ELEMENT_SPEC if implicit else
          cohorts_lib.ELEMENT_SPEC)
  cohort_type = tff.SequenceType(tff.types.tensorflow_to_type(spec))
  zeroing_work, params_type, norm_type = cohort_work.zeroing_parts(zeroing)
  clip_work, clip_type = cohort_work.clip_parts(clip_query)
  example_loss = (cohort_work.cross_entropy if implicit else
                  cohort_work.squared_error)
  batches = (_user_vector_batches if user_vectors else
             _implicit_batches if implicit else _explicit_batches)
  scores = cohort_scores.SCORERS[model_config.model_name]
  parameters, keras_regularized = _parameters(model_config, num_items,
                                              num_users)
  names = [name for name, _, _ in parameters]
  kinds = [kind for _, kind, _ in parameters]
  with tf.Graph().as_default():
    finalizers = model_fn().metric_finalizers()

  @tff.tensorflow.computation(weights_type, cohort_type, params_type,
                              norm_type, clip_type)
  @tf.function
  def client_update(initial_weights, dataset, quantile_params, zeroing_norm,
                    clip_params):
    with tf.init_scope():
      model = model_fn()
    metrics = {m.name: m for m in model.get_metrics()}
    cohort = dataset.get_single_element()
    users = cohort['users']
    size = tf.shape(users)[0]
    slot_items, num_steps, batch_at = batches(cohort, batch_size,
                                              local_epochs)

    def initial_copy(weight, kind):  # Each user's copy of what it touches.
      if kind == _USER:
        return tf.gather(weight, users)  # [K, ...]: its row.
      if kind == _ITEM:
        return tf.gather(weight, slot_items)  # [K, M, ...]: its items' rows.
      return tf.tile(weight[None], [size] + [1] * weight.shape.rank)

    initial = [initial_copy(w, kind)
               for w, kind in zip(initial_weights.trainable, kinds)]
    copies = list(initial)
    optimizer_state = optimizer.initialize(copies)
    user_index = tf.tile(tf.range(size)[:, None], [1, batch_size])
    examples = tf.zeros([size], tf.float32)
    for t in tf.range(num_steps):
      mask, targets, slots, active, inputs = batch_at(t)
      index = (None if slots is None else
               tf.stack([user_index, slots], axis=-1))
      step = [tf.gather_nd(c, index) if kind == _ITEM else c
              for c, kind in zip(copies, kinds)]
      with tf.GradientTape() as tape:
        tape.watch(step)
        prediction, squares = scores(model_config, dict(zip(names, step)),
                                     inputs)
        losses = cohort_work.masked_losses(example_loss, model_config.l2,
                                           targets, mask, prediction,
                                           squares)
        total = tf.reduce_sum(losses)
      grads = tape.gradient(total, step)
      # d/dw of mu/2 |w - w_global|^2, for every user that steps.
      pull = proximal_strength * tf.cast(active, tf.float32)
      extra = [cohort_optimizers.per_user(pull, copy) * (copy - start)
               for copy, start in zip(copies, initial)
               ] if proximal_strength else None
      # Items met twice in a batch: both gradients.
      optimizer_state, copies = optimizer.step(
          optimizer_state, copies, grads, active,
          [index if kind == _ITEM else None for kind in kinds], extra)
      # The per-client model's metrics, each user's batch as its own.
      batch_sizes = (tf.cast(active, tf.float32) if user_vectors else
                     tf.reduce_sum(mask, axis=1))
      examples += batch_sizes
      for name, metric in metrics.items():
        if name == _LOSS:
          if keras_regularized:  # The loss metric leaves Keras's L2 out.
            losses = cohort_work.masked_losses(
                example_loss, 0.0, targets, mask, prediction, squares)
          tf.keras.metrics.Mean.update_state(metric, losses,
                                             sample_weight=batch_sizes)
        elif name == _NUM_EXAMPLES:
          tf.keras.metrics.Sum.update_state(
              metric, tf.cast(tf.reduce_sum(batch_sizes), tf.int64))
        elif name == _NUM_BATCHES:
          tf.keras.metrics.Sum.update_state(
              metric, tf.reduce_sum(tf.cast(active, tf.int64)))
        elif implicit:  # Padded and idle positions: label -1, left out.
          metric.update_state(
              tf.reshape(tf.where(mask > 0, targets, -1.0), [-1]),
              tf.reshape(prediction, [-1]))
        else:
          metric.update_state(tf.reshape(targets, [-1]),
                              tf.reshape(prediction, [-1]),
                              sample_weight=tf.reshape(mask, [-1]))

    # The update, in the order of the model's trainable weights.
    parts = []
    for start, copy, kind in zip(initial, copies, kinds):
      if kind == _USER:
        parts.append(((start - copy)[:, None], users[:, None], num_users))
      elif kind == _ITEM:
        parts.append((start - copy, slot_items, num_items))
      else:
        parts.append((start - copy, None, None))
    (update, total_weight, quantile_record, zeroed_count,
     upload) = cohort_work.combine(
        parts, examples, uniform_weighting, zeroing_work, quantile_params,
        zeroing_norm, clip_query, clip_params)
    return (tff.learning.templates.ClientResult(update, total_weight),
            cohort_work.with_upload(model.report_local_unfinalized_metrics(),
                                    upload), quantile_record, zeroed_count)

  return cohort_work.client_work_process(client_update, weights_type,
                                         cohort_type, zeroing_work, finalizers,
                                         clip_work)


def build_training_process(model_fn, model_config,
                           num_items: int, num_users: int, local_epochs: int,
                           batch_size: int,
                           optimizer: cohort_optimizers.UserOptimizer,
                           proximal_strength: float, server_optimizer,
                           aggregator, uniform_weighting: bool,
                           implicit: bool, zeroing: bool = False,
                           clip_query=None):
  """FedAvg / FedProx MF whose clients are cohorts.

  Composed like the per-client process (TFF's broadcast, `aggregator`, the
  server optimizer's finalizer), with the same initial weights, so the state
  is the per-client process's. `aggregator` must be weighted and, with
  `zeroing` or `clip_query`, must not zero or clip (cohort_work.py).
  """
  initial_weights = tff.tensorflow.computation(
      lambda: tff.learning.models.ModelWeights.from_model(model_fn()))
  weights_type = initial_weights.type_signature.result
  return cohort_work.compose(
      initial_weights,
      build_client_work(model_fn, weights_type, model_config, num_items,
                        num_users, local_epochs, batch_size, optimizer,
                        proximal_strength, uniform_weighting, implicit,
                        zeroing, clip_query),
      aggregator, server_optimizer)
