"""Scoring every item for many users with an implicit-feedback model.

Ranking evaluation and recommendation need a score for every (user, item)
pair. The classic layout (a user table, as FedAvg and the centralized baseline
train) scores directly. A Federated Reconstruction model has no user table: as
on a client, each user's local embeddings are first *reconstructed* from the
user's known interactions with the global model frozen, then the user is
scored. `reconstruct_users` does that for many users at once, each exactly as
its own client would (with TensorFlow only, no TFF):

* every local epoch pairs the user's positives with `num_negatives` negatives
  per positive drawn from items the user has not interacted with, shuffled;
* batches of `batch_size`, the per-batch mean binary cross-entropy (plus the
  model's per-example L2), one optimizer step per batch, `epochs` epochs capped
  at `steps_max` steps;
* the embeddings start from the model's initial user vectors.

All users step together; a user whose batches have run out is frozen. The
randomness is seeded per (seed, user, epoch), so results do not depend on how
users are batched.
"""

import dataclasses
import functools
from typing import Optional, Sequence
import weakref

import numpy as np
import tensorflow as tf
from scipy import sparse

from research.fedrec.inference import reconstruction


SCORE_BATCH = 1 << 16  # (user, item) pairs scored per model call.


@dataclasses.dataclass(frozen=True)
class Settings:
  epochs: int = 1
  steps_max: Optional[int] = None
  batch_size: int = 16
  num_negatives: int = 4
  optimizer: str = 'sgd'
  learning_rate: float = 0.1
  seed: int = 0

  @classmethod
  def of_run(cls, config) -> 'Settings':
    """How the clients of a run (an `ExperimentConfig`) reconstruct a user."""
    return cls(num_negatives=config.pipeline.num_negatives,
               seed=config.pipeline.seed, **reconstruction.run_steps(config))


