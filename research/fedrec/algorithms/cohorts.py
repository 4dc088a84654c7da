"""Cohort execution: many users in one TFF client computation.

TFF's runtime runs every client as its own invocation at a fixed cost of tens
of milliseconds, while one user's arithmetic takes well under a millisecond.
Under `--execution=cohort` a round's sampled users are packed into a few
cohorts, each one TFF client whose computation trains all of its users side by
side and returns their weighted sum of updates, so that the round's update is
the one the per-client process computes (to float rounding; tested).

This module holds the host-side part, common to the methods that run in
cohorts:

* `CohortPacker` reads the training ratings of the client store once, lays each
  user's ratings out in exactly the batch order of the per-client pipeline
  (`data/pipelines.py`: a seeded shuffle whose permutation depends only on the
  user's number of ratings, then `max_examples_per_user`), and packs the users
  of a round into cohorts of dense, padded tensors: `counts` [K], `items`
  [K, L], `ratings` [K, L], with L a multiple of the batch size. Users are
  sorted by size, so that a cohort pads little, and a cohort holds at most
  `cohort_size` users and about `COHORT_RATINGS` padded ratings (so heavy
  users come in small cohorts). A cohort is never empty.
* `CohortProcess` wraps a learning process whose clients are cohorts so that
  its `next` takes the round's client ids, as the per-client process's does:
  the training loop, checkpoints and schedules do not know the difference.

The client computations themselves are per method and model (e.g.
`fed_recon_cohort.py`).
"""

import collections
import sqlite3
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.data import pipelines

# Padded ratings per cohort at most (unless a single user holds more): bounds a
# cohort's tensors, and so the memory of the round, whatever the user sizes.
COHORT_RATINGS = 1 << 16
DEFAULT_COHORT_SIZE = 128  # Users per cohort at most (--cohort_size=0).

ELEMENT_SPEC = collections.OrderedDict(
    counts=tf.TensorSpec([None], tf.int32),
    items=tf.TensorSpec([None, None], tf.int32),
    ratings=tf.TensorSpec([None, None], tf.float32))


def shuffle_orders(counts: Sequence[int], seed: int) -> dict[int, np.ndarray]:
  """The per-client pipeline's permutation of a user's n ratings, by n.

  `pipelines.shuffled` shuffles each client's rows with a fixed op seed and a
  buffer larger than any client, in the TFF runtime's own graph (no global
  seed); its permutation depends only on n. It is computed here in a fresh
  graph, as the runtime does, so a global seed set by the caller cannot change
  it.
  """
  distinct = sorted({int(n) for n in counts if n > 0})
  graph = tf.Graph()
  with graph.as_default():
    fetches = [
        tf.data.Dataset.range(n).shuffle(
            pipelines.SHUFFLE_BUFFER, seed=seed,
            reshuffle_each_iteration=False).batch(n).get_single_element()
        for n in distinct]
  with tf.compat.v1.Session(graph=graph) as session:
    orders = session.run(fetches) if fetches else []
  return dict(zip(distinct, orders))


