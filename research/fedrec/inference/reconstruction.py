"""Federated Reconstruction's local step, vectorized over users, without TFF.

Given the trained global (item-side) MF weights, a user's embedding and bias
are reconstructed from that user's own ratings exactly as a FedRecon client
does in federated evaluation (`fed_recon.create_eval_split_fn`): the ratings in
the pipeline's seeded shuffle order, capped at `max_examples`, cut into batches
of `batch_size`, repeated `epochs` times and capped at `steps_max` steps; each
batch takes one optimizer step on the regularized squared error with the item
side frozen, starting from the model's initial user vector.

Here all users take their steps side by side in NumPy (float32, like the TF
computation), so reconstructing every user of a corpus takes a second or two
instead of one TFF client computation per user, and a new user's embedding
(cold start) is computed without TensorFlow Federated. The optimizers mirror
`tff.learning.optimizers` update rules; a test checks each against TFF.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from research.fedrec.data import pipelines

# A client holding more ratings than the pipeline's shuffle buffer would be
# shuffled only partially by tf.data, which `shuffle_orders` does not model.
SHUFFLE_BUFFER = pipelines.SHUFFLE_BUFFER
OPTIMIZERS = ('sgd', 'sgdm', 'adam', 'adagrad', 'yogi')


def run_steps(config) -> dict:
  """The reconstruction steps of a run's clients (both feedbacks' settings)."""
  return dict(epochs=config.recon.evaluation_epochs,
              steps_max=config.recon.recon_steps_max,
              batch_size=config.pipeline.batch_size,
              optimizer=config.optimizers.reconstruction,
              learning_rate=config.optimizers.reconstruction_learning_rate)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How a client reconstructs its user vector (from the run's settings)."""

  epochs: int = 1
  steps_max: Optional[int] = None
  batch_size: int = 16
  max_examples: Optional[int] = None
  shuffle_seed: int = 0
  optimizer: str = 'sgd'
  learning_rate: float = 0.1
  l2: float = 0.0

  @classmethod
  def of_run(cls, config) -> 'Settings':
    """How the clients of a run (an `ExperimentConfig`) reconstruct a user."""
    return cls(max_examples=config.pipeline.max_examples_per_user,
               shuffle_seed=config.pipeline.seed, l2=config.model.l2,
               **run_steps(config))

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f'Unknown reconstruction optimizer {self.optimizer!r}.')
    if self.epochs < 1 or self.batch_size < 1:
      raise ValueError('Reconstruction epochs and batch size must be >= 1.')
    if self.steps_max is not None and self.steps_max < 1:
      raise ValueError('Reconstruction steps_max must be >= 1 or unset.')


@dataclasses.dataclass(frozen=True)
class ItemModel:
  """The global part of a trained MF model, as NumPy arrays."""

  item_embeddings: np.ndarray  # [num_items, dim] float32
  item_bias: Optional[np.ndarray]  # [num_items] float32, None without biases
  global_bias: float
  initial_user_vector: np.ndarray  # [dim]: the model's user initializer value

  @property
  def num_items(self) -> int:
    return self.item_embeddings.shape[0]

  @property
  def use_biases(self) -> bool:
    return self.item_bias is not None

  def predict(self, user_vectors: np.ndarray, user_bias: np.ndarray,
              items: np.ndarray) -> np.ndarray:
    """Ratings of users (rows of `user_vectors`) for items, elementwise."""
    prediction = np.sum(user_vectors * self.item_embeddings[items], axis=-1,
                        dtype=np.float32)
    if self.use_biases:
      prediction = (prediction + user_bias + self.item_bias[items] +
                    np.float32(self.global_bias))
    return prediction.astype(np.float32)

  def score_all(self, user_vector: np.ndarray,
                user_bias: float) -> np.ndarray:
    """Predicted ratings of one user for every item: [num_items]."""
    items = np.arange(self.num_items)
    return self.predict(np.broadcast_to(user_vector, (self.num_items,
                                                      user_vector.size)),
                        np.full(self.num_items, user_bias, np.float32), items)


