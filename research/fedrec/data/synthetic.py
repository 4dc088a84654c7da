"""A synthetic ratings corpus with known ground truth, MovieLens-shaped.

Each user u and item i have planted low-rank factors p_u, q_i (dimension `rank`)
and biases b_u, b_i. A rating is

    r_ui = clip(round(mu + b_u + b_i + p_u . q_i + eps), 1, 5),  eps ~ N(0, s^2)

Which items a user rates follows a popularity skew (Zipf-like item weights),
optionally tilted toward the items the user likes (`selection_affinity`: the
log-odds of choosing an item grow by that many standard deviations of p_u . q_i,
so interactions alone carry personal preference, as implicit feedback needs),
and how many follows a long-tailed (log-normal) activity distribution with a
floor of `min_ratings_per_user`, like MovieLens. Timestamps increase through
each user's history. Everything is fully determined by the seed.

Because the truth is known, `expected_ratings` gives the Bayes-optimal
prediction E[r_ui] (the rounding and clipping of the Gaussian integrated in
closed form), and `noise_floor_rmse` the RMSE that prediction attains: no model
can be expected to beat it, so a run can be judged against it.
"""

import dataclasses
from typing import Optional

import numpy as np
from scipy import special

from research.fedrec.data import ratings as ratings_lib

_MIN_RATING, _MAX_RATING = 1, 5
_EPOCH_START = 874_724_710  # The first ml-100k timestamp, for realism.


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Shape and seed of the synthetic corpus (defaults: about ML-100K)."""

  num_users: int = 943
  num_items: int = 1682
  num_ratings: int = 100_000
  rank: int = 8
  noise_stddev: float = 0.9
  global_mean: float = 3.4
  user_bias_stddev: float = 0.35
  item_bias_stddev: float = 0.45
  factor_stddev: float = 0.4  # Per coordinate of p_u and q_i.
  popularity_exponent: float = 0.9  # Zipf exponent of item weights.
  min_ratings_per_user: int = 20
  # 0: which items a user rates depends on popularity only (explicit default).
  selection_affinity: float = 0.0
  max_ratings_per_user: Optional[int] = None  # None: up to every item.
  seed: int = 0

  def __post_init__(self):
    if self.num_users < 1 or self.num_items < 2:
      raise ValueError('--synthetic_users must be >= 1 and --synthetic_items '
                       '>= 2.')
    if self.min_ratings_per_user > self.num_items:
      raise ValueError(f'The synthetic corpus cannot give each user '
                       f'{self.min_ratings_per_user} ratings with only '
                       f'{self.num_items} items.')
    if self.num_ratings < self.num_users * self.min_ratings_per_user:
      raise ValueError(
          f'--synthetic_ratings={self.num_ratings} is below users x minimum '
          f'({self.num_users} x {self.min_ratings_per_user}).')
    if (self.max_ratings_per_user is not None and
        not self.min_ratings_per_user <= self.max_ratings_per_user):
      raise ValueError('--synthetic_max_ratings must be >= '
                       '--synthetic_min_ratings.')
    if (self.max_ratings_per_user is not None and
        self.num_ratings > self.num_users * self.max_ratings_per_user):
      raise ValueError(f'--synthetic_ratings={self.num_ratings} exceeds '
                       'users x --synthetic_max_ratings.')
    if self.selection_affinity < 0:
      raise ValueError('--synthetic_selection_affinity must be >= 0.')
    if self.num_ratings > self.num_users * self.num_items:
      raise ValueError(f'--synthetic_ratings={self.num_ratings} exceeds '
                       'users x items.')


@dataclasses.dataclass(frozen=True)
class SyntheticCorpus:
  """The generated ratings and the truth they were drawn from."""

  config: SyntheticConfig
  ratings: ratings_lib.Ratings  # Raw ids: users 1..U, items 1..I.
  user_factors: np.ndarray  # [U, rank], row u-1 is raw user u.
  item_factors: np.ndarray  # [I, rank]
  user_biases: np.ndarray  # [U]
  item_biases: np.ndarray  # [I]

  def latent_means(self, raw_users: np.ndarray,
                   raw_items: np.ndarray) -> np.ndarray:
    """mu + b_u + b_i + p_u . q_i before noise, rounding and clipping."""
    u, i = np.asarray(raw_users) - 1, np.asarray(raw_items) - 1
    return (self.config.global_mean + self.user_biases[u] +
            self.item_biases[i] +
            np.einsum('nk,nk->n', self.user_factors[u], self.item_factors[i]))

  def expected_ratings(self, raw_users: np.ndarray,
                       raw_items: np.ndarray) -> np.ndarray:
    """E[r_ui]: the Bayes-optimal (minimum squared error) prediction."""
    mean = self.latent_means(raw_users, raw_items)
    s = self.config.noise_stddev
    # P(rating >= k) = P(mean + eps >= k - 0.5) for k = 2..5, so
    # E[r] = 1 + sum_k P(r >= k) (clipping puts all mass outside on 1 and 5).
    thresholds = np.arange(_MIN_RATING + 1, _MAX_RATING + 1) - 0.5
    z = (mean[:, None] - thresholds[None, :]) / (s * np.sqrt(2.0))
    return _MIN_RATING + (0.5 * (1.0 + special.erf(z))).sum(axis=1)

  def noise_floor_rmse(self, table: ratings_lib.Ratings) -> float:
    """RMSE of the true model's predictions on `table` (raw ids)."""
    if len(table) == 0:  # pylint: disable=g-explicit-length-test
      return float('nan')
    errors = self.expected_ratings(table.users, table.items) - table.ratings
    return float(np.sqrt(np.mean(np.square(errors))))