class CohortPacker:
  """The training ratings of a client store, packed into cohorts per round."""

  def __init__(self, store_path: str, pipeline: pipelines.PipelineConfig,
               cohort_size: int = 0):
    """Reads the store's training ratings once.

    Args:
      store_path: The client store (data/client_store.py).
      pipeline: Batch size, `max_examples_per_user` and the shuffle seed.
      cohort_size: Users per cohort at most (0: `DEFAULT_COHORT_SIZE`).

    Raises:
      ValueError: a user rated an item twice (cohorts train one copy of an
        item's row per rating; one line).
    """
    if cohort_size < 0:
      raise ValueError(f'--cohort_size={cohort_size}: expected >= 0 (0: '
                       'automatic).')
    self._batch_size = pipeline.batch_size
    self._cohort_size = cohort_size or DEFAULT_COHORT_SIZE
    with sqlite3.connect(store_path) as con:
      rows = con.execute(
          "SELECT user, item, rating FROM ratings WHERE split_name = 'train' "
          'ORDER BY rowid').fetchall()
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)
    users = table[:, 0].astype(np.int64)
    items = table[:, 1].astype(np.int64)
    pairs = users * (int(items.max(initial=0)) + 1) + items
    if len(np.unique(pairs)) != len(pairs):
      raise ValueError('--execution=cohort: a user rated an item more than '
                       'once in the training split; use --execution='
                       'per_client for this corpus.')
    # The store holds each user's rows contiguously (sorted by user).
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    lengths = np.diff(np.r_[starts, len(users)])
    orders = shuffle_orders(lengths, pipeline.seed)
    cap = pipeline.max_examples_per_user or np.iinfo(np.int64).max
    self._offsets, self._counts = {}, {}
    laid_items, laid_ratings, offset = [], [], 0
    for start, length in zip(starts, lengths):
      order = orders[int(length)][:cap] + start
      user = str(users[start])
      self._offsets[user], self._counts[user] = offset, len(order)
      laid_items.append(items[order])
      laid_ratings.append(table[order, 2])
      offset += len(order)
    self._items = np.concatenate(laid_items or [[]]).astype(np.int32)
    self._ratings = np.concatenate(laid_ratings or [[]]).astype(np.float32)

  def examples(self, client_id: str) -> int:
    """The ratings a user trains on per epoch (after the cap)."""
    return self._counts[client_id]

  def cohorts(self, client_ids: Sequence[str]) -> list[
      collections.OrderedDict]:
    """The users `client_ids` packed into cohorts (see the module doc)."""
    by_size = sorted(client_ids, key=lambda c: (-self._counts[c], int(c)))
    batch = self._batch_size
    cohorts, members = [], []

    def padded_length(users):
      longest = max(self._counts[c] for c in users)
      return max(1, -(-longest // batch)) * batch

    for user in by_size:
      if members and (
          len(members) >= self._cohort_size or
          (len(members) + 1) * padded_length(members) > COHORT_RATINGS):
        cohorts.append(self._pack(members, padded_length(members)))
        members = []
      members.append(user)
    if members:
      cohorts.append(self._pack(members, padded_length(members)))
    return cohorts

  def _pack(self, users, length: int) -> collections.OrderedDict:
    counts = np.array([self._counts[c] for c in users], np.int32)
    offsets = np.array([self._offsets[c] for c in users], np.int64)
    positions = np.arange(length)
    inside = positions[None, :] < counts[:, None]
    # Padded positions read index 0 and are then zeroed.
    index = np.where(inside, offsets[:, None] + positions[None, :], 0)
    return collections.OrderedDict(
        counts=counts,
        items=np.where(inside, self._items[index], 0).astype(np.int32),
        ratings=np.where(inside, self._ratings[index], 0).astype(np.float32))


class CohortProcess:
  """A learning process over cohorts whose `next` takes client ids.

  Everything but `next` is the wrapped process's (`initialize`,
  `get_model_weights`, `get_hparams`, ...), so its state, checkpoints and
  hyperparameters are exactly those of the process it wraps.
  """

  def __init__(self, process, packer: CohortPacker):
    self._process = process
    self._packer = packer
    self.last_round_cohorts = 0

  def next(self, state, client_ids: Sequence[str]):
    cohorts = self._packer.cohorts(client_ids)
    self.last_round_cohorts = len(cohorts)
    if not cohorts:
      raise ValueError('a round with no users cannot run in cohorts.')
    output = self._process.next(
        state, [tf.data.Dataset.from_tensors(c) for c in cohorts])
    work = output.metrics['client_work']
    if 'zeroing' not in work:
      return output
    # Per-user zeroing is measured where the per-client process measures it:
    # among the aggregator's (`zeroing_factory`'s) measurements.
    metrics = collections.OrderedDict(output.metrics)
    metrics['client_work'] = collections.OrderedDict(
        (k, v) for k, v in work.items() if k != 'zeroing')
    metrics['aggregator'] = collections.OrderedDict(
        zeroing=output.metrics['aggregator'], **work['zeroing'])
    return tff.learning.templates.LearningProcessOutput(output.state, metrics)

  def __getattr__(self, name):
    return getattr(self._process, name)


def unsupported(reasons: Sequence[Optional[str]]) -> Optional[str]:
  """The first reason a run cannot train in cohorts yet, or None."""
  return next((r for r in reasons if r), None)
