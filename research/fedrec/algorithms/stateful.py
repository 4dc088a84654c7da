"""Stateful clients: methods whose users keep parameters between visits.

FedMF (algorithms/fed_mf.py) keeps each user's embedding on its device from
round to round; PFedRec (algorithms/pfedrec.py, Zhang et al., IJCAI 2023)
keeps a user-specific score function there and fine-tunes the global item
embeddings into a personal view; FedRecon + DualPer
(algorithms/fedrecon_dualper.py) rebuilds the user's part each visit as
FedRecon does and keeps it, with a personal view, for scoring. tff.learning
has no stateful clients, so the state lives where a device would keep it:
`client_states.ClientStates`, on the simulation's device side, never in the
server state.

A round, for every user it samples (in cohorts, algorithms/cohorts.py; per
client is a cohort of one user each, every user its own TFF client):

1. the user's local state (for MF: its vector p_u and bias b_u) is read from
   its device and packed beside its examples;
2. the user trains, from the broadcast global weights (item rows q_i, item
   biases c_i, the global bias g) and its own state, for the local epochs:
   * jointly (FedMF): each batch one step of the client optimizer on the
     gradient of its loss with respect to both its state and its copies of
     the global weights;
   * reconstructed (FedRecon + DualPer, `Rules.reconstruct`): the user's
     part rebuilt from FedRecon's initial value, the item side frozen, then
     the item side trained with the part frozen;
   * alternately (PFedRec, as its official code's
     `fed_train_single_batch`): each batch first a step on the user's own
     part (the score function), then, with the updated part, a step on the
     item side, at `--item_learning_rate_scale` times the client learning
     rate for item tables (their code: lr x num_items x lr_eta);
3. the user's new state goes back to its device (a TFF output placed at the
   clients, written back by the host); with `personal_items` (dual
   personalization) the item rows it fine-tuned are kept on its device too,
   as its personal view of the item table for scoring;
4. only the global weights' update (initial minus final copies) leaves the
   device, weighted, guarded, clipped per user under DP exactly as every
   cohort client work does (algorithms/cohort_work.py), and the server
   applies the aggregate with its optimizer.

A user is scored with its own state: p_u and b_u from its device, the item
side global or, with `personal_items`, its personal view (the rows it
fine-tuned on its last visit over the global table it received then; a user
never visited scores with the current global table).
"""

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import client_data
from research.fedrec.algorithms import client_states as client_states_lib
from research.fedrec.algorithms import cohort_optimizers
from research.fedrec.algorithms import cohort_scores
from research.fedrec.algorithms import cohort_work
from research.fedrec.algorithms import cohorts as cohorts_lib
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import fed_recon_cohort
from research.fedrec.algorithms import registry
from research.fedrec.models import builder

PERSONAL_PREFIX = client_states_lib.PERSONAL_PREFIX
VISITED = client_states_lib.VISITED
mf_scores = client_states_lib.mf_scores


@dataclasses.dataclass(frozen=True)
class Rules:
  """How a stateful method's users train (see the module doc)."""

  alternating: bool = False  # PFedRec: user part, then item side, per batch.
  item_learning_rate_scale: float = 1.0  # Item tables' rate / client rate.
  personal_items: bool = False  # Dual personalization.
  # FedRecon + DualPer: a visit rebuilds the user's part from its initial
  # value (`--recon_epochs` of the reconstruction optimizer, the item side
  # frozen), then trains the item side with that part frozen; the rebuilt
  # part is kept on the device for scoring, not as the next visit's start.
  reconstruct: bool = False
  # PFedRec's code's loss: BCE of float32 sigmoid probabilities (implicit).
  probability_loss: bool = False


def state_specs(model_config, num_items: int, personal_items: bool) -> dict:
  """Each user's state tensors: name -> one user's shape."""
  global_weights, local_names = fed_recon_cohort._recon_parameters(  # pylint: disable=protected-access
      model_config, num_items)
  specs = collections.OrderedDict()
  with tf.Graph().as_default():
    layers = builder.create_keras_model(model_config, num_items)
    shapes = {}
    names = cohort_scores.weight_names(layers.model)
    for weight in layers.model.trainable_weights:
      shapes[names[id(weight)]] = tuple(weight.shape.as_list())
  for name in local_names:  # A local weight is (1, ...): one user's row.
    specs[name] = shapes[name][1:]
  if personal_items:
    for name, table in global_weights:
      if table:
        specs[PERSONAL_PREFIX + name] = shapes[name]
    specs[VISITED] = ()
  return specs


