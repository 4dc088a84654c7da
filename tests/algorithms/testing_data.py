"""Tiny corpora for the algorithm and training tests, with known contents."""

import numpy as np

from research.fedrec.data import ratings
from research.fedrec.data import splits


def table(users, items, values) -> ratings.Ratings:
  return ratings.Ratings(np.array(users, np.int64), np.array(items, np.int64),
                         np.array(values, np.float32),
                         np.arange(len(users), dtype=np.int64))


def random_table(num_users=40, num_items=30, seed=0,
                 min_count=3) -> ratings.Ratings:
  """Users with `min_count` to 14 distinct items, ratings 1 to 5, by seed."""
  rng = np.random.default_rng(seed)
  users, items, values = [], [], []
  for user in range(num_users):
    count = int(rng.integers(min_count, 15))
    users += [user] * count
    items += rng.choice(num_items, count, replace=False).tolist()
    values += rng.integers(1, 6, count).tolist()
  return table(users, items, values)


# Two training users (0: items 0, 1; 1: items 1, 2, 0) and one unseen test
# user (2: reconstructs on items 0, 2 and is scored on item 1).
TRAIN = table([0, 0, 1, 1, 1], [0, 1, 1, 2, 0], [4, 2, 3, 5, 1])
TEST = splits.EvalPartition(support=table([2, 2], [0, 2], [4, 1]),
                            query=table([2], [1], [3]))
NUM_USERS, NUM_ITEMS = 3, 3


def create_split() -> splits.Split:
  return splits.Split(TRAIN, TEST, TEST)


def client_rows(user: int):
  """(items, ratings) of one training user."""
  mask = TRAIN.users == user
  return TRAIN.items[mask], TRAIN.ratings[mask].astype(np.float64)
