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
  of a round into cohorts of dense, padded tensors: `users` [K] (their ids),
  `counts` [K], `items` [K, L], `ratings` [K, L], with L a multiple of the
  batch size. Users are
  sorted by size, so that a cohort pads little, and a cohort holds at most
  `cohort_size` users and about `COHORT_RATINGS` padded ratings (so heavy
  users come in small cohorts). A cohort is never empty.
* `ImplicitCohortPacker` does the same for implicit feedback, whose examples
  change every round: for each user of a round it draws each local epoch's
  negatives and shuffle with the per-client pipeline's own functions and seeds
  (`pipelines.client_positives`, `epoch_negatives`, `labelled`), so a user's
  batches are exactly those its per-client dataset would hold (all of a
  round's users in one graph call, not one Python call each), and lays them
  out per epoch: `items` / `labels` [K, E * L], with each user's examples
  per training epoch in `counts` and per reconstruction epoch in
  `recon_counts` (they differ under `split_dataset`). As a user may meet an item
  several times in its training epochs (negatives are drawn with
  replacement), its training positions also index a per-user table of the
  distinct items it touches: `slots` [K, P * L] into `slot_items` [K, M].
* `UserVectorCohortPacker` adds, for a model of user vectors (U-AutoRec),
  each user's multi-hot vector of its training items: `known` [K, items].
* `CohortProcess` wraps a learning process whose clients are cohorts so that
  its `next` takes the round's client ids, as the per-client process's does:
  the training loop, checkpoints and schedules do not know the difference.

The client computations themselves are per method and model (e.g.
`fed_recon_cohort.py`).
"""

import collections
import sqlite3
import threading
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.data import pipelines

# Padded ratings per cohort at most (unless a single user holds more): bounds a
# cohort's tensors, and so the memory of the round, whatever the user sizes.
COHORT_RATINGS = 1 << 16
DEFAULT_COHORT_SIZE = 128  # Users per cohort at most (--cohort_size=0).


def max_users(cohort_size: int) -> int:
  """The most users a cohort holds under --cohort_size (0: the default)."""
  return cohort_size or DEFAULT_COHORT_SIZE

ELEMENT_SPEC = collections.OrderedDict(
    users=tf.TensorSpec([None], tf.int32),
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


def group_users(by_size: Sequence[str], padded_length, cohort_size: int,
                epochs: int, silo_of: Optional[np.ndarray] = None
                ) -> list[list[str]]:
  """The users of each cohort, from the round's users sorted by size.

  Consecutive users fill a cohort up to `cohort_size` users and about
  `COHORT_RATINGS` padded positions (`padded_length(users)` per epoch, for
  `epochs` epochs), never an empty one. With `silo_of` (each dense user id's
  silo: data/silos.py), each silo's users form one cohort, whatever its size,
  in the order of the silos (a silo is one participant).
  """
  if silo_of is not None:
    silos = collections.defaultdict(list)
    for user in by_size:
      silos[int(silo_of[int(user.partition('/')[0])])].append(user)
    return [silos[k] for k in sorted(silos)]
  groups, members = [], []
  for user in by_size:
    if members and (
        len(members) >= cohort_size or
        (len(members) + 1) * padded_length(members) * epochs >
        COHORT_RATINGS):
      groups.append(members)
      members = []
    members.append(user)
  if members:
    groups.append(members)
  return groups


class CohortPacker:
  """The training ratings of a client store, packed into cohorts per round.

  `silo_of` (None: users sampled into cohorts by size) packs each silo's
  users as one cohort (`group_users`).
  """

  silo_of: Optional[np.ndarray] = None

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
    self._cohort_size = max_users(cohort_size)
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

    def padded_length(users):
      longest = max(self._counts[c] for c in users)
      return max(1, -(-longest // batch)) * batch

    return [self._pack(members, padded_length(members))
            for members in group_users(by_size, padded_length,
                                       self._cohort_size, 1, self.silo_of)]

  def _pack(self, users, length: int) -> collections.OrderedDict:
    counts = np.array([self._counts[c] for c in users], np.int32)
    offsets = np.array([self._offsets[c] for c in users], np.int64)
    positions = np.arange(length)
    inside = positions[None, :] < counts[:, None]
    # Padded positions read index 0 and are then zeroed.
    index = np.where(inside, offsets[:, None] + positions[None, :], 0)
    return collections.OrderedDict(
        users=np.array([int(c) for c in users], np.int32),
        counts=counts,
        items=np.where(inside, self._items[index], 0).astype(np.int32),
        ratings=np.where(inside, self._ratings[index], 0).astype(np.float32))


class EpochCohortPacker(CohortPacker):
  """Explicit ratings laid out epoch by epoch, as `ImplicitCohortPacker` does.

  For the cohort client work that trains on each epoch's own examples
  (`fed_recon_cohort.build_implicit_client_work`, which explicit feedback
  uses under stateful optimizers): every local epoch holds the user's
  batches in `CohortPacker`'s order (the same each epoch, as per client);
  under `split_dataset` reconstruction's epochs hold its even-numbered
  batches and training's its odd-numbered ones, as FedRecon's dataset split
  does. A user rates an item once, so its copies of item rows are one per
  rating: `slots` index its training items in `slot_items`.
  """

  def __init__(self, store_path: str, pipeline: pipelines.PipelineConfig,
               recon_epochs: int, post_recon_epochs: int,
               cohort_size: int = 0, split_dataset: bool = False):
    super().__init__(store_path, pipeline, cohort_size)
    self._recon_epochs = recon_epochs
    self._post_recon_epochs = post_recon_epochs
    self._split_dataset = split_dataset

  def cohorts(self, client_ids: Sequence[str]) -> list[
      collections.OrderedDict]:
    return [self._by_epoch(c) for c in super().cohorts(client_ids)]

  def _by_epoch(self, cohort) -> collections.OrderedDict:
    counts, items, ratings = (cohort['counts'], cohort['items'],
                              cohort['ratings'])
    batch = self._batch_size
    batches = items.shape[1] // batch

    def phase(parity):  # (items, ratings, counts) of one epoch of a phase.
      if not self._split_dataset:
        return items, ratings, counts
      columns = (np.arange(parity, batches, 2)[:, None] * batch +
                 np.arange(batch)[None, :]).reshape(-1)
      # A user's ratings are a prefix of its row, so they stay one here.
      return (items[:, columns], ratings[:, columns],
              (columns[None, :] < counts[:, None]).sum(axis=1).astype(
                  np.int32))

    recon, trained = phase(0), phase(1)
    length = max(batch, recon[0].shape[1], trained[0].shape[1])
    epochs = [recon] * self._recon_epochs + [trained] * self._post_recon_epochs
    num = len(counts)
    laid = [np.zeros((num, len(epochs), length), dtype)
            for dtype in (np.int32, np.float32)]
    for epoch, (epoch_items, epoch_ratings, _) in enumerate(epochs):
      width = epoch_items.shape[1]
      laid[0][:, epoch, :width] = epoch_items
      laid[1][:, epoch, :width] = epoch_ratings
    train_counts = trained[2]
    slots = np.zeros((num, self._post_recon_epochs, length), np.int32)
    slot_items = np.zeros((num, max(1, int(train_counts.max(initial=0)))),
                          np.int32)
    for k, count in enumerate(train_counts):
      slots[k, :, :count] = np.arange(count)
      slot_items[k, :count] = trained[0][k, :count]
    return collections.OrderedDict(
        users=cohort['users'], counts=train_counts,
        items=laid[0].reshape(num, -1), labels=laid[1].reshape(num, -1),
        slots=slots.reshape(num, -1), slot_items=slot_items,
        recon_counts=recon[2])


IMPLICIT_ELEMENT_SPEC = collections.OrderedDict(
    users=tf.TensorSpec([None], tf.int32),
    counts=tf.TensorSpec([None], tf.int32),
    items=tf.TensorSpec([None, None], tf.int32),
    labels=tf.TensorSpec([None, None], tf.float32),
    slots=tf.TensorSpec([None, None], tf.int32),
    slot_items=tf.TensorSpec([None, None], tf.int32),
    recon_counts=tf.TensorSpec([None], tf.int32))


# Above this many (user, item) cells a cohort's distinct items are sorted per
# user instead of marked in a [K, items] table.
_SLOT_TABLE_CELLS = 1 << 24


def distinct_slots(items: np.ndarray, counts: np.ndarray, num_items: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Each user's distinct training items and its positions' slots in them.

  Args:
    items: [K, P, L] each user's items in each of P epochs (the first
      `counts[k]` positions of an epoch hold examples, the rest padding).
    counts: [K] examples per epoch.
    num_items: Size of the item vocabulary.

  Returns:
    `(slots [K, P, L], slot_items [K, M])`: user k's distinct items sorted
    (`slot_items[k, :m_k]`, 0 after) and each example position's index
    there (0 on padding), as `np.unique(..., return_inverse=True)` gives
    per user; M = max(1, max m_k).
  """
  num, _, length = items.shape
  valid = np.arange(length)[None, None, :] < counts[:, None, None]
  valid = np.broadcast_to(valid, items.shape)
  slots = np.zeros(items.shape, np.int32)
  if num * num_items <= _SLOT_TABLE_CELLS:  # Mark, then count, per user.
    users = np.broadcast_to(np.arange(num)[:, None, None], items.shape)
    present = np.zeros((num, num_items), bool)
    present[users[valid], items[valid]] = True
    index = np.cumsum(present, axis=1, dtype=np.int32) - 1
    slots[valid] = index[users[valid], items[valid]]
    per_user = present.sum(axis=1)
    rows, columns = np.nonzero(present)  # Row-major: by user, then item.
    slot_items = np.zeros((num, max(1, int(per_user.max(initial=0)))),
                          np.int32)
    slot_items[rows, np.arange(len(rows)) - np.repeat(
        np.cumsum(per_user) - per_user, per_user)] = columns
    return slots, slot_items
  distinct = []
  for k in range(num):
    touched, inverse = np.unique(items[k][valid[k]], return_inverse=True)
    slots[k][valid[k]] = inverse
    distinct.append(touched)
  slot_items = np.zeros((num, max(1, max(len(d) for d in distinct))),
                        np.int32)
  for k, touched in enumerate(distinct):
    slot_items[k, :len(touched)] = touched
  return slots, slot_items


class ImplicitCohortPacker:
  """Implicit feedback: each round's per-user examples, packed in cohorts
  (each silo's users as one with `silo_of`, as `CohortPacker`)."""

  silo_of: Optional[np.ndarray] = None

  def __init__(self, store_path: str, pipeline: pipelines.PipelineConfig,
               num_items: int, recon_epochs: int, post_recon_epochs: int,
               cohort_size: int = 0, split_dataset: bool = False):
    """Reads the store's training interactions once.

    Args:
      store_path: The client store (data/client_store.py).
      pipeline: Batch size, negatives, example cap, seed, and whether the
        negatives also avoid the held-out items (`exclude_heldout`).
      num_items: Size of the item vocabulary.
      recon_epochs, post_recon_epochs: FedRecon's local epochs (E = both).
      cohort_size: Users per cohort at most (0: `DEFAULT_COHORT_SIZE`).
      split_dataset: FedRecon's `--split_dataset`: reconstruction epochs on
        the even-positioned positives, training epochs on the odd ones
        (`client_data.create_implicit_recon_train_fn`).
    """
    if cohort_size < 0:
      raise ValueError(f'--cohort_size={cohort_size}: expected >= 0 (0: '
                       'automatic).')
    self._batch_size = pipeline.batch_size
    self._cohort_size = max_users(cohort_size)
    self._num_items = num_items
    self._recon_epochs = recon_epochs
    self._epochs = recon_epochs + post_recon_epochs
    splits = "('train', 'val', 'test')" if pipeline.exclude_heldout else (
        "('train')")
    with sqlite3.connect(store_path) as con:
      rows = con.execute(
          f'SELECT user, item, split_name = \'train\' FROM ratings WHERE '
          f'split_name IN {splits} ORDER BY rowid').fetchall()
    table = np.array(rows, dtype=np.int64).reshape(-1, 3)
    self._positives, self._excluded = {}, {}
    for user in np.unique(table[:, 0]):
      mine = table[table[:, 0] == user]
      training = mine[mine[:, 2] == 1, 1]
      if len(training):
        self._positives[str(user)] = training  # Store (rowid) order.
        self._excluded[str(user)] = np.union1d(
            mine[:, 1], np.asarray(pipeline.unavailable_items, np.int64))
    self._training_items = dict(self._positives)  # Uncapped.
    epochs = self._epochs

    # A user's training positives in the per-client pipeline's order depend
    # on the user alone: drawn once here, not every round.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([], tf.int64)])
    def user_positives(items, user):
      return pipelines.client_positives(pipeline, items, user)
    self._positives = {
        user: user_positives(items, np.int64(user)).numpy()
        for user, items in self._positives.items()}

    def user_examples(positives, excluded, user, round_num):
      all_items, all_labels, lengths = [], [], []
      for epoch in range(epochs):
        negatives, seed = pipelines.epoch_negatives(
            pipeline, num_items, positives, excluded, user, round_num,
            tf.constant(epoch, tf.int64))
        mine = positives
        if split_dataset:  # As client_data.create_implicit_recon_train_fn.
          mine = positives[(0 if epoch < recon_epochs else 1)::2]
          negatives = negatives[:tf.size(mine) * pipeline.num_negatives]
        epoch_items, epoch_labels = pipelines.labelled(mine, negatives, seed)
        all_items.append(epoch_items)
        all_labels.append(epoch_labels)
        lengths.append(tf.size(epoch_items))
      return (tf.concat(all_items, 0), tf.concat(all_labels, 0),
              tf.stack(lengths))

    ragged = tf.RaggedTensorSpec([None, None], tf.int64, ragged_rank=1)

    # Every user of a round in one call (a loop inside the graph, not one
    # Python call per user): each user's epochs concatenated, [E * c].
    @tf.function(input_signature=[ragged, ragged,
                                  tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None], tf.int64)])
    def round_examples(positives, excluded, users, rounds):
      return tf.map_fn(
          lambda k: user_examples(positives[k], excluded[k], users[k],
                                  rounds[k]),
          tf.range(tf.size(users)), parallel_iterations=16,
          fn_output_signature=(
              tf.RaggedTensorSpec([None], tf.int64, ragged_rank=0),
              tf.RaggedTensorSpec([None], tf.float32, ragged_rank=0),
              tf.TensorSpec([epochs], tf.int32)))
    self._round_examples = round_examples

  def _examples(self, client_ids: Sequence[str]) -> dict:
    """`"<user>/<round>"` client id -> (items, labels): one array per epoch.

    Every epoch of a phase has as many examples; under `split_dataset` the
    reconstruction epochs' count differs from the training epochs'.
    """
    users, rounds = zip(*(c.partition('/')[::2] for c in client_ids))

    def stacked(arrays):  # One [N, None] ragged tensor of N arrays.
      return tf.RaggedTensor.from_row_lengths(
          np.concatenate(arrays).astype(np.int64),
          np.array([len(a) for a in arrays], np.int64))

    items, labels, lengths = self._round_examples(
        stacked([self._positives[u] for u in users]),
        stacked([self._excluded[u] for u in users]),
        np.array(users, np.int64),
        np.array([int(r or 0) for r in rounds], np.int64))
    starts = items.row_splits.numpy()[:-1]
    flat_items = items.flat_values.numpy()
    flat_labels = labels.flat_values.numpy()
    examples = {}
    for c, start, sizes in zip(client_ids, starts, lengths.numpy()):
      bounds = start + np.concatenate([[0], np.cumsum(sizes)])
      examples[c] = tuple([flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
                          for flat in (flat_items, flat_labels))
    return examples

  def cohorts(self, client_ids: Sequence[str]) -> list[
      collections.OrderedDict]:
    """The round's users (ids carrying the round) packed into cohorts."""
    examples = self._examples(client_ids)
    size = {c: max(len(e) for e in examples[c][0]) for c in client_ids}
    by_size = sorted(client_ids, key=lambda c: (-size[c], c))
    batch = self._batch_size

    def padded_length(users):
      return max(1, -(-max(size[c] for c in users) // batch)) * batch

    return [self._pack(members, examples, padded_length(members))
            for members in group_users(by_size, padded_length,
                                       self._cohort_size, self._epochs,
                                       self.silo_of)]

  def _pack(self, users, examples, length: int) -> collections.OrderedDict:
    num, epochs = len(users), self._epochs
    training = epochs - self._recon_epochs
    items = np.zeros((num, epochs, length), np.int32)
    labels = np.zeros((num, epochs, length), np.float32)
    counts = np.zeros(num, np.int32)
    recon_counts = np.zeros(num, np.int32)
    for k, user in enumerate(users):
      user_items, user_labels = examples[user]
      for epoch, (epoch_items, epoch_labels) in enumerate(zip(user_items,
                                                             user_labels)):
        items[k, epoch, :len(epoch_items)] = epoch_items
        labels[k, epoch, :len(epoch_items)] = epoch_labels
      # Every epoch of a phase has as many examples.
      recon_counts[k] = len(user_items[0])
      counts[k] = len(user_items[-1])
    slots, slot_items = distinct_slots(
        items[:, self._recon_epochs:], counts, self._num_items)
    return collections.OrderedDict(
        users=np.array([int(c.partition('/')[0]) for c in users], np.int32),
        counts=counts, items=items.reshape(num, -1),
        labels=labels.reshape(num, -1), slots=slots.reshape(num, -1),
        slot_items=slot_items, recon_counts=recon_counts)


USER_VECTOR_ELEMENT_SPEC = collections.OrderedDict(
    IMPLICIT_ELEMENT_SPEC, known=tf.TensorSpec([None, None], tf.float32))


class UserVectorCohortPacker(ImplicitCohortPacker):
  """A model of user vectors (U-AutoRec): `ImplicitCohortPacker`'s epochs
  of positives and negatives (no reconstruction), and each user's vector
  `known` [K, items]: 1.0 at every item of its training split, uncapped, as
  `client_data.create_user_vector_train_fn`'s `x`."""

  def __init__(self, store_path: str, pipeline: pipelines.PipelineConfig,
               num_items: int, cohort_size: int = 0):
    super().__init__(store_path, pipeline, num_items, 0,
                     pipeline.local_epochs, cohort_size)

  def _pack(self, users, examples, length: int) -> collections.OrderedDict:
    cohort = super()._pack(users, examples, length)
    known = np.zeros((len(users), self._num_items), np.float32)
    for k, user in enumerate(users):
      known[k, self._training_items[user.partition('/')[0]]] = 1.0
    cohort['known'] = known
    return cohort


class CohortProcess:
  """A learning process over cohorts whose `next` takes client ids.

  Everything but `next` is the wrapped process's (`initialize`,
  `get_model_weights`, `get_hparams`, ...), so its state, checkpoints and
  hyperparameters are exactly those of the process it wraps.
  """

  def __init__(self, process, packer):
    self._process = process
    self._packer = packer
    self.last_round_cohorts = 0
    # Sparsified silo uploads (algorithms/sparse_uploads.SiloUploads).
    self.uploads = None
    self._upcoming = None  # The next round's client ids (`prefetch`).
    self._packing = None  # (client ids, thread, [cohorts or error]).

  def prefetch(self, client_ids: Sequence[str]) -> None:
    """Names the next round's users: this round's `next` packs them in a
    thread while the runtime runs its own round, so that host and worker
    overlap. The result is the same as packing them when their round
    comes (the packer is a pure function of the ids)."""
    self._upcoming = list(client_ids)

  def _packed(self, client_ids: Sequence[str]) -> list:
    """The cohorts of `client_ids`: packed ahead (`prefetch`), else now."""
    packing, self._packing = self._packing, None
    if packing is not None:
      ids, thread, result = packing
      thread.join()
      if ids == list(client_ids):
        if isinstance(result[0], BaseException):
          raise result[0]
        return result[0]
    return self._packer.cohorts(client_ids)

  def _start_packing(self) -> None:
    ids, self._upcoming = self._upcoming, None
    if not ids:
      return
    result = []

    def pack():
      try:
        result.append(self._packer.cohorts(ids))
      except BaseException as e:  # pylint: disable=broad-except
        result.append(e)  # Raised in the caller's thread, at its round.
    thread = threading.Thread(target=pack, name='cohort-packer', daemon=True)
    thread.start()
    self._packing = (ids, thread, result)

  def next(self, state, client_ids: Sequence[str]):
    cohorts = self._packed(client_ids)
    self.last_round_cohorts = len(cohorts)
    if not cohorts:
      raise ValueError('a round with no users cannot run in cohorts.')
    datasets = [tf.data.Dataset.from_tensors(c) for c in cohorts]
    self._start_packing()
    if self.uploads is not None:
      output, _ = self.uploads.run(self._process, state, datasets, cohorts)
    else:
      output = self._process.next(state, datasets)
    return zeroing_measured_by_aggregator(output)

  def __getattr__(self, name):
    return getattr(self._process, name)


def zeroing_measured_by_aggregator(output):
  """A cohort round's output, with per-user zeroing measured where the
  per-client process measures it: among the aggregator's
  (`zeroing_factory`'s) measurements."""
  work = output.metrics['client_work']
  if 'zeroing' not in work:
    return output
  metrics = collections.OrderedDict(output.metrics)
  metrics['client_work'] = collections.OrderedDict(
      (k, v) for k, v in work.items() if k != 'zeroing')
  metrics['aggregator'] = collections.OrderedDict(
      zeroing=output.metrics['aggregator'], **work['zeroing'])
  return tff.learning.templates.LearningProcessOutput(output.state, metrics)


def unsupported(reasons: Sequence[Optional[str]]) -> Optional[str]:
  """The first reason a run cannot train in cohorts yet, or None."""
  return next((r for r in reasons if r), None)


def common_unsupported(config, models: Sequence[str]) -> tuple:
  """What no cohort client work reproduces yet (reasons, or falsy values).

  Args:
    config: the run's training/experiment.ExperimentConfig.
    models: the --model names the method's cohort client work trains.
  """
  return (
      config.model_name not in models and
      f'--model={config.model_name} has no cohort client work yet (only '
      f'{", ".join(models)})',
      # A silo's update is one record (data/silos.py): quantized whole, as
      # a client's, by the aggregator.
      config.aggregation.compression.value != 'none' and
      not config.silos.enabled and
      '--compression has no per-user form in cohorts yet')