def build_client_work(weights_type, model_config, num_items: int,
                      local_epochs: int, batch_size: int,
                      client_optimizer: cohort_optimizers.UserOptimizer,
                      rules: Rules, uniform_weighting: bool,
                      implicit: bool, zeroing: bool = False,
                      clip_query=None, recon=None,
                      reconstruction_optimizer=None, initial_users=None,
                      silos=None):
  """The cohort client work of a stateful method (module doc, steps 2-4).

  Its cohorts are `cohorts.IMPLICIT_ELEMENT_SPEC`'s (epoch by epoch: the
  implicit packer, or `cohorts.EpochCohortPacker` for explicit ratings)
  plus each user's local state by name ([K, ...]). Its `run` returns, at the
  clients, each cohort's new local states and, with `rules.personal_items`,
  the users' final copies of the item tables' rows (`slot_items`' rows).
  With `rules.reconstruct`, the cohorts also hold `recon.recon_epochs`
  reconstruction epochs first (the FedRecon packers' layout), which rebuild
  each user's part from `initial_users` (one user's values, by local name)
  with `reconstruction_optimizer`; the packed states are then unused.
  With `silos` (`cohort_work.SiloRecords`), each cohort is one silo's users.
  """
  recon_epochs = recon.recon_epochs if rules.reconstruct else 0
  joint = not (rules.alternating or rules.reconstruct)
  global_weights, local_names = fed_recon_cohort._recon_parameters(  # pylint: disable=protected-access
      model_config, num_items)
  global_names = [name for name, _ in global_weights]
  is_table = [table for _, table in global_weights]
  specs = state_specs(model_config, num_items, False)
  element_spec = collections.OrderedDict(cohorts_lib.IMPLICIT_ELEMENT_SPEC)
  for name, shape in specs.items():
    element_spec[name] = tf.TensorSpec([None] + list(shape), tf.float32)
  cohort_type = tff.SequenceType(tff.types.tensorflow_to_type(element_spec))
  zeroing_work, params_type, norm_type = cohort_work.zeroing_parts(zeroing)
  clip_work, clip_type = cohort_work.clip_parts(clip_query)
  scores = cohort_scores.SCORERS[model_config.model_name]
  if not implicit:
    example_loss = cohort_work.squared_error
  elif rules.probability_loss:
    example_loss = cohort_work.probability_cross_entropy
  else:
    example_loss = cohort_work.cross_entropy
  table_optimizer = cohort_optimizers.UserOptimizer(
      client_optimizer.name,
      client_optimizer.learning_rate * rules.item_learning_rate_scale)
  finalizers = collections.OrderedDict()

  def pick(values, tables: bool):
    return [v for v, table in zip(values, is_table) if table == tables]

  def merge(tables, others):
    tables, others = iter(tables), iter(others)
    return [next(tables) if table else next(others) for table in is_table]

  @tff.tensorflow.computation(weights_type, cohort_type, params_type,
                              norm_type, clip_type)
  @tf.function
  def client_update(initial_weights, dataset, quantile_params, zeroing_norm,
                    clip_params):
    with tf.init_scope():
      metrics = fed_recon_cohort._create_metrics(implicit, finalizers)  # pylint: disable=protected-access
    cohort = dataset.get_single_element()
    counts, slot_items = cohort['counts'], cohort['slot_items']
    num_users = tf.shape(counts)[0]
    num_steps = tf.shape(cohort['items'])[1] // (
        (recon_epochs + local_epochs) * batch_size)

    def by_step(x):  # [K, E * S * B] -> [E * S, K, B]: slot t = e * S + s.
      return tf.transpose(tf.reshape(x, [num_users, -1, batch_size]),
                          [1, 0, 2])

    labels_by_step = by_step(cohort['labels'])
    slots_by_step = by_step(cohort['slots'])
    weights = list(initial_weights.trainable)

    def user_losses(global_params, users, step_labels, mask):
      params = dict(zip(global_names + local_names, global_params + users))
      logits, squares = scores(model_config, params)
      return cohort_work.masked_losses(
          example_loss, model_config.l2, step_labels, mask, logits,
          squares), logits

    users = [cohort[name] for name in local_names]
    initial = [tf.gather(w, slot_items) if table else
               tf.tile(w[None], [num_users] + [1] * w.shape.rank)
               for w, table in zip(weights, is_table)]
    if rules.reconstruct:
      # FedRecon's reconstruction (fed_recon_cohort): every user's part from
      # its initial value, the global side frozen, on its own batches.
      users = [tf.tile(tf.constant(initial_users[name])[None],
                       [num_users] + [1] * len(initial_users[name].shape))
               for name in local_names]
      items_by_step = by_step(cohort['items'])
      recon_state = reconstruction_optimizer.initialize(users)
      recon_counts = cohort['recon_counts']
      recon_active = fed_recon_cohort._phase_active(  # pylint: disable=protected-access
          recon_counts, num_steps, batch_size, recon.recon_steps_max, None)
      for t in tf.range(recon_epochs * num_steps):
        active = recon_active(t)
        mask = cohort_work.position_mask(recon_counts, batch_size,
                                         t % num_steps, active)
        # The frozen dense weights once for the cohort (`cohort_scores`).
        frozen = [tf.gather(w, items_by_step[t]) if table else w
                  for w, table in zip(weights, is_table)]
        with tf.GradientTape() as tape:
          tape.watch(users)
          losses, _ = user_losses(frozen, users, labels_by_step[t], mask)
          total = tf.reduce_sum(losses)
        recon_state, users = reconstruction_optimizer.next(
            recon_state, users, tape.gradient(total, users), active)
    copies = list(initial)
    table_state = table_optimizer.initialize(pick(copies, True))
    other_state = client_optimizer.initialize(pick(copies, False))
    user_state = client_optimizer.initialize(users)
    user_index = tf.tile(tf.range(num_users)[:, None], [1, batch_size])
    active_at = fed_recon_cohort._phase_active(  # pylint: disable=protected-access
        counts, num_steps, batch_size,
        recon.post_recon_steps_max if rules.reconstruct else None, None)
    examples = tf.zeros([num_users], tf.float32)
    for t in tf.range(local_epochs * num_steps):
      active = active_at(t)
      mask = cohort_work.position_mask(counts, batch_size, t % num_steps,
                                       active)
      step_labels = labels_by_step[recon_epochs * num_steps + t]
      index = tf.stack([user_index, slots_by_step[t]], axis=-1)

      def rows_of(values):
        return [tf.gather_nd(c, index) if table else c
                for c, table in zip(values, is_table)]

      if rules.alternating:
        # The user's own part first, the item side frozen ...
        step = rows_of(copies)
        with tf.GradientTape() as tape:
          tape.watch(users)
          losses, _ = user_losses(step, users, step_labels, mask)
          total = tf.reduce_sum(losses)
        user_state, users = client_optimizer.next(
            user_state, users, tape.gradient(total, users), active)
      # ... then the item side (alternating: with the updated user part;
      # jointly: both from the same loss; reconstructed: the part frozen).
      step = rows_of(copies)
      with tf.GradientTape() as tape:
        tape.watch(step)
        if joint:
          tape.watch(users)
        losses, logits = user_losses(step, users, step_labels, mask)
        total = tf.reduce_sum(losses)
      if not joint:
        grads = tape.gradient(total, step)
      else:
        grads = tape.gradient(total, step + users)
        user_state, users = client_optimizer.next(
            user_state, users, grads[len(step):], active)
        grads = grads[:len(step)]
      rows = [index if table else None for table in is_table]
      table_state, tables = table_optimizer.step(
          table_state, pick(copies, True), pick(grads, True), active,
          pick(rows, True))
      other_state, others = client_optimizer.step(
          other_state, pick(copies, False), pick(grads, False), active,
          pick(rows, False))
      copies = merge(tables, others)
      cohort_work.update_metrics(metrics, not implicit, step_labels, logits,
                                 mask, losses, active)
      examples += tf.reduce_sum(mask, axis=1)

    parts = cohort_work.item_side_parts(initial, copies, is_table,
                                        slot_items, num_items)
    (update, total_weight, quantile_record, zeroed_count,
     upload) = cohort_work.combine(
        parts, examples, uniform_weighting, zeroing_work, quantile_params,
        zeroing_norm, clip_query, clip_params, silos)
    unfinalized = cohort_work.with_upload(
        tff.learning.models.ReconstructionModel.read_metric_variables(metrics),
        upload)
    kept = collections.OrderedDict(zip(local_names, users))
    if rules.personal_items:
      for name, copy, table in zip(global_names, copies, is_table):
        if table:
          kept[PERSONAL_PREFIX + name] = copy
    return (tff.learning.templates.ClientResult(update, total_weight),
            unfinalized, quantile_record, zeroed_count, kept)

  return cohort_work.client_work_process(
      client_update, weights_type, cohort_type, zeroing_work, finalizers,
      clip_work, client_outputs=True)


