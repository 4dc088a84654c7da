"""The centralized baseline: the same Keras MF trained with `model.fit`.

Training pools every rating a federated run may learn from: the training split,
plus, under the user-disjoint split, the support ratings of evaluated users
(a central server would hold them too; FedRecon uses them for reconstruction).
Evaluation scores the same query ratings with the same metrics as federated
evaluation, so every report shows the cost of federation side by side. The
number of epochs is chosen on the validation split (early stopping on
validation RMSE, or the ranking metric under implicit feedback; the best
epoch's weights kept), so the baseline is not handicapped by over- or
under-fitting.
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import optimizers as optimizers_lib
from research.fedrec.data import ratings as ratings_lib
from research.fedrec.data import splits as splits_lib
from research.fedrec.evaluation import keras_metrics
from research.fedrec.models import autorec
from research.fedrec.models import builder


@dataclasses.dataclass(frozen=True)
class CentralizedConfig:
  epochs: int = 20  # At most; early stopping on validation RMSE.
  patience: int = 2
  batch_size: int = 16
  optimizer: str = 'adam'
  learning_rate: float = 0.001
  seed: int = 0

  def __post_init__(self):
    if self.epochs < 1:
      raise ValueError('--centralized_epochs must be >= 1.')
    if self.patience < 1:
      raise ValueError('Early-stopping patience must be >= 1.')
    if self.batch_size < 1:
      raise ValueError('--centralized_batch_size must be >= 1.')
    if self.optimizer not in KERAS_OPTIMIZERS:
      raise ValueError(f'--centralized_optimizer={self.optimizer} is not one '
                       f'of {", ".join(KERAS_OPTIMIZERS)}.')


# Keras 2.14 has no Yogi, so the baseline offers the others only.
KERAS_OPTIMIZERS = {
    'sgd': lambda lr: tf.keras.optimizers.SGD(lr),
    'sgdm': lambda lr: tf.keras.optimizers.SGD(
        lr, momentum=optimizers_lib.MOMENTUM),
    'adam': lambda lr: tf.keras.optimizers.Adam(lr),
    'adagrad': lambda lr: tf.keras.optimizers.Adagrad(lr),
}


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A trained baseline and the epoch (1-based) whose weights it holds."""

  model: tf.keras.Model
  epoch: int


def _inputs(table: ratings_lib.Ratings):
  return collections.OrderedDict(user=table.users, item=table.items)


def training_ratings(split: splits_lib.Split) -> ratings_lib.Ratings:
  """Every rating the baseline may learn from (see module docstring)."""
  parts = [split.train]
  for partition in (split.val, split.test):
    if partition.support is not split.train:
      parts.append(partition.support)
  return parts[0] if len(parts) == 1 else ratings_lib.concatenate(parts)


def compile_model(model_config: builder.ModelConfig, num_items: int,
                  num_users: int,
                  config: CentralizedConfig) -> tf.keras.Model:
  """The classic-layout MF, compiled as the baseline trains it."""
  model = builder.create_keras_model(model_config, num_items,
                                     num_users).model
  model.compile(
      optimizer=KERAS_OPTIMIZERS[config.optimizer](config.learning_rate),
      loss=tf.keras.losses.MeanSquaredError(),
      metrics=keras_metrics.create_keras_metrics())
  return model


def train(split: splits_lib.Split, num_users: int, num_items: int,
          model_config: builder.ModelConfig, config: CentralizedConfig,
          callbacks=None) -> Fitted:
  """Fits the classic MF on the pooled ratings.

  With a validation split, the model keeps the weights of the epoch with
  the lowest validation RMSE, also when training runs all its epochs
  (Keras 2's EarlyStopping restores them only when it stops early).
  """
  tf.keras.utils.set_random_seed(config.seed)
  table = training_ratings(split)
  model = compile_model(model_config, num_items, num_users, config)
  dataset = tf.data.Dataset.from_tensor_slices(
      (_inputs(table), table.ratings)).shuffle(
          len(table), seed=config.seed, reshuffle_each_iteration=True).batch(
              config.batch_size)
  callbacks = list(callbacks or [])
  validation, stopping = None, None
  if len(split.val.query):  # pylint: disable=g-explicit-length-test
    validation = (_inputs(split.val.query), split.val.query.ratings)
    stopping = tf.keras.callbacks.EarlyStopping(
        monitor='val_rmse', patience=config.patience,
        restore_best_weights=True)
    callbacks.append(stopping)
  history = model.fit(dataset, epochs=config.epochs, verbose=0,
                      callbacks=callbacks, validation_data=validation,
                      validation_batch_size=8192)
  if stopping is None or stopping.best_weights is None:
    return Fitted(model, len(history.epoch))
  if not stopping.stopped_epoch:  # Ran every epoch: not restored by Keras.
    model.set_weights(stopping.best_weights)
  return Fitted(model, stopping.best_epoch + 1)


