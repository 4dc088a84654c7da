"""Train / validation / test splits of a ratings table.

Three protocols, all vectorized and determined by a recorded seed:

* `holdout`: every user is a training client; a fraction of each user's
  ratings (random, or the latest by timestamp with `order=temporal`) is held
  out for validation and test. An evaluated user's embedding is reconstructed
  from that user's training ratings.
* `user_disjoint`: users are partitioned into train / val / test users; val and
  test users never take part in training. Each evaluated user's ratings are
  split deterministically into a *support* part (used to reconstruct the
  user's embedding) and a *query* part (scored): the cold-start protocol of
  Federated Reconstruction (Singhal et al., NeurIPS 2021).
* `leave_one_out`: each user's latest rating is the test item and the one
  before it the validation item (He et al. 2017, NCF); ties in time are broken
  at random with the seed.
* `item_cold_start`: a share of the items (`cold_item_fraction`, by seed) are
  new: none of their ratings reaches training. Each cold item belongs to
  validation or test (in the ratio of `val_fraction` to `test_fraction`),
  and all its ratings are scored there (those of users with at least one
  training rating, whom the model can know); the warm items' ratings are
  split as `holdout`. A partition's `cold_items` lets evaluation report
  warm-item and cold-item slices apart.

Every evaluation partition is an `EvalPartition` of (support, query) ratings,
so one evaluation procedure serves all protocols.
"""

import dataclasses
import enum

import numpy as np

from research.fedrec.data import ratings as ratings_lib

Ratings = ratings_lib.Ratings


class SplitKind(enum.Enum):
  HOLDOUT = 'holdout'
  USER_DISJOINT = 'user_disjoint'
  LEAVE_ONE_OUT = 'leave_one_out'
  ITEM_COLD_START = 'item_cold_start'


class SplitOrder(enum.Enum):
  RANDOM = 'random'
  TEMPORAL = 'temporal'


@dataclasses.dataclass(frozen=True)
class SplitConfig:
  """How to split; the seed is recorded with every run."""

  kind: SplitKind = SplitKind.HOLDOUT
  order: SplitOrder = SplitOrder.RANDOM
  val_fraction: float = 0.1
  test_fraction: float = 0.1
  support_fraction: float = 0.5  # user_disjoint: share of ratings to support.
  cold_item_fraction: float = 0.2  # item_cold_start: share of items held out.
  seed: int = 0

  def __post_init__(self):
    for name in ('val_fraction', 'test_fraction'):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f'--{name} must be in [0, 1), got {value}.')
    if self.val_fraction + self.test_fraction >= 1.0:
      raise ValueError(
          f'--val_fraction + --test_fraction must be < 1, got '
          f'{self.val_fraction} + {self.test_fraction}: no data would be left '
          'for training.')
    if self.kind != SplitKind.LEAVE_ONE_OUT and self.test_fraction == 0.0:
      raise ValueError('--test_fraction must be > 0: the test split would be '
                       'empty.')
    if not 0.0 < self.support_fraction < 1.0:
      raise ValueError('--support_fraction must be in (0, 1), got '
                       f'{self.support_fraction}.')
    if not 0.0 < self.cold_item_fraction < 1.0:
      raise ValueError('--cold_item_fraction must be in (0, 1), got '
                       f'{self.cold_item_fraction}.')


@dataclasses.dataclass(frozen=True)
class EvalPartition:
  """Evaluation users' support (reconstruction) and query (scored) ratings."""

  support: Ratings
  query: Ratings
  # item_cold_start: the items no training rating has (sorted); else empty.
  cold_items: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))

  @property
  def users(self) -> np.ndarray:
    """The evaluated users: those with at least one query rating."""
    return np.unique(self.query.users)


@dataclasses.dataclass(frozen=True)
class Split:
  train: Ratings
  val: EvalPartition
  test: EvalPartition