class StatefulProcess:
  """The learning process of a stateful method; `next` takes client ids.

  Everything but `next` is the composed TFF process's (`initialize`,
  `get_model_weights`, hyperparameters, the checkpointed state). `next`
  packs the round's users with their local states from `client_states`,
  runs the round, and writes each user's new state back to its device.
  """

  def __init__(self, process, packer, client_states, rules: Rules,
               global_names: Sequence[str], is_table: Sequence[bool]):
    self._process = process
    self._packer = packer
    self.client_states = client_states
    self._rules = rules
    self._global_names = list(global_names)
    self._is_table = list(is_table)
    self._local_names = [n for n in client_states.names
                         if not n.startswith(PERSONAL_PREFIX) and n != VISITED]
    self.last_round_cohorts = 0
    # Sparsified silo uploads (algorithms/sparse_uploads.SiloUploads).
    self.uploads = None

  def next(self, state, client_ids: Sequence[str]):
    cohorts = self._packer.cohorts(client_ids)
    self.last_round_cohorts = len(cohorts)
    if not cohorts:
      raise ValueError('a round with no users cannot run.')
    for cohort in cohorts:
      cohort.update(self.client_states.gather(cohort['users'],
                                              self._local_names))
    datasets = [tf.data.Dataset.from_tensors(c) for c in cohorts]
    if self.uploads is not None:
      output, kept = self.uploads.run(self._process, state, datasets,
                                      cohorts)
    else:
      output, kept = self._process.next_with_client_outputs(state, datasets)
    received = None
    if self._rules.personal_items:
      received = dict(zip(self._global_names, self._process.get_model_weights(
          state).trainable))
    for cohort, outputs in zip(cohorts, kept):
      self._write_back(cohort, outputs, received)
    return cohorts_lib.zeroing_measured_by_aggregator(output)

  def _write_back(self, cohort, outputs, received) -> None:
    users = cohort['users']
    values = {name: np.asarray(outputs[name]) for name in self._local_names}
    if received is not None:
      # The personal view: the item table received this round, with the
      # rows the user fine-tuned (its distinct training items).
      slots = cohort['slots']
      touched = np.where(cohort['counts'] > 0, slots.max(axis=1) + 1, 0)
      for name, table in zip(self._global_names, self._is_table):
        if not table:
          continue
        rows = np.asarray(outputs[PERSONAL_PREFIX + name])
        view = np.repeat(np.asarray(received[name])[None], len(users), 0)
        user, slot = np.nonzero(
            np.arange(rows.shape[1])[None, :] < touched[:, None])
        view[user, cohort['slot_items'][user, slot]] = rows[user, slot]
        values[PERSONAL_PREFIX + name] = view
      values[VISITED] = np.ones(len(users), np.float32)
    self.client_states.scatter(users, values)

  def __getattr__(self, name):
    return getattr(self._process, name)