def sample_negatives(users: np.ndarray, num_items: int, count: int,
                     known_keys: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """`count` negatives per entry of `users`, none in the user's known items.

  Args:
    users: One entry per positive.
    num_items: Size of the item vocabulary.
    count: Negatives per positive (drawn with replacement, as in NCF).
    known_keys: Sorted `user * num_items + item` of every known interaction.
    rng: The generator.

  Returns:
    `(users, items)` of the negatives.
  """
  users = np.repeat(users, count)
  items = rng.integers(0, num_items, users.size)
  bad = np.flatnonzero(np.isin(users * num_items + items, known_keys))
  while bad.size:  # Redraw collisions (rare unless a user knows most items).
    items[bad] = rng.integers(0, num_items, bad.size)
    bad = bad[np.isin(users[bad] * num_items + items[bad], known_keys)]
  return users, items


def excluded_keys(split: splits_lib.Split, num_items: int,
                  exclude_heldout: bool = False,
                  unavailable_items=()) -> np.ndarray:
  """Sorted `user * num_items + item` of the pairs never drawn as negatives.

  The training interactions; with `exclude_heldout` (the published PFedRec
  protocol) the validation and test ones as well; every training user's
  pairs with the `unavailable_items` (item_cold_start's cold items).
  """
  parts = [training_ratings(split)]
  if exclude_heldout:
    parts += [split.val.query, split.test.query]
  keys = [p.users.astype(np.int64) * num_items + p.items for p in parts]
  if len(unavailable_items):  # pylint: disable=g-explicit-length-test
    users = np.unique(parts[0].users).astype(np.int64)
    keys.append((users[:, None] * num_items + np.asarray(
        unavailable_items, np.int64)[None, :]).ravel())
  return np.unique(np.concatenate(keys))


def train_implicit(split: splits_lib.Split, num_users: int, num_items: int,
                   model_config: builder.ModelConfig, config: CentralizedConfig,
                   num_negatives: int, validate,
                   exclude_heldout: bool = False,
                   unavailable_items=()) -> Fitted:
  """Fits an implicit-feedback model on the pooled interactions.

  Every epoch draws fresh negatives (`num_negatives` per positive, from items
  the user has no training interaction with; with `exclude_heldout`, the
  published PFedRec protocol, nor a validation or test one; never one of
  the `unavailable_items`). Early stopping
  keeps the weights of the epoch with the best `validate(model)` (higher is
  better; None when there is no validation split, then all `epochs` run).
  """
  tf.keras.utils.set_random_seed(config.seed)
  rng = np.random.default_rng([config.seed, 17])
  table = training_ratings(split)
  keys = excluded_keys(split, num_items, exclude_heldout, unavailable_items)
  model = builder.create_keras_model(model_config, num_items, num_users).model
  model.compile(
      optimizer=KERAS_OPTIMIZERS[config.optimizer](config.learning_rate),
      loss=builder.create_loss(model_config, True, False))
  user_vectors = builder.user_vector_inputs(model_config)
  if user_vectors:  # Each user's input vector: the same in every epoch.
    rows = np.unique(table.users)
    inputs = np.zeros((num_users, num_items), np.float32)
    inputs[table.users, table.items] = 1.0
    inputs = inputs[rows]
  best, best_weights, best_epoch, waited = -np.inf, None, config.epochs, 0
  for epoch in range(1, config.epochs + 1):
    neg_users, neg_items = sample_negatives(table.users, num_items,
                                            num_negatives, keys, rng)
    if user_vectors:
      labels = np.full((num_users, num_items), autorec.MASKED, np.float32)
      labels[neg_users, neg_items] = 0.0
      labels[table.users, table.items] = 1.0
      model.fit(inputs, labels[rows], batch_size=config.batch_size,
                epochs=1, verbose=0, shuffle=True)
    else:
      users = np.concatenate([table.users, neg_users])
      items = np.concatenate([table.items, neg_items])
      labels = np.concatenate([np.ones(len(table), np.float32),
                               np.zeros(neg_users.size, np.float32)])
      order = rng.permutation(users.size)
      model.fit(collections.OrderedDict(user=users[order], item=items[order]),
                labels[order], batch_size=config.batch_size, epochs=1,
                verbose=0, shuffle=False)
    score = validate(model)
    if score is None:
      continue
    if score > best:
      best, best_weights, best_epoch, waited = (score, model.get_weights(),
                                                epoch, 0)
    else:
      waited += 1
      if waited >= config.patience:
        break
  if best_weights is not None:
    model.set_weights(best_weights)
  return Fitted(model, best_epoch)
