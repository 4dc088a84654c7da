"""Cross-silo partitions: which store (silo) each user belongs to.

Under `--partition=silo` a few organisations take part instead of single
users: silo k holds the ratings of the users assigned to it, trains on them
every round and never shares them. Which users a silo holds:

* `--silo_key=random`: a seeded random split of the users; equal shares, or
  with `--silo_skew=alpha` > 0 shares drawn from Dirichlet(alpha, ..., alpha)
  (small alpha: a few large stores and many small ones), every silo at least
  one user.
* `--silo_key=<field>`: by a user attribute (data/side_info.UserInfo: for
  MovieLens `age`, `gender`, `occupation`, `zip`, plus the derived
  `zip_region`, the zip code's first character, and `age_band`, ml-1m's age
  bands; for atomic files any field of NAME.user). The field's distinct
  values are dealt to the silos whole, largest first, each to the silo with
  the fewest users so far (ties: the lower silo), so that a region or an
  occupation is never split across stores; a user with no value forms the
  value ''.

The assignment depends only on the users, the settings and the seed.
"""

import dataclasses
from typing import Optional

import numpy as np

PARTITIONS = ('user', 'silo')
RANDOM = 'random'
WEIGHTINGS = ('ratings', 'uniform')
DP_UNITS = ('user', 'silo')
# --sparsify: which item rows a silo sends (algorithms/sparse_uploads.py).
SPARSIFY = ('none', 'topk', 'randomk')
# ml-1m's age bands (its users.dat codes), applied to ml-100k's ages.
AGE_BANDS = ((18, 'Under 18'), (25, '18-24'), (35, '25-34'), (45, '35-44'),
             (50, '45-49'), (56, '50-55'), (1000, '56+'))


@dataclasses.dataclass(frozen=True)
class SiloConfig:
  """`--partition`, `--num_silos`, `--silo_key`, `--silo_skew`,
  `--silo_weighting`, `--dp_unit`, `--sparsify`, `--sparsify_fraction`,
  `--error_feedback`."""

  partition: str = 'user'
  num_silos: int = 0
  key: str = RANDOM
  skew: float = 0.0  # Dirichlet concentration (random key); 0: equal shares.
  # How the server weighs the silos: by their training ratings, or equally.
  weighting: str = 'ratings'
  # Under DP, whom a release protects: any one user (each user's update
  # clipped inside its silo), or any one silo (each silo's update clipped).
  dp_unit: str = 'user'
  # Each silo sends the top-k rows (by norm) or k random rows of each item
  # table of its update, k = ceil(fraction x rows); with error feedback it
  # keeps the rest for its next round.
  sparsify: str = 'none'
  sparsify_fraction: float = 0.1
  error_feedback: bool = True

  def __post_init__(self):
    if self.partition not in PARTITIONS:
      raise ValueError(f'--partition={self.partition}: expected one of '
                       f'{", ".join(PARTITIONS)}.')
    if not self.enabled:
      changed = [f'--{flag}' for flag, value, default in (
          ('num_silos', self.num_silos, 0), ('silo_key', self.key, RANDOM),
          ('silo_skew', self.skew, 0.0),
          ('silo_weighting', self.weighting, 'ratings'),
          ('dp_unit', self.dp_unit, 'user'),
          ('sparsify', self.sparsify, 'none'),
          ('sparsify_fraction', self.sparsify_fraction, 0.1),
          ('error_feedback', self.error_feedback, True)) if value != default]
      if changed:
        raise ValueError(f'{", ".join(changed)} need --partition=silo.')
      return
    if self.num_silos < 2:
      raise ValueError(f'--num_silos={self.num_silos}: --partition=silo needs '
                       'at least 2 silos.')
    if not self.key:
      raise ValueError('--silo_key is empty: expected random or a user field.')
    if not self.skew >= 0:
      raise ValueError(f'--silo_skew={self.skew:g}: expected >= 0 (0: equal '
                       'shares).')
    if self.skew and self.key != RANDOM:
      raise ValueError(f'--silo_skew applies to --silo_key={RANDOM}; '
                       f'--silo_key={self.key} keeps each value whole.')
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f'--silo_weighting={self.weighting}: expected one of '
                       f'{", ".join(WEIGHTINGS)}.')
    if self.dp_unit not in DP_UNITS:
      raise ValueError(f'--dp_unit={self.dp_unit}: expected one of '
                       f'{", ".join(DP_UNITS)}.')
    if self.sparsify not in SPARSIFY:
      raise ValueError(f'--sparsify={self.sparsify}: expected one of '
                       f'{", ".join(SPARSIFY)}.')
    if not 0.0 < self.sparsify_fraction <= 1.0:
      raise ValueError(f'--sparsify_fraction={self.sparsify_fraction:g}: '
                       'expected a share of rows in (0, 1].')
    if self.sparsify == 'none' and (self.sparsify_fraction != 0.1 or
                                    not self.error_feedback):
      raise ValueError('--sparsify_fraction and --error_feedback need '
                       '--sparsify=topk or randomk.')

  @property
  def enabled(self) -> bool:
    return self.partition == 'silo'

  @property
  def needs_user_info(self) -> bool:
    return self.enabled and self.key != RANDOM