def _positions(users: np.ndarray, sort_key: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Each row's 0-based position within its user, and that user's count.

  Rows are ordered within a user by `sort_key`, ties broken at random.
  """
  tie_break = rng.random(users.size)
  order = np.lexsort((tie_break, sort_key, users))
  sorted_users = users[order]
  starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
  counts = np.diff(np.r_[starts, sorted_users.size])
  position = np.empty(users.size, np.int64)
  position[order] = np.arange(users.size) - np.repeat(starts, counts)
  count = np.empty(users.size, np.int64)
  count[order] = np.repeat(counts, counts)
  return position, count


def _row_key(table: Ratings, order: SplitOrder,
             rng: np.random.Generator) -> np.ndarray:
  if order == SplitOrder.TEMPORAL:
    return table.timestamps
  return rng.random(len(table))


def split(table: Ratings, config: SplitConfig) -> Split:
  """Splits a remapped table (dense user ids) according to `config`.

  Raises:
    ratings_lib.DataError: a protocol's minimum history is not met (for
      example a user with fewer than 3 ratings under leave-one-out).
  """
  rng = np.random.default_rng(config.seed)
  if config.kind == SplitKind.USER_DISJOINT:
    return _user_disjoint(table, config, rng)
  if config.kind == SplitKind.ITEM_COLD_START:
    return _item_cold_start(table, config, rng)
  val_mask, test_mask = _heldout_masks(table, config, rng)
  train = table.take(~(test_mask | val_mask))
  return Split(train, EvalPartition(train, table.take(val_mask)),
               EvalPartition(train, table.take(test_mask)))


def _heldout_masks(table: Ratings, config: SplitConfig,
                   rng: np.random.Generator):
  """(val, test) row masks of the holdout and leave-one-out protocols."""
  if config.kind == SplitKind.LEAVE_ONE_OUT:  # Always by time.
    key = table.timestamps
  else:
    key = _row_key(table, config.order, rng)
  position, count = _positions(table.users, key, rng)
  if config.kind == SplitKind.LEAVE_ONE_OUT:
    if count.min() < 3:
      raise ratings_lib.DataError(
          '--split=leave_one_out needs at least 3 ratings per user (raise '
          '--min_ratings_per_user to 3 or more).')
    return position == count - 2, position == count - 1
  num_test = np.round(count * config.test_fraction).astype(np.int64)
  num_val = np.round(count * config.val_fraction).astype(np.int64)
  # Every user keeps at least one training rating.
  num_test = np.minimum(num_test, count - 1)
  num_val = np.minimum(num_val, count - 1 - num_test)
  test_mask = position >= count - num_test
  val_mask = (position >= count - num_test - num_val) & ~test_mask
  return val_mask, test_mask


def _item_cold_start(table: Ratings, config: SplitConfig,
                     rng: np.random.Generator) -> Split:
  items = np.unique(table.items)
  num_cold = int(round(items.size * config.cold_item_fraction))
  if not 1 <= num_cold < items.size:
    raise ratings_lib.DataError(
        f'--cold_item_fraction={config.cold_item_fraction:g} of '
        f'{items.size} items leaves no cold or no warm items.')
  cold = rng.permutation(items)[:num_cold]
  held = config.val_fraction + config.test_fraction
  num_val_cold = int(round(num_cold * config.val_fraction / held))
  val_cold, test_cold = cold[:num_val_cold], cold[num_val_cold:]
  warm_rows = np.flatnonzero(~np.isin(table.items, cold))
  warm = table.take(warm_rows)
  holdout = dataclasses.replace(config, kind=SplitKind.HOLDOUT)
  warm_val, warm_test = _heldout_masks(warm, holdout, rng)
  train_mask = np.zeros(len(table), bool)
  train_mask[warm_rows[~(warm_val | warm_test)]] = True
  known_user = np.isin(table.users, table.users[train_mask])
  val_mask = np.zeros(len(table), bool)
  val_mask[warm_rows[warm_val]] = True
  val_mask |= np.isin(table.items, val_cold) & known_user
  test_mask = np.zeros(len(table), bool)
  test_mask[warm_rows[warm_test]] = True
  test_mask |= np.isin(table.items, test_cold) & known_user
  train = table.take(train_mask)
  cold = np.sort(cold)
  return Split(train, EvalPartition(train, table.take(val_mask), cold),
               EvalPartition(train, table.take(test_mask), cold))


def _user_disjoint(table: Ratings, config: SplitConfig,
                   rng: np.random.Generator) -> Split:
  users = np.unique(table.users)
  permuted = rng.permutation(users)
  num_test = int(round(users.size * config.test_fraction))
  num_val = int(round(users.size * config.val_fraction))
  if users.size - num_test - num_val < 1 or num_test < 1:
    raise ratings_lib.DataError(
        f'--split=user_disjoint: {users.size} users cannot make a non-empty '
        'train and test set with these fractions.')
  role = np.zeros(users.max() + 1, np.int8)  # 0 train, 1 val, 2 test.
  role[permuted[:num_test]] = 2
  role[permuted[num_test:num_test + num_val]] = 1
  row_role = role[table.users]
  position, count = _positions(table.users, _row_key(table, config.order, rng),
                               rng)
  # The first `support_fraction` of each user's ratings (in split order)
  # reconstruct the embedding; the rest are scored. Both parts non-empty.
  num_support = np.clip(np.round(count * config.support_fraction), 1,
                        np.maximum(count - 1, 1)).astype(np.int64)
  is_support = position < num_support

  def partition(code: int) -> EvalPartition:
    rows = row_role == code
    return EvalPartition(table.take(rows & is_support),
                         table.take(rows & ~is_support))

  return Split(table.take(row_role == 0), partition(1), partition(2))


def of_users(split: Split, keep: np.ndarray) -> Split:
  """The split restricted to the users `u` with `keep[u]` (dense ids), e.g.
  one silo's own data. A partition whose support is the training split keeps
  it so; cold items stay the split's."""
  train = split.train.take(keep[split.train.users])

  def partition(part: EvalPartition) -> EvalPartition:
    support = (train if part.support is split.train else
               part.support.take(keep[part.support.users]))
    return EvalPartition(support, part.query.take(keep[part.query.users]),
                         part.cold_items)

  return Split(train, partition(split.val), partition(split.test))


def ratings_by_user(table: Ratings, users: np.ndarray):
  """(items, ratings): per user of `users`, the arrays of its rows of
  `table`, in the table's order."""
  order = np.argsort(table.users, kind='stable')
  sorted_users = table.users[order]
  lo = np.searchsorted(sorted_users, users)
  hi = np.searchsorted(sorted_users, users, side='right')
  rows = [order[a:b] for a, b in zip(lo, hi)]
  return [table.items[r] for r in rows], [table.ratings[r] for r in rows]


def client_ratings(split: Split, split_name: str):
  """Per evaluated user: the ratings on the client before scoring.

  In the client store's order (training ratings, then support ratings of the
  user-disjoint split), which the reconstruction's shuffle is applied to.

  Returns:
    `(users, items, ratings)`: the sorted user indices of the split's query
    ratings and, per user, the arrays of the client's other ratings.
  """
  partition = getattr(split, split_name)
  users = np.unique(partition.query.users)
  parts = [split.train]
  if partition.support is not split.train:
    parts.append(partition.support)
  grouped = [ratings_by_user(table, users) for table in parts]
  return (users,
          [np.concatenate(x) for x in zip(*(g[0] for g in grouped))],
          [np.concatenate(x) for x in zip(*(g[1] for g in grouped))])
