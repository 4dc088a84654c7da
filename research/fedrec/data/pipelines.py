"""Per-client `tf.data` pipelines, applied inside the TFF runtime.

Each function maps a raw client dataset from the client store (one element per
rating: user, item, rating, is_query) to the batches a model consumes. They are
applied with `ClientData.preprocess`, so they become part of the client store's
dataset computation and run in the TFF runtime for each sampled client id.

Shuffles use a fixed seed with `reshuffle_each_iteration=False`: every pass over
a client's data sees the same order, so splitting a client's batches by
position (Federated Reconstruction's `split_dataset`) never makes the parts
overlap, and runs are reproducible bit for bit.
"""

import collections
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

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError('--batch_size must be >= 1.')
    if self.local_epochs < 1:
      raise ValueError('--client_epochs must be >= 1.')
    if self.max_examples_per_user is not None and self.max_examples_per_user < 1:
      raise ValueError('--max_examples_per_user must be >= 1.')


def _shuffled(dataset: tf.data.Dataset, config: PipelineConfig):
  dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=config.seed,
                            reshuffle_each_iteration=False)
  if config.max_examples_per_user is not None:
    dataset = dataset.take(config.max_examples_per_user)
  return dataset


def create_recon_train_fn(config: PipelineConfig):
  """Raw ratings -> FedRecon training batches `(x=item, y=rating)`.

  Epochs are applied by FedRecon's dataset split function, not here.
  """
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return _shuffled(dataset, config).batch(config.batch_size).map(
        lambda e: collections.OrderedDict(x=e['item'], y=e['rating']))
  return preprocess


def create_recon_eval_fn(config: PipelineConfig):
  """Raw ratings -> evaluation batches `(x={item, is_query}, y=rating)`.

  `max_examples_per_user` is applied to the support ratings by the evaluation
  split function (`fed_recon.create_eval_split_fn`), not here.
  """
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.batch(config.batch_size).map(
        lambda e: collections.OrderedDict(
            x=collections.OrderedDict(item=e['item'], is_query=e['is_query']),
            y=e['rating']))
  return preprocess


def create_fedavg_train_fn(config: PipelineConfig):
  """Raw ratings -> FedAvg batches `(x={item, user}, y=rating)`, repeated."""
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    dataset = _shuffled(dataset, config).repeat(config.local_epochs)
    return dataset.batch(config.batch_size).map(
        lambda e: collections.OrderedDict(
            x=collections.OrderedDict(item=e['item'], user=e['user']),
            y=e['rating']))
  return preprocess


def split_support_query(dataset: tf.data.Dataset, config: PipelineConfig):
  """Splits evaluation batches into (support, query) rating batches.

  Both keep the input order; support is shuffled and capped as in training.
  Returns datasets of `(x=item, y=rating)` batches.
  """
  flat = dataset.unbatch()

  def part(is_query: int) -> tf.data.Dataset:
    return flat.filter(lambda e: tf.equal(e['x']['is_query'], is_query)).map(
        lambda e: collections.OrderedDict(x=e['x']['item'], y=e['y']))

  support = _shuffled(part(0), config).batch(config.batch_size)
  query = part(1).batch(config.batch_size)
  return support, query
