"""The validated ratings table every corpus reader produces.

A `Ratings` table is four aligned NumPy columns (user, item, rating, timestamp).
Readers (`movielens.py`, `synthetic.py`) build one with raw ids; `validate`
checks it against a rating scale and applies the duplicate policy;
`filter_min_ratings` drops users with too little history; `remap_ids` turns raw
ids into dense indices `0..n-1` (the form models and the client store use) and
keeps the raw ids so outputs can speak the corpus's own ids.

All operations are vectorized: nothing here keeps a Python object per rating,
so an ML-20M-sized table (20M rows) is handled in seconds.
"""

import dataclasses
import enum
import hashlib
from typing import Callable, Optional

import numpy as np


class DataError(ValueError):
  """A user-facing data problem: the message names the file/line or flag."""


class DuplicatePolicy(enum.Enum):
  """What to do with repeated (user, item) pairs."""

  # Keep the most recent rating (largest timestamp; the later line on a tie).
  # MovieLens never repeats a pair, so this only matters for users' own data.
  LATEST = 'latest'
  # Reject the corpus, naming the first repeated pair.
  ERROR = 'error'


@dataclasses.dataclass(frozen=True)
class RatingScale:
  """The legal rating values: `minimum..maximum` in steps of `step`."""

  minimum: float
  maximum: float
  step: float

  def contains(self, values: np.ndarray) -> np.ndarray:
    """Returns a boolean mask of the values that lie on the scale."""
    in_range = (values >= self.minimum) & (values <= self.maximum)
    steps = (values - self.minimum) / self.step
    on_grid = np.abs(steps - np.round(steps)) < 1e-6
    return in_range & on_grid

  def describe(self) -> str:
    return f'{self.minimum:g} to {self.maximum:g} in steps of {self.step:g}'


STARS_1_TO_5 = RatingScale(1.0, 5.0, 1.0)
HALF_STARS = RatingScale(0.5, 5.0, 0.5)


@dataclasses.dataclass(frozen=True)
class Ratings:
  """Aligned columns of a ratings table (one row per rating)."""

  users: np.ndarray  # int64 (dense indices after `remap_ids`) or raw ids.
  items: np.ndarray
  ratings: np.ndarray  # float32
  timestamps: np.ndarray  # int64, seconds since the epoch.

  def __post_init__(self):
    n = len(self.users)
    for name in ('items', 'ratings', 'timestamps'):
      if len(getattr(self, name)) != n:
        raise ValueError(f'Column {name} has {len(getattr(self, name))} rows, '
                         f'users has {n}.')

  def __len__(self) -> int:
    return len(self.users)

  def take(self, index: np.ndarray) -> 'Ratings':
    """Returns the rows selected by an index array or boolean mask."""
    return Ratings(self.users[index], self.items[index], self.ratings[index],
                   self.timestamps[index])

  def content_hash(self) -> str:
    """A SHA-256 of the table's contents (order-sensitive)."""
    digest = hashlib.sha256()
    for column in (self.users, self.items, self.ratings, self.timestamps):
      column = np.ascontiguousarray(column)
      digest.update(str(column.dtype).encode())
      digest.update(column.tobytes() if column.dtype != object else
                    '\x00'.join(map(str, column)).encode())
    return digest.hexdigest()


def concatenate(parts: list[Ratings]) -> Ratings:
  """Stacks several tables row-wise."""
  return Ratings(*(np.concatenate([getattr(p, f.name) for p in parts])
                   for f in dataclasses.fields(Ratings)))


def validate(ratings: Ratings, scale: RatingScale, source: str,
             duplicates: DuplicatePolicy = DuplicatePolicy.LATEST,
             line_offset: int = 1,
             line_of: Optional[Callable[[int], int]] = None) -> Ratings:
  """Checks a freshly read table and applies the duplicate policy.

  Args:
    ratings: The table as read, rows in file order.
    scale: The legal rating values.
    source: The file the rows came from, for error messages.
    duplicates: What to do with repeated (user, item) pairs.
    line_offset: The file line number of row 0 (2 when there is a header).
    line_of: Row index -> its file line number (overrides `line_offset`;
      readers that skip blank lines pass it).

  Returns:
    The table with duplicates resolved, rows in file order.

  Raises:
    DataError: empty table, ratings off the scale, or duplicates under
      `DuplicatePolicy.ERROR`; the message names the file and line.
  """
  if line_of is None:
    line_of = lambda row: row + line_offset
  if len(ratings) == 0:  # pylint: disable=g-explicit-length-test
    raise DataError(f'{source}: no ratings found (the file is empty).')
  bad = np.flatnonzero(~scale.contains(ratings.ratings))
  if bad.size:
    row = int(bad[0])
    raise DataError(
        f'{source}:{line_of(row)}: rating {ratings.ratings[row]:g} is '
        f'outside the scale {scale.describe()} ({bad.size} such rows).')
  # Stable sort by (user, item, timestamp) keeps file order within ties, so the
  # last row of each run of equal pairs is the latest one (later line on ties).
  order = np.lexsort((ratings.timestamps, ratings.items, ratings.users))
  users, items = ratings.users[order], ratings.items[order]
  same_as_next = (users[:-1] == users[1:]) & (items[:-1] == items[1:])
  if not same_as_next.any():
    return ratings
  if duplicates == DuplicatePolicy.ERROR:
    first = order[np.flatnonzero(same_as_next)[0] + 1]
    raise DataError(
        f'{source}:{line_of(int(first))}: duplicate rating of item '
        f'{ratings.items[first]} by user {ratings.users[first]} '
        f'({int(same_as_next.sum())} duplicates; use the duplicate policy '
        '"latest" to keep the most recent).')
  keep = np.ones(len(ratings), dtype=bool)
  keep[order[:-1][same_as_next]] = False
  return ratings.take(keep)


def filter_min_ratings(ratings: Ratings, min_ratings_per_user: int) -> Ratings:
  """Drops the users with fewer than `min_ratings_per_user` ratings."""
  if min_ratings_per_user <= 1:
    return ratings
  _, inverse, counts = np.unique(ratings.users, return_inverse=True,
                                 return_counts=True)
  return ratings.take(counts[inverse] >= min_ratings_per_user)


@dataclasses.dataclass(frozen=True)
class IdMaps:
  """Raw corpus ids of dense user and item indices (`raw_users[u]` is u's)."""

  raw_users: np.ndarray
  raw_items: np.ndarray

  @property
  def num_users(self) -> int:
    return len(self.raw_users)

  @property
  def num_items(self) -> int:
    return len(self.raw_items)


def remap_ids(ratings: Ratings,
              max_users: Optional[int] = None) -> tuple[Ratings, IdMaps]:
  """Replaces raw ids by dense indices ordered by raw id.

  Args:
    ratings: A validated table with raw ids.
    max_users: If set, keep only the users with the `max_users` smallest raw
      ids (the "first N users" restriction of the TFF tutorial).

  Returns:
    The table with int64 indices, and the maps back to raw ids.
  """
  if max_users is not None:
    raw_users = np.unique(ratings.users)[:max_users]
    ratings = ratings.take(np.isin(ratings.users, raw_users))
  raw_users, user_index = np.unique(ratings.users, return_inverse=True)
  raw_items, item_index = np.unique(ratings.items, return_inverse=True)
  dense = Ratings(user_index.astype(np.int64), item_index.astype(np.int64),
                  ratings.ratings.astype(np.float32),
                  ratings.timestamps.astype(np.int64))
  return dense, IdMaps(raw_users, raw_items)