def user_values(fields: dict[str, np.ndarray], key: str,
                where: str = 'the user file') -> np.ndarray:
  """Each user's value of `key` (a field, or a derived one) as strings.

  Raises:
    ValueError: no such field (one line naming the fields there are).
  """
  zip_field = next((z for z in ('zip', 'zip_code') if z in fields), None)
  if key == 'zip_region' and zip_field:
    return np.array([z.strip()[:1].upper() for z in fields[zip_field]])
  if key == 'age_band' and 'age' in fields:
    return np.array([_age_band(a) for a in fields['age']])
  if key not in fields:
    derived = [d for d, base in (('zip_region', zip_field),
                                 ('age_band', 'age')) if base in fields]
    raise ValueError(f'--silo_key={key}: {where} has no such field (it has '
                     f'{", ".join(sorted(fields) + derived)}; or random).')
  return np.asarray(fields[key]).astype(str)


def _age_band(age: str) -> str:
  """ml-100k's age in years as ml-1m's band (ml-1m's band unchanged)."""
  if not age.strip().isdigit():
    return age
  years = int(age)
  return next(band for bound, band in AGE_BANDS if years < bound)


def assign(num_users: int, config: SiloConfig, seed: int,
           values: Optional[np.ndarray] = None) -> np.ndarray:
  """Each user's silo, [num_users] in 0..num_silos-1.

  Args:
    num_users: users (dense ids 0..num_users-1).
    config: the partition's settings (`enabled`).
    seed: the run's seed (random keys).
    values: each user's value of the key (`user_values`), for a field key.

  Raises:
    ValueError: fewer users or distinct values than silos (one line).
  """
  k = config.num_silos
  if config.key == RANDOM:
    if num_users < k:
      raise ValueError(f'--num_silos={k}: only {num_users} users to share '
                       'out.')
    rng = np.random.default_rng([seed, 0x5110])
    if config.skew:
      shares = rng.dirichlet(np.full(k, config.skew))
      sizes = 1 + rng.multinomial(num_users - k, shares)
    else:
      sizes = np.full(k, num_users // k) + (np.arange(k) < num_users % k)
    silo = np.repeat(np.arange(k), sizes)
    return silo[np.argsort(rng.permutation(num_users), kind='stable')]
  distinct, inverse, counts = np.unique(values, return_inverse=True,
                                        return_counts=True)
  if len(distinct) < k:
    raise ValueError(f'--silo_key={config.key} has {len(distinct)} distinct '
                     f'values ({", ".join(map(repr, distinct[:12]))}), fewer '
                     f'than --num_silos={k}.')
  load = np.zeros(k, np.int64)
  silo_of_value = np.zeros(len(distinct), np.int64)
  for v in sorted(range(len(distinct)), key=lambda v: (-counts[v], v)):
    silo_of_value[v] = int(np.argmin(load))
    load[silo_of_value[v]] += counts[v]
  return silo_of_value[inverse]