def build_process(inputs: registry.ProcessInputs, rules: Rules,
                  seed: int) -> StatefulProcess:
  """The stateful method's process of `inputs` (see the module doc)."""
  model_config, num_items = inputs.model_config, inputs.num_items
  model_fn, _ = fed_recon.create_model_fns(model_config, num_items,
                                           client_data.RECON_TRAIN_SPEC)
  initial_weights = tff.tensorflow.computation(
      lambda: tff.learning.models.ReconstructionModel.get_global_variables(
          model_fn()))
  weights_type = initial_weights.type_signature.result
  pipeline = inputs.pipeline
  settings = inputs.optimizer_settings
  client_optimizer = cohort_optimizers.UserOptimizer(
      settings.client, settings.client_learning_rate)
  global_weights, local_names = fed_recon_cohort._recon_parameters(  # pylint: disable=protected-access
      model_config, num_items)
  recon, epochs = inputs.recon, pipeline.local_epochs
  recon_epochs, split, initial_users = 0, False, None
  if rules.reconstruct:  # FedRecon's epochs and initial user part.
    recon_epochs, epochs = recon.recon_epochs, recon.post_recon_epochs
    split = recon.split_dataset
    local = tff.learning.models.ReconstructionModel.get_local_variables(
        model_fn()).trainable
    initial_users = {name: np.asarray(v)[0]
                     for name, v in zip(local_names, local)}
  client_work = build_client_work(
      weights_type, model_config, num_items, epochs, pipeline.batch_size,
      client_optimizer, rules, inputs.uniform_weighting, inputs.implicit,
      inputs.zeroing_per_user, inputs.clip_query, recon,
      cohort_optimizers.UserOptimizer(
          settings.reconstruction, settings.reconstruction_learning_rate),
      initial_users, inputs.silo_records)
  silos = inputs.silo_records
  process = cohort_work.compose(
      initial_weights, client_work, inputs.aggregator,
      inputs.optimizers.server, silos and silos.sparsify,
      [table for _, table in global_weights])
  if inputs.implicit:
    packer = cohorts_lib.ImplicitCohortPacker(
        inputs.store_path, pipeline, num_items, recon_epochs, epochs,
        inputs.cohort_size, split)
  else:
    packer = cohorts_lib.EpochCohortPacker(
        inputs.store_path, pipeline, recon_epochs, epochs,
        inputs.cohort_size, split)
  packer.silo_of = inputs.silo_of  # Cross-silo: each silo one cohort.
  specs = state_specs(model_config, num_items, rules.personal_items)
  states = client_states_lib.ClientStates(
      inputs.client_state_dir, specs, inputs.num_users, seed,
      stddev={local_names[0]: model_config.init_stddev})
  return cohort_work.with_silo_uploads(
      StatefulProcess(process, packer, states, rules,
                      [n for n, _ in global_weights],
                      [t for _, t in global_weights]),
      process, inputs.silo_of, silos)