_ORDERS: dict[tuple[int, int], np.ndarray] = {}


def shuffle_orders(sizes: Sequence[int], seed: int) -> dict[int, np.ndarray]:
  """The order of `tf.data.Dataset.shuffle(SHUFFLE_BUFFER, seed)` per size n.

  As traced inside a TFF computation (a graph without a graph-level seed), so
  a reconstruction sees a client's ratings in the order the federated
  evaluation does. The order depends on n and the seed only; all missing sizes
  are computed in one TensorFlow session and cached.
  """
  wanted = sorted({int(n) for n in sizes})
  missing = [n for n in wanted if (n, seed) not in _ORDERS]
  if missing:
    if missing[-1] > SHUFFLE_BUFFER:
      raise ValueError(f'A client with {missing[-1]} ratings exceeds the '
                       f'shuffle buffer ({SHUFFLE_BUFFER}).')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.Graph().as_default():
      elements = {
          n: tf.data.Dataset.range(n).shuffle(
              SHUFFLE_BUFFER, seed=seed,
              reshuffle_each_iteration=False).batch(n).get_single_element()
          for n in missing if n
      }
      with tf.compat.v1.Session() as session:
        orders = session.run(elements)
    orders[0] = np.zeros(0, np.int64)
    for n in missing:
      orders[n].setflags(write=False)
      _ORDERS[(n, seed)] = orders[n]
  return {n: _ORDERS[(n, seed)] for n in wanted}


class Optimizer:
  """`tff.learning.optimizers` update rules on stacked per-user weights.

  Every active user is at the same step count (users start together and stop
  for good when their batches run out), so the scalar step of Adam / Yogi is
  shared; finished users are frozen by the caller.
  """

  def __init__(self, name: str, learning_rate: float, shapes):
    self._name = name
    self._lr = np.float32(learning_rate)
    self._step = 0
    zeros = [np.zeros(s, np.float32) for s in shapes]
    self._acc = [z.copy() for z in zeros]
    initial = {'adagrad': 0.1, 'yogi': 1e-6}.get(name, 0.0)
    self._pre = [z + np.float32(initial) for z in zeros]

  def step(self, weights, gradients, active):
    """Updates `weights` in place for the rows where `active` is True."""
    self._step += 1
    name, lr = self._name, self._lr
    if name in ('adam', 'yogi'):
      beta_1, beta_2 = np.float32(0.9), np.float32(0.999)
      epsilon = np.float32(1e-7 if name == 'adam' else 1e-3)
      step = np.float32(self._step)
      lr = np.float32(lr * np.sqrt(np.float32(1.0) - beta_2**step) /
                      (np.float32(1.0) - beta_1**step))
    for k, (w, g) in enumerate(zip(weights, gradients)):
      a, p = self._acc[k], self._pre[k]
      if name == 'sgd':
        update = lr * g
      elif name == 'sgdm':
        a = np.float32(0.9) * a + g
        update = lr * a
      elif name == 'adagrad':
        p = p + np.square(g)
        update = lr * g / np.sqrt(p + np.float32(1e-7))
      elif name == 'adam':
        a = a + (g - a) * (np.float32(1.0) - beta_1)
        p = p + (np.square(g) - p) * (np.float32(1.0) - beta_2)
        update = lr * a / (np.sqrt(p) + epsilon)
      else:  # yogi
        a = a + (g - a) * (np.float32(1.0) - beta_1)
        g2 = np.square(g)
        p = p + (np.float32(1.0) - beta_2) * np.sign(g2 - p) * g2
        update = lr * a / (np.sqrt(p) + epsilon)
      self._acc[k], self._pre[k] = a, p
      w[active] -= update[active].astype(np.float32)


