"""A bandit environment over a ratings corpus (the standard offline protocol).

Online recommendation is simulated semi-synthetically from ratings, so that
every reward is known: each round a seeded sample of users is drawn; each
sampled user is shown up to `num_candidates` items drawn from the items that
user rated and has not been given yet (the user's pool), the policy picks
one (or a slate of `slate_size`), the reward of each is 1 if the user's
rating of it is at least `reward_threshold` (else 0), and the picked items
leave the user's pool. The best rewards among the shown candidates are the
per-user oracle's, so a slate's regret is their sum minus its own.

Item contexts must not come from the ratings the bandit is evaluated on.
The users are split once (by seed) into context users and bandit users, and
only bandit users are ever sampled. A context is either derived from the
context users' likes (`item_contexts`, a truncated SVD; `--item_contexts=
likes`) or from the corpus's item side information (`feature_contexts`,
the principal components of genres and/or the release year;
`--item_contexts=genres,year`), which no user's ratings enter. Each context
is [features, bias] with norm <= 1, the bound a federated linear bandit's
per-user statistics rely on (`algorithms/bandit_policies.py`).

NumPy only; seeded: the same settings give the same users, candidates and
contexts.
"""

import dataclasses
import math

import numpy as np

from research.fedrec.data import ratings as ratings_lib
from research.fedrec.data import side_info

LIKES = 'likes'
# What item contexts may be made of: the context users' likes, or side
# information (data/side_info.py's item features).
CONTEXT_SOURCES = (LIKES,) + side_info.ITEM_FEATURES

# Stream tags of the seeded generators (so no two draws share a stream).
_USERS_STREAM, _CANDIDATES_STREAM, _SPLIT_STREAM = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class EnvironmentConfig:
  """The bandit protocol's settings (flags of bandit.py)."""

  num_candidates: int = 10
  slate_size: int = 1  # Items given to a user per round, of its candidates.
  users_per_round: int = 50
  reward_threshold: float = 4.0
  context_dim: int = 8
  context_user_fraction: float = 0.5
  item_contexts: tuple[str, ...] = (LIKES,)
  seed: int = 0

  @property
  def from_side_info(self) -> bool:
    return self.item_contexts != (LIKES,)

  def __post_init__(self):
    if self.num_candidates < 2:
      raise ValueError(f'--num_candidates={self.num_candidates}: expected '
                       '>= 2 (a choice needs two items).')
    if not 1 <= self.slate_size < self.num_candidates:
      raise ValueError(f'--slate_size={self.slate_size}: expected 1 to '
                       f'--num_candidates - 1 ({self.num_candidates - 1}).')
    if self.users_per_round < 1:
      raise ValueError(f'--users_per_round={self.users_per_round}: expected '
                       '>= 1.')
    if self.context_dim < 2:
      raise ValueError(f'--context_dim={self.context_dim}: expected >= 2 '
                       '(features and the bias).')
    sources = self.item_contexts
    if (not sources or any(s not in CONTEXT_SOURCES for s in sources) or
        (LIKES in sources and len(sources) > 1) or
        len(set(sources)) < len(sources)):
      raise ValueError(
          f'--item_contexts={",".join(sources)}: expected {LIKES} alone, or '
          f'side information among {", ".join(side_info.ITEM_FEATURES)}.')
    if not 0 < self.context_user_fraction < 1:
      raise ValueError('--context_user_fraction='
                       f'{self.context_user_fraction:g}: expected in (0, 1).')


def split_users(num_users: int, config: EnvironmentConfig):
  """(context users, bandit users): disjoint sorted ids, both non-empty."""
  order = np.random.default_rng([config.seed, _SPLIT_STREAM]).permutation(
      num_users)
  count = int(round(config.context_user_fraction * num_users))
  if not 0 < count < num_users:
    raise ValueError(
        f'--context_user_fraction={config.context_user_fraction:g} of '
        f'{num_users} users leaves no context or no bandit users.')
  return np.sort(order[:count]), np.sort(order[count:])


def item_contexts(table: ratings_lib.Ratings, context_users: np.ndarray,
                  num_items: int, config: EnvironmentConfig) -> np.ndarray:
  """[num_items, context_dim] contexts from the context users' likes.

  The liked matrix L (context users x items, 1 where the rating is at least
  the threshold) is factorized, L = U S V^T; an item's features are its
  row of V S over the top `context_dim - 1` singular values (see
  `_contexts`). An item no context user liked has only the bias.
  """
  rows = np.isin(table.users, context_users) & (
      table.ratings >= config.reward_threshold)
  liked = np.zeros((len(context_users), num_items))
  # `context_users` is sorted (`split_users`): a user's row by search.
  liked[np.searchsorted(context_users, table.users[rows]),
        table.items[rows]] = 1.0
  return _contexts(liked, config.context_dim)