def _global_values(model_config, num_items: int, model_weights) -> dict:
  """The global weights by `cohort_scores` name (read once per evaluation)."""
  global_weights, _ = fed_recon_cohort._recon_parameters(  # pylint: disable=protected-access
      model_config, num_items)
  return dict(zip([n for n, _ in global_weights],
                  (np.asarray(v) for v in model_weights.trainable)))


def score_function(model_config, num_items: int, model_weights, states,
                   task_users: np.ndarray):
  """A ranking score function (`evaluation/ranking.py`): rows of the task's
  users -> their scores of every item."""
  values = _global_values(model_config, num_items, model_weights)

  def score(rows):
    users = task_users[rows]
    items = np.broadcast_to(np.arange(num_items), (len(users), num_items))
    return mf_scores(model_config.use_biases, values, states, users, items)
  return score


def predict_pairs(model_config, num_items: int, model_weights, states,
                  users: np.ndarray, items: np.ndarray,
                  chunk: int = 65536) -> np.ndarray:
  """Each (user, item) pair's score, the user with its own state."""
  values = _global_values(model_config, num_items, model_weights)
  out = np.zeros(len(users), np.float32)
  for start in range(0, len(users), chunk):
    part = slice(start, start + chunk)
    out[part] = mf_scores(model_config.use_biases, values, states,
                          np.asarray(users[part]),
                          np.asarray(items[part])[:, None])[:, 0]
  return out


def table_model(model_config, num_items: int, num_users: int, model_weights,
                states):
  """The classic layout's Keras model (a user table) holding the global item
  side and, as each user's row, the vector and bias kept on its device: what
  exports and serves the users (a user never visited: its initial state)."""
  layers = builder.create_keras_model(model_config, num_items, num_users)
  values = _global_values(model_config, num_items, model_weights)
  values['user_embedding'] = np.asarray(states['user_embedding'])
  if 'user_bias' in states:
    values['user_bias'] = np.asarray(states['user_bias'])
  for layer in layers.model.layers:
    if layer.name in values:
      layer.set_weights([values[layer.name].reshape(
          layer.weights[0].shape)])
  return layers.model


class StatefulMethod(registry.Method):
  """A method whose users keep local state (`Rules`; see the module doc)."""

  keeps_client_state = True
  # In cross-silo rounds each user's state stays in its silo's store.
  trains_in_silos = True

  def rules(self, settings: dict) -> Rules:
    raise NotImplementedError

  def finetunes(self, implicit: bool) -> bool:
    del implicit  # Its users' vectors are their own already.
    return False

  def validate(self, config) -> None:
    if config.model_name != 'mf':
      raise ValueError(f'--algorithm={self.name} trains --model=mf (its '
                       'users keep their MF vector); other models have no '
                       'stateful client work yet.')
    from research.fedrec.data import splits  # pylint: disable=g-import-not-at-top
    if config.split.kind == splits.SplitKind.USER_DISJOINT:
      raise ValueError(
          f'--algorithm={self.name} scores a user with the state it kept '
          'from training: --split=user_disjoint evaluates users that never '
          'trained (use a holdout or leave_one_out split).')
    super().validate(config)
    if (config.aggregation.compression.value != 'none' and
        not config.silos.enabled):  # A silo's update is one record.
      raise ValueError(f'--algorithm={self.name}: --compression has no '
                       'per-user form in cohorts yet.')

  def cohort_unsupported(self, config) -> Optional[str]:
    del config
    return None

  def build_process(self, inputs: registry.ProcessInputs):
    return build_process(inputs, self.rules(self.settings(inputs.settings)),
                         inputs.seed)
