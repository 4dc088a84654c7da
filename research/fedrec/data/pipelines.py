"""Per-client `tf.data` pipelines, applied inside the TFF runtime.

The building blocks of the functions that map a raw client dataset from the
client store (one element per rating: user, item, rating, is_query) to the
batches a model consumes: the seeded shuffle and example cap, negative
sampling, and epochs of fresh negatives. Each method's own preprocessing
(algorithms/client_data.py) is applied with `ClientData.preprocess`, so it
becomes part of the client store's dataset computation and runs in the TFF
runtime for each sampled client id.

Shuffles use a fixed seed with `reshuffle_each_iteration=False`: every pass over
a client's data sees the same order, so splitting a client's batches by
position (Federated Reconstruction's `split_dataset`) never makes the parts
overlap, and runs are reproducible bit for bit.
"""

import dataclasses
from typing import Optional

import tensorflow as tf

# Larger than any MovieLens user's history (ML-20M's most active user has
# 9,254 ratings), so the shuffle is a full permutation of a client's data.
SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int = 16
  max_examples_per_user: Optional[int] = None
  local_epochs: int = 1
  seed: int = 0
  num_negatives: int = 4  # Implicit feedback: sampled negatives per positive.
  # Implicit feedback, `--negative_protocol=published`: training negatives
  # also avoid the user's held-out (validation and test) items, as PFedRec's
  # official code samples them. It leaks: the held-out item is never trained
  # down while its evaluation negatives are. The client's dataset then carries
  # its held-out items (`is_query` = 1) for this exclusion only.
  exclude_heldout: bool = False
  # Implicit feedback: items that do not exist yet while the model trains
  # (the item_cold_start split's cold items, sorted), never drawn as training
  # negatives: a new item is neither a positive nor a negative of anyone
  # before it is added. Derived from the split (`training/experiment.py`
  # `fitted_to_split`), not a flag.
  unavailable_items: tuple[int, ...] = ()

  def __post_init__(self):
    if self.num_negatives < 1:
      raise ValueError('--num_negatives must be >= 1.')
    if self.batch_size < 1:
      raise ValueError('--batch_size must be >= 1.')
    if self.local_epochs < 1:
      raise ValueError('--client_epochs must be >= 1.')
    if self.max_examples_per_user is not None and self.max_examples_per_user < 1:
      raise ValueError('--max_examples_per_user must be >= 1.')


def shuffled(dataset: tf.data.Dataset, config: PipelineConfig):
  """A client's rows in its fixed seeded order, capped at the example cap."""
  dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=config.seed,
                            reshuffle_each_iteration=False)
  if config.max_examples_per_user is not None:
    dataset = dataset.take(config.max_examples_per_user)
  return dataset


# Implicit feedback. A client's dataset is its training positives; each local
# epoch pairs them with `num_negatives` negatives per positive, drawn uniformly
# (with replacement, as in NCF) from the items the client never interacted with
# in training (with `exclude_heldout`, nor in its held-out rows: the dataset's
# rows with `is_query` = 1, which are never positives; nor the
# `unavailable_items`), then shuffled. The
# randomness is stateless, keyed by (seed, user, round, epoch): fresh negatives
# every epoch and every round, the same ones for the same flags, whatever the
# order in which the runtime builds datasets.


def sample_negatives(positives: tf.Tensor, count: tf.Tensor, num_items: int,
                     seed: tf.Tensor) -> tf.Tensor:
  """`count` items drawn uniformly from [0, num_items) minus `positives`.

  Args:
    positives: Sorted, distinct int64 item ids to exclude.
    count: How many to draw (with replacement).
    num_items: Size of the item vocabulary.
    seed: A stateless seed, shape [2].

  Returns:
    int64 [count]; empty if every item is a positive.
  """
  excluded = tf.size(positives, out_type=tf.int64)
  room = num_items - excluded
  count = tf.where(room > 0, tf.cast(count, tf.int64), tf.constant(0, tf.int64))
  draws = tf.random.stateless_uniform(
      [count], seed, minval=0, maxval=tf.maximum(room, 1), dtype=tf.int64)
  # The r-th non-excluded item is r + #{j : positives[j] - j <= r}.
  shifted = positives - tf.range(excluded, dtype=tf.int64)
  return draws + tf.searchsorted(shifted, draws, side='right',
                                 out_type=tf.int64)