def feature_contexts(features: np.ndarray,
                     config: EnvironmentConfig) -> np.ndarray:
  """[items, context_dim] contexts from item side-information features.

  The principal components of the features (`side_info.item_features`,
  centred over the items): an item's coordinates on the top
  `context_dim - 1` of them (see `_contexts`).
  """
  centred = features - features.mean(axis=0, keepdims=True)
  return _contexts(centred.T, config.context_dim)


def _contexts(matrix: np.ndarray, context_dim: int) -> np.ndarray:
  """Items' [features, bias] from `matrix` (anything x items).

  With `matrix` = U S V^T, an item's features are its row of V S over the
  top `context_dim - 1` singular values (zeros beyond the rank), each
  vector's sign fixed by its largest entry, all scaled by one factor so
  that the longest has norm 1/sqrt(2), followed by a bias feature
  1/sqrt(2): every context has norm <= 1.
  """
  num_items = matrix.shape[1]
  features = side_info.principal_coordinates(matrix, context_dim - 1)
  longest = np.linalg.norm(features, axis=1).max()
  half = 1.0 / math.sqrt(2.0)
  if longest > 0:
    features *= half / longest
  return np.concatenate([features, np.full((num_items, 1), half)],
                        axis=1).astype(np.float32)


class UserPools:
  """Each bandit user's items not yet picked, and their rewards."""

  def __init__(self, table: ratings_lib.Ratings, users: np.ndarray,
               config: EnvironmentConfig):
    self._config = config
    self._items, self._rewards, self._left = {}, {}, {}
    mine = np.isin(table.users, users)
    order = np.lexsort((table.items[mine], table.users[mine]))
    by_user = table.users[mine][order]
    items = table.items[mine][order]
    rewards = (table.ratings[mine][order] >=
               config.reward_threshold).astype(np.float32)
    starts = np.flatnonzero(np.r_[True, by_user[1:] != by_user[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(by_user)]):
      user = int(by_user[start])
      self._items[user] = items[start:end]
      self._rewards[user] = rewards[start:end]
      self._left[user] = np.ones(end - start, bool)

  def all_rewards(self):
    """(items, rewards) of every rating of every user of the pools."""
    users = sorted(self._items)
    return (np.concatenate([self._items[u] for u in users]),
            np.concatenate([self._rewards[u] for u in users]))

  def given(self):
    """(users, items): every item picked for a user so far, by user."""
    users = sorted(self._items)
    picked = [self._items[u][~self._left[u]] for u in users]
    return (np.repeat(np.array(users, np.int64), [len(p) for p in picked]),
            np.concatenate(picked or [np.zeros(0, np.int64)]).astype(
                np.int64))

  def candidates(self, user: int, round_num: int):
    """(items, rewards) shown to `user` this round: empty if none are left.

    Up to `num_candidates` of the user's remaining items, drawn from a
    generator seeded by (seed, round, user): the same draw for every policy
    whose pool of this user is the same.
    """
    left = self._left.get(user)
    if left is None or not left.any():
      return np.zeros(0, np.int64), np.zeros(0, np.float32)
    remaining = np.flatnonzero(left)
    rng = np.random.default_rng([self._config.seed, _CANDIDATES_STREAM,
                                 round_num, user])
    shown = rng.permutation(remaining)[:self._config.num_candidates]
    return self._items[user][shown], self._rewards[user][shown]

  def remove(self, user: int, item: int) -> None:
    """`item` leaves `user`'s pool (it was picked)."""
    position = np.searchsorted(self._items[user], item)
    self._left[user][position] = False


def check_users_per_round(num_bandit_users: int,
                          config: EnvironmentConfig) -> None:
  """Raises ValueError (one line) if a round asks for more users than exist."""
  if config.users_per_round > num_bandit_users:
    raise ValueError(f'--users_per_round={config.users_per_round} exceeds '
                     f'the {num_bandit_users} bandit users.')


def sample_users(bandit_users: np.ndarray, round_num: int,
                 config: EnvironmentConfig) -> np.ndarray:
  """The round's users: `users_per_round` of the bandit users, uniformly
  without replacement (seeded by seed and round), in draw order."""
  check_users_per_round(len(bandit_users), config)
  rng = np.random.default_rng([config.seed, _USERS_STREAM, round_num])
  return rng.choice(bandit_users, config.users_per_round, replace=False)