def generate(config: SyntheticConfig) -> SyntheticCorpus:
  """Draws a corpus; the same config always gives the same corpus."""
  rng = np.random.default_rng(config.seed)
  u, n, k = config.num_users, config.num_items, config.rank
  user_factors = rng.normal(0.0, config.factor_stddev, (u, k))
  item_factors = rng.normal(0.0, config.factor_stddev, (n, k))
  user_biases = rng.normal(0.0, config.user_bias_stddev, u)
  item_biases = rng.normal(0.0, config.item_bias_stddev, n)

  # Activity: log-normal shares of the ratings above the per-user floor.
  extra = config.num_ratings - u * config.min_ratings_per_user
  shares = rng.lognormal(0.0, 1.2, u)
  most = min(n, config.max_ratings_per_user or n)
  counts = config.min_ratings_per_user + _apportion(
      extra, shares, most - config.min_ratings_per_user)
  # Popularity: item weights ~ 1 / rank^a over a random permutation of items;
  # more popular items are also slightly better liked, as in MovieLens.
  popularity = np.empty(n)
  popularity[rng.permutation(n)] = 1.0 / np.arange(1, n + 1)**(
      config.popularity_exponent)
  item_biases += 0.15 * (np.log(popularity) - np.log(popularity).mean()) / (
      np.log(popularity).std() + 1e-12)
  log_weights = np.log(popularity)

  # Weighted sampling without replacement per user via Gumbel top-k, done in
  # blocks of users so memory stays O(block x items).
  users, items = [], []
  block = max(1, 2_000_000 // n)
  for start in range(0, u, block):
    stop = min(u, start + block)
    keys = log_weights[None, :] + rng.gumbel(size=(stop - start, n))
    if config.selection_affinity:
      affinity = user_factors[start:stop] @ item_factors.T
      keys += config.selection_affinity * affinity / (
          config.factor_stddev**2 * np.sqrt(k))
    order = np.argsort(-keys, axis=1)
    # Each user's first counts[user] items by key, row by row.
    taken = np.arange(n)[None, :] < counts[start:stop, None]
    users.append(np.repeat(np.arange(start, stop, dtype=np.int64),
                           counts[start:stop]))
    items.append(order[taken].astype(np.int64))
  users, items = np.concatenate(users), np.concatenate(items)

  latent = (config.global_mean + user_biases[users] + item_biases[items] +
            np.einsum('nk,nk->n', user_factors[users], item_factors[items]))
  noisy = latent + rng.normal(0.0, config.noise_stddev, latent.size)
  values = np.clip(np.round(noisy), _MIN_RATING, _MAX_RATING).astype(np.float32)

  # Timestamps: each user joins at a random time and rates in increasing order
  # with exponential gaps (mean one hour); the within-user order is random.
  joins = _EPOCH_START + rng.integers(0, 200 * 86_400, u)
  gaps = rng.exponential(3_600.0, users.size).astype(np.int64) + 1
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  cumulative = np.cumsum(gaps)
  offsets = cumulative - np.repeat(cumulative[starts] - gaps[starts], counts)
  permuted = np.concatenate([rng.permutation(c) for c in counts]) + np.repeat(
      starts, counts)
  stamps = joins[users] + offsets[permuted]

  table = ratings_lib.Ratings(users + 1, items + 1, values, stamps)
  return SyntheticCorpus(config, table, user_factors, item_factors,
                         user_biases, item_biases)


def _apportion(total: int, shares: np.ndarray, cap: int) -> np.ndarray:
  """Splits `total` into integers proportional to `shares`, each <= `cap`."""
  result = np.zeros(shares.size, np.int64)
  remaining = total
  active = np.ones(shares.size, dtype=bool)
  while remaining > 0 and active.any():
    weights = np.where(active, shares, 0.0)
    quota = np.floor(remaining * weights / weights.sum()).astype(np.int64)
    if quota.sum() == 0:  # Hand out the last few one at a time.
      quota[np.argsort(-weights)[:remaining]] = 1
      quota[~active] = 0
    quota = np.minimum(quota, cap - result)
    result += quota
    remaining -= int(quota.sum())
    active = result < cap
  return result


_TITLE_WORDS = (
    ('The', 'A', 'Last', 'Lost', 'Silent', 'Red', 'Midnight', 'Golden',
     'Broken', 'Hidden', 'Electric', 'Winter'),
    ('Harbor', 'Garden', 'Empire', 'Signal', 'River', 'Machine', 'Orchard',
     'Station', 'Mirror', 'Frontier', 'Letter', 'Voyage', 'Circus', 'Island'),
)


def generate_titles(num_items: int, seed: int = 0) -> list[str]:
  """Made-up movie titles for the synthetic items (raw id i -> entry i-1).

  Seeded and deterministic, so recommendations read like MovieLens's.
  """
  rng = np.random.default_rng([seed, 1])
  first = rng.integers(0, len(_TITLE_WORDS[0]), num_items)
  second = rng.integers(0, len(_TITLE_WORDS[1]), num_items)
  years = rng.integers(1950, 2000, num_items)
  return [f'{_TITLE_WORDS[0][a]} {_TITLE_WORDS[1][b]} #{i + 1} ({y})'
          for i, (a, b, y) in enumerate(zip(first, second, years))]