def unavailable_items(config: PipelineConfig) -> tf.Tensor:
  """int64 [n]: `config.unavailable_items`, never training negatives."""
  return tf.constant(config.unavailable_items, tf.int64, shape=[len(
      config.unavailable_items)])


def _client_seed(config: PipelineConfig, user, round_num, epoch):
  seed = tf.constant([config.seed, 0x5eed], tf.int64)
  for value in (user, round_num, epoch):
    seed = tf.random.experimental.stateless_fold_in(seed,
                                                    tf.cast(value, tf.int64))
  return seed


def client_positives(config: PipelineConfig, items: tf.Tensor,
                     user: tf.Tensor) -> tf.Tensor:
  """A client's training items in its fixed seeded order, capped."""
  order = tf.argsort(tf.random.stateless_uniform(
      tf.shape(items), _client_seed(config, user, -1, -1)))
  positives = tf.gather(items, order)
  if config.max_examples_per_user is not None:
    positives = positives[:config.max_examples_per_user]
  return positives


def epoch_negatives(config: PipelineConfig, num_items: int,
                    positives: tf.Tensor, excluded: tf.Tensor, user, round_num,
                    epoch) -> tuple[tf.Tensor, tf.Tensor]:
  """(negatives, shuffle seed) of one local epoch of one client.

  `num_negatives` per positive from the items not in `excluded` (sorted,
  distinct), keyed by (seed, user, round, epoch).
  """
  seed = _client_seed(config, user, round_num, epoch)
  negatives = sample_negatives(
      excluded, tf.size(positives) * config.num_negatives, num_items, seed)
  return negatives, tf.random.experimental.stateless_fold_in(seed, 1)


def each_epoch(config: PipelineConfig, num_items: int, num_epochs: int,
            make_epoch):
  """Preprocessing that calls `make_epoch` for every local epoch.

  `make_epoch(rows, epoch, positives, negatives, seed)` gets the client's rows
  (its whole dataset as one batch), its training positives (in a fixed seeded
  order, capped at `max_examples_per_user`), `num_negatives` negatives per
  positive, and a seed for shuffling; it returns that epoch's batches.
  """
  def all_epochs(rows):
    excluded = tf.sort(tf.unique(tf.concat(
        [rows['item'], unavailable_items(config)], axis=0)).y)
    rows = _training_rows(rows)
    user, round_num = rows['user'][0], rows['round'][0]
    positives = client_positives(config, rows['item'], user)

    def epoch_dataset(epoch):
      negatives, seed = epoch_negatives(config, num_items, positives, excluded,
                                        user, round_num, epoch)
      return make_epoch(rows, epoch, positives, negatives, seed)

    return tf.data.Dataset.range(num_epochs).flat_map(epoch_dataset)

  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    rows = _whole(dataset)
    return tf.data.Dataset.from_tensors(rows).filter(
        lambda r: tf.reduce_any(tf.equal(r['is_query'], 0))).flat_map(
            all_epochs)
  return preprocess


def _training_rows(rows):
  """The rows a client trains on (`is_query` = 0; held-out rows dropped)."""
  keep = tf.equal(rows['is_query'], 0)
  return {key: tf.boolean_mask(value, keep) for key, value in rows.items()}


def _whole(dataset: tf.data.Dataset):
  """The client's whole dataset as one structure of 1-D tensors."""
  initial = tf.nest.map_structure(
      lambda spec: tf.zeros([0], spec.dtype), dataset.element_spec)
  return dataset.batch(SHUFFLE_BUFFER).reduce(
      initial, lambda rows, batch: tf.nest.map_structure(
          lambda a, b: tf.concat([a, b], axis=0), rows, batch))


def labelled(positives, negatives, seed):
  """Positives (label 1) and negatives (0), shuffled together."""
  items = tf.concat([positives, negatives], axis=0)
  labels = tf.concat([tf.ones_like(positives, tf.float32),
                      tf.zeros_like(negatives, tf.float32)], axis=0)
  order = tf.argsort(tf.random.stateless_uniform(tf.shape(items), seed))
  return tf.gather(items, order), tf.gather(labels, order)