def reconstruct(model: ItemModel, items: Sequence[np.ndarray],
                ratings: Sequence[np.ndarray], settings: Settings,
                initial: Optional[tuple[np.ndarray, np.ndarray]] = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """Reconstructs each user's (vector, bias) from that user's ratings.

  From `initial` instead of the model's initial user vector and a zero bias,
  the same steps fine-tune given user parameters (FedAvg plus local
  fine-tuning: each user's row of a global user table).

  Args:
    model: The trained global weights.
    items: Per user, the item indices of the ratings the user's client holds,
      in the client's storage order (before the pipeline's shuffle).
    ratings: Per user, the matching ratings.
    settings: The run's reconstruction settings.
    initial: Optional `(vectors [U, dim], biases [U])` to start from.

  Returns:
    `(vectors [U, dim], biases [U])`; a user without ratings keeps the initial
    vector and bias.
  """
  num_users = len(items)
  batch = settings.batch_size
  if initial is None:
    vectors = np.tile(model.initial_user_vector.astype(np.float32),
                      (num_users, 1))
    biases = np.zeros(num_users, np.float32)
  else:
    vectors = np.array(initial[0], np.float32).reshape(num_users, -1)
    biases = np.array(initial[1], np.float32).reshape(num_users)
  # Per user: the shuffled, capped ratings and their number of steps.
  ordered_items, ordered_ratings, steps = [], [], np.zeros(num_users, np.int64)
  orders = shuffle_orders([len(x) for x in items], settings.shuffle_seed)
  for u, (user_items, user_ratings) in enumerate(zip(items, ratings)):
    order = orders[len(user_items)]
    if settings.max_examples is not None:
      order = order[:settings.max_examples]
    ordered_items.append(np.asarray(user_items, np.int64)[order])
    ordered_ratings.append(np.asarray(user_ratings, np.float32)[order])
    steps[u] = -(-len(order) // batch) * settings.epochs
  if settings.steps_max is not None:
    steps = np.minimum(steps, settings.steps_max)
  # Padded [U, max_len] tables; a step's batch is a column window of them.
  lengths = np.array([len(x) for x in ordered_items], np.int64)
  width = int(lengths.max(initial=0))
  width = -(-width // batch) * batch
  item_table = np.zeros((num_users, width), np.int64)
  rating_table = np.zeros((num_users, width), np.float32)
  for u in range(num_users):
    item_table[u, :lengths[u]] = ordered_items[u]
    rating_table[u, :lengths[u]] = ordered_ratings[u]
  batches_per_epoch = np.maximum(-(-lengths // batch), 1)
  optimizer = Optimizer(settings.optimizer, settings.learning_rate,
                         [vectors.shape, biases.shape])
  l2 = np.float32(settings.l2)
  columns = np.arange(batch)
  for t in range(int(steps.max(initial=0))):
    active = steps > t
    users = np.flatnonzero(active)
    start = (t % batches_per_epoch[users]) * batch
    position = start[:, None] + columns[None, :]  # [A, B]
    mask = position < lengths[users, None]
    count = mask.sum(axis=1).astype(np.float32)
    batch_items = item_table[users[:, None], position]
    batch_ratings = rating_table[users[:, None], position]
    q = model.item_embeddings[batch_items]  # [A, B, dim]
    u_vec, u_bias = vectors[users], biases[users]
    prediction = np.einsum('abd,ad->ab', q, u_vec, dtype=np.float32)
    if model.use_biases:
      prediction = (prediction + u_bias[:, None] +
                    model.item_bias[batch_items] +
                    np.float32(model.global_bias))
    # d/dp of mean((r - p)^2) over the batch, zero on padding.
    residual = np.where(mask, prediction - batch_ratings, 0).astype(np.float32)
    scale = (np.float32(2.0) / count)[:, None]
    grad_vec = np.einsum('ab,abd->ad', residual * scale, q, dtype=np.float32)
    grad_vec += np.float32(2.0) * l2 * u_vec
    grad_vectors = np.zeros_like(vectors)
    grad_vectors[users] = grad_vec
    grad_biases = np.zeros_like(biases)  # No user bias without biases.
    if model.use_biases:
      grad_biases[users] = (
          np.sum(residual * scale, axis=1, dtype=np.float32) +
          np.float32(2.0) * l2 * u_bias)
    optimizer.step([vectors, biases], [grad_vectors, grad_biases], active)
  return vectors, biases