def _client_examples(user: int, known: np.ndarray, num_items: int,
                     settings: Settings, excluded: Optional[np.ndarray] = None):
  """(items, labels) batches of one user over all epochs: [batches, B].

  Negatives avoid `excluded` (sorted distinct items; default `known`).
  """
  rng = np.random.default_rng([settings.seed, user, 0x1c])
  positives = np.asarray(known, np.int64)
  excluded = positives if excluded is None else np.asarray(excluded, np.int64)
  shifted = excluded - np.arange(len(excluded))
  batches_items, batches_labels = [], []
  for _ in range(settings.epochs):
    room = num_items - len(excluded)
    draws = rng.integers(0, max(room, 1),
                         len(positives) * settings.num_negatives if room else 0)
    negatives = draws + np.searchsorted(shifted, draws, side='right')
    items = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(len(positives), np.float32),
                             np.zeros(len(negatives), np.float32)])
    order = rng.permutation(len(items))
    count = -(-len(items) // settings.batch_size)
    padded = count * settings.batch_size
    items = np.pad(items[order], (0, padded - len(items)), constant_values=-1)
    labels = np.pad(labels[order], (0, padded - len(labels)))
    batches_items.append(items.reshape(count, settings.batch_size))
    batches_labels.append(labels.reshape(count, settings.batch_size))
  items, labels = np.concatenate(batches_items), np.concatenate(batches_labels)
  if settings.steps_max is not None:
    items, labels = items[:settings.steps_max], labels[:settings.steps_max]
  return items, labels


def reconstruct_users(model: tf.keras.Model, user_layer_names: Sequence[str],
                      initial_vectors: Sequence[np.ndarray],
                      users: np.ndarray, known: sparse.csr_matrix,
                      settings: Settings,
                      excluded: Optional[sparse.csr_matrix] = None
                      ) -> list[np.ndarray]:
  """Reconstructed user embeddings, one table per user layer.

  Args:
    model: The classic layout (inputs `{user, item}`, output the logit) with
      user tables of at least `len(users)` rows; its global layers hold the
      trained weights. Rows [0, len(users)) of its user tables are overwritten
      with the result.
    user_layer_names: The model's user-embedding layers.
    initial_vectors: Each user layer's initial vector ([dim]), or each
      user's own ([len(users), dim]).
    users: Dense user ids (seed the negatives and shuffles), one per row.
    known: [len(users), num_items] the interactions to reconstruct from.
    settings: How clients reconstruct.
    excluded: [len(users), num_items] items never drawn as negatives (default
      `known`; the published PFedRec protocol passes every interaction of the
      user, held-out ones included).

  Returns:
    One [len(users), dim] array per user layer.
  """
  reconstructor = Reconstructor(model, user_layer_names, settings)
  return reconstructor.reconstruct(
      initial_vectors, reconstructor.examples(users, known, excluded))


@dataclasses.dataclass(frozen=True)
class Examples:
  """Users' reconstruction batches, padded: `items` [N, steps, B] (-1 where
  a user has no example), `labels` alike, `steps` [N] each user's batches.
  They depend only on the users, their interactions and the settings, so a
  caller that reconstructs the same users again may keep them."""

  items: np.ndarray
  labels: np.ndarray
  steps: np.ndarray

  @functools.cached_property
  def batches(self) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """`(items, labels)` of every step as tensors, made once."""
    return [(tf.constant(self.items[:, step]),
             tf.constant(self.labels[:, step]))
            for step in range(self.items.shape[1])]


class Reconstructor:
  """Reconstructs users in one classic-layout model (`reconstruct_users`),
  again and again: the gradient is traced once, and the model's global
  layers may be given new weights between calls."""

  def __init__(self, model: tf.keras.Model, user_layer_names: Sequence[str],
               settings: Settings):
    self._settings = settings
    self._layers = [model.get_layer(name) for name in user_layer_names]
    layers = self._layers
    batch = tf.TensorSpec([None, settings.batch_size], tf.int64)

    @tf.function(input_signature=[
        batch, tf.TensorSpec([None, settings.batch_size], tf.float32)])
    def gradients(item_batch, label_batch):
      num_users = tf.shape(item_batch)[0]
      rows = tf.repeat(tf.range(num_users, dtype=tf.int64),
                       settings.batch_size)
      mask = tf.cast(item_batch >= 0, tf.float32)
      count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
      weight = tf.reshape(mask / count[:, None], [-1])
      with tf.GradientTape() as tape:
        logits = model({'user': rows, 'item': tf.reshape(
            tf.maximum(item_batch, 0), [-1])}, training=False)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.reshape(label_batch, [-1]), logits=logits)
        # Per-user batch means (plus L2 added by the model), summed over
        # users: each user's rows get the gradient of that user's own loss.
        loss = tf.reduce_sum(losses * weight)
        if model.losses:
          loss += tf.add_n(model.losses) * tf.cast(num_users, tf.float32)
      return [tf.convert_to_tensor(g) for g in tape.gradient(
          loss, [layer.embeddings for layer in layers])]
    self._gradients = gradients

  def examples(self, users: np.ndarray, known: sparse.csr_matrix,
               excluded: Optional[sparse.csr_matrix] = None) -> Examples:
    """The batches each user reconstructs from (see `reconstruct_users`)."""
    settings = self._settings
    num_items = known.shape[1]
    examples = [_client_examples(
        int(u), known[r].indices, num_items, settings,
        None if excluded is None else np.sort(excluded[r].indices))
                for r, u in enumerate(users)]
    steps = np.array([len(items) for items, _ in examples], np.int64)
    max_steps = int(steps.max()) if len(steps) else 0
    items = np.full((len(users), max(max_steps, 1), settings.batch_size), -1,
                    np.int64)
    labels = np.zeros(items.shape, np.float32)
    for r, (i, l) in enumerate(examples):
      items[r, :len(i)], labels[r, :len(l)] = i, l
    return Examples(items, labels, steps)

  def reconstruct(self, initial_vectors: Sequence[np.ndarray],
                  examples: Examples) -> list[np.ndarray]:
    """Each user's reconstructed vectors (`reconstruct_users`), written to
    rows [0, N) of the model's user tables too."""
    settings, layers = self._settings, self._layers
    num_users = len(examples.steps)
    tables = [np.array(np.broadcast_to(np.asarray(v, np.float32),
                                       (num_users, np.shape(v)[-1])))
              for v in initial_vectors]
    optimizer = reconstruction.Optimizer(settings.optimizer,
                                         settings.learning_rate,
                                         [t.shape for t in tables])

    # Each user table as it is, its first rows replaced at every step.
    full = [np.array(layer.embeddings.numpy()) for layer in layers]

    def assign():
      for layer, weights, table in zip(layers, full, tables):
        weights[:num_users] = table
        layer.embeddings.assign(weights)

    max_steps = int(examples.steps.max()) if num_users else 0
    for step in range(max_steps):
      assign()
      grads = self._gradients(*examples.batches[step])
      grads = [g.numpy()[:num_users] for g in grads]
      optimizer.step(tables, grads, examples.steps > step)
    assign()
    return tables


def score_items(model: tf.keras.Model, rows: np.ndarray,
                num_items: int) -> np.ndarray:
  """[len(rows), num_items] logits of a classic-layout model's user rows.

  The model is called on at most `SCORE_BATCH` (user, item) pairs at a
  time by a function traced once per model (and kept while the model
  lives), so scoring the same model again, with new weights or not, does
  not retrace it.
  """
  rows = np.asarray(rows, np.int64).reshape(-1)
  if not len(rows):  # pylint: disable=g-explicit-length-test
    return np.zeros((0, num_items), np.float32)
  scorers = _SCORERS.setdefault(model, {})
  scorer = scorers.get(num_items)
  if scorer is None:
    # Weakly: the entry must not keep its own key (the model) alive.
    model_ref = weakref.ref(model)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def scorer(chunk):  # [n] user rows -> [n, items] logits.
      users = tf.repeat(chunk, num_items)
      items = tf.tile(tf.range(num_items, dtype=tf.int64),
                      tf.size(chunk)[None])
      return tf.reshape(model_ref()({'user': users, 'item': items},
                                    training=False), [-1, num_items])
    scorers[num_items] = scorer
  step = max(1, SCORE_BATCH // num_items)
  return np.concatenate([scorer(rows[i:i + step]).numpy()
                         for i in range(0, len(rows), step)])


# model -> {num_items: its traced scorer}, dropped with the model.
_SCORERS = weakref.WeakKeyDictionary()
