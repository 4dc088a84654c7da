"""Loads the corpus a run asks for: files or synthetic, validated and remapped.

`load_corpus` is the single entry point from a `DataConfig` to a `Corpus` of
dense-id ratings plus the maps back to raw ids (and, for the synthetic corpus,
the ground truth, which gives the noise floor).
"""

import dataclasses
import enum
import hashlib
from typing import Optional

import numpy as np

from research.fedrec.data import atomic
from research.fedrec.data import movielens
from research.fedrec.data import ratings as ratings_lib
from research.fedrec.data import side_info
from research.fedrec.data import synthetic

SYNTHETIC = 'synthetic'
CSV = 'csv'
ATOMIC = 'atomic'  # RecBole atomic files (data/atomic.py).
MOVIELENS_AUTO = 'movielens'
DATASET_NAMES = (SYNTHETIC, MOVIELENS_AUTO, CSV, ATOMIC) + (
    movielens.MOVIELENS_NAMES)


class Feedback(enum.Enum):
  """How ratings are read: as ratings, or as interactions (positives)."""

  EXPLICIT = 'explicit'
  IMPLICIT = 'implicit'


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which corpus to load and how to filter it."""

  dataset: str = SYNTHETIC
  data_dir: Optional[str] = None
  min_ratings_per_user: int = 1
  max_users: Optional[int] = None
  # Scale of a user's own CSV or atomic files as (min, max, step); MovieLens
  # knows its own.
  rating_scale: tuple[float, float, float] = (1.0, 5.0, 1.0)
  duplicates: ratings_lib.DuplicatePolicy = ratings_lib.DuplicatePolicy.LATEST
  synthetic_config: synthetic.SyntheticConfig = dataclasses.field(
      default_factory=synthetic.SyntheticConfig)
  # Implicit feedback: every kept rating becomes a positive interaction (1.0);
  # with a threshold, ratings below it are dropped before filtering and
  # splitting (they count as no interaction at all).
  feedback: Feedback = Feedback.EXPLICIT
  implicit_threshold: Optional[float] = None

  @property
  def implicit(self) -> bool:
    return self.feedback == Feedback.IMPLICIT

  def __post_init__(self):
    if self.dataset not in DATASET_NAMES:
      raise ValueError(f'--dataset={self.dataset} is not one of '
                       f'{", ".join(DATASET_NAMES)}.')
    if self.dataset != SYNTHETIC and not self.data_dir:
      raise ValueError(f'--dataset={self.dataset} needs --data_dir (the '
                       'folder holding the corpus files).')
    if self.min_ratings_per_user < 1:
      raise ValueError('--min_ratings_per_user must be >= 1.')
    if self.max_users is not None and self.max_users < 1:
      raise ValueError('--max_users must be >= 1.')
    low, high, step = self.rating_scale
    if not (low < high and step > 0):
      raise ValueError(f'--rating_scale={low:g},{high:g},{step:g} must be '
                       'min,max,step with min < max and step > 0.')
    if self.implicit_threshold is not None and not self.implicit:
      raise ValueError('--implicit_threshold needs --feedback=implicit.')


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A validated corpus with dense ids."""

  name: str
  ratings: ratings_lib.Ratings
  id_maps: ratings_lib.IdMaps
  truth: Optional[synthetic.SyntheticCorpus] = None
  implicit: bool = False  # Ratings are interactions (all 1.0).

  @property
  def num_users(self) -> int:
    return self.id_maps.num_users

  @property
  def num_items(self) -> int:
    return self.id_maps.num_items

  def content_hash(self) -> str:
    """A SHA-256 of the ratings and of the raw ids behind the dense ones.

    Renaming an item (same counts, other ids) changes it: an export is only
    used with the corpus it was trained on.
    """
    digest = hashlib.sha256(self.ratings.content_hash().encode())
    for raw in (self.id_maps.raw_users, self.id_maps.raw_items):
      digest.update(b'\x00' + '\x00'.join(map(str, raw.tolist())).encode())
    return digest.hexdigest()

  def titles(self, config: DataConfig) -> list[str]:
    """Titles of the dense item ids ('' where the corpus ships none)."""
    if self.truth is not None:
      names = synthetic.generate_titles(self.truth.config.num_items,
                                        self.truth.config.seed)
      return [names[int(i) - 1] for i in self.id_maps.raw_items]
    if config.dataset == ATOMIC:
      known = atomic.read_titles(config.data_dir)
      return [known.get(i, '') for i in self.id_maps.raw_items.tolist()]
    if self.name not in movielens.MOVIELENS_NAMES:
      return [''] * self.num_items
    known = movielens.read_titles(self.name, config.data_dir)
    return [known.get(int(i), '') for i in self.id_maps.raw_items]

  def item_info(self, config: DataConfig,
                genome: bool = False) -> side_info.ItemInfo:
    """Side information of the dense item ids (rows in dense order).

    With `genome`, also the tag genome (MovieLens ml-20m and later:
    genome-scores.csv; `side_info.ItemInfo.with_genome`).

    Raises:
      ratings_lib.DataError: the corpus ships no item file (a user's CSV,
        an atomic dataset without NAME.item) or it is malformed; with
        `genome`, no genome-scores.csv or a malformed one.
    """
    info = self._item_info(config).aligned(self.id_maps.raw_items)
    if not genome:
      return info
    if self.truth is not None or config.dataset == ATOMIC:
      raise ratings_lib.DataError(
          f'--item_features=genome: {info.source} comes with no tag genome '
          '(genome-scores.csv ships with MovieLens ml-20m and later).')
    movies, scores = side_info.read_movielens_genome(self.name,
                                                     config.data_dir)
    return info.with_genome(movies, scores, f'{config.data_dir}: '
                            'genome-scores.csv')

  def _item_info(self, config: DataConfig) -> side_info.ItemInfo:
    if self.truth is not None:
      truth = self.truth.config
      info = side_info.synthetic_items(
          self.truth.item_factors,
          synthetic.generate_titles(truth.num_items, truth.seed),
          truth.factor_stddev)
    elif config.dataset == ATOMIC:
      path = atomic.find_files(config.data_dir).get('item')
      if path is None:
        raise ratings_lib.DataError(
            f'--data_dir={config.data_dir}: no NAME.item file (item side '
            'information of an atomic dataset).')
      info = side_info.read_atomic_items(path)
    elif self.name in movielens.MOVIELENS_NAMES:
      info = side_info.read_movielens_items(self.name, config.data_dir)
    else:
      raise ratings_lib.DataError(
          f'--dataset={config.dataset}: a ratings CSV carries no item side '
          'information (use MovieLens files or RecBole atomic files).')
    return info

  def has_user_info(self, config: DataConfig) -> bool:
    """Whether the corpus has a user file (`user_info` reads it)."""
    if config.dataset == ATOMIC:
      return atomic.find_files(config.data_dir).get('user') is not None
    return (self.name in movielens.MOVIELENS_NAMES and
            side_info.movielens_user_file(self.name, config.data_dir)
            is not None)

  def user_info(self, config: DataConfig) -> side_info.UserInfo:
    """User attributes of the dense user ids (rows in dense order).

    Raises:
      ratings_lib.DataError: the corpus has no user file or it is malformed.
    """
    if config.dataset == ATOMIC:
      path = atomic.find_files(config.data_dir).get('user')
      if path is None:
        raise ratings_lib.DataError(
            f'--data_dir={config.data_dir}: no NAME.user file (user side '
            'information of an atomic dataset).')
      info = side_info.read_atomic_users(path)
    elif self.name in movielens.MOVIELENS_NAMES:
      info = side_info.read_movielens_users(self.name, config.data_dir)
    else:
      raise ratings_lib.DataError(
          f'--dataset={config.dataset}: this corpus has no user '
          'demographics (ml-100k, ml-1m and atomic .user files do).')
    return info.aligned(self.id_maps.raw_users)

  def rating_scale(self, config: DataConfig) -> ratings_lib.RatingScale:
    """The scale the ratings of this corpus are on."""
    if self.name in movielens.FORMATS:
      return movielens.FORMATS[self.name].scale
    if self.truth is not None:
      return ratings_lib.STARS_1_TO_5
    return ratings_lib.RatingScale(*config.rating_scale)

  def noise_floor_rmse(self, table: ratings_lib.Ratings) -> Optional[float]:
    """RMSE of the true model on `table` (dense ids); None for real data."""
    if self.truth is None or self.implicit:
      return None
    raw = ratings_lib.Ratings(self.id_maps.raw_users[table.users],
                              self.id_maps.raw_items[table.items],
                              table.ratings, table.timestamps)
    return self.truth.noise_floor_rmse(raw)


def load_corpus(config: DataConfig) -> Corpus:
  """Reads, validates, filters and remaps the configured corpus.

  Raises:
    ratings_lib.DataError: the files are missing or malformed, or nothing is
      left after filtering; the message names the file/line or flag.
  """
  truth = None
  name = config.dataset
  if name == SYNTHETIC:
    truth = synthetic.generate(config.synthetic_config)
    table = truth.ratings
  elif name == CSV:
    table = movielens.read_csv(config.data_dir,
                               ratings_lib.RatingScale(*config.rating_scale),
                               config.duplicates)
  elif name == ATOMIC:
    name = f'{atomic.dataset_name(config.data_dir)} (RecBole atomic)'
    table = atomic.read_interactions(
        config.data_dir, ratings_lib.RatingScale(*config.rating_scale),
        config.implicit, config.duplicates)
  else:
    if name == MOVIELENS_AUTO:
      name = movielens.detect_corpus(config.data_dir)
    table = movielens.read_movielens(name, config.data_dir,
                                     config.duplicates)
  if config.implicit:
    table = to_implicit(table, config.implicit_threshold)
  table = ratings_lib.filter_min_ratings(table, config.min_ratings_per_user)
  if len(table) == 0:  # pylint: disable=g-explicit-length-test
    raise ratings_lib.DataError(
        f'--min_ratings_per_user={config.min_ratings_per_user}: no user of '
        f'{name} has that many ratings.')
  dense, id_maps = ratings_lib.remap_ids(table, config.max_users)
  if np.unique(dense.users).size < 2:
    raise ratings_lib.DataError(f'{name}: a federated run needs at least 2 '
                                'users.')
  return Corpus(name, dense, id_maps, truth, config.implicit)


def to_implicit(table: ratings_lib.Ratings,
                threshold: Optional[float]) -> ratings_lib.Ratings:
  """Interactions: ratings >= `threshold` (all if None), each as 1.0.

  Raises:
    ratings_lib.DataError: no rating reaches the threshold.
  """
  if threshold is not None:
    table = table.take(table.ratings >= threshold)
    if len(table) == 0:  # pylint: disable=g-explicit-length-test
      raise ratings_lib.DataError(
          f'--implicit_threshold={threshold:g}: no rating reaches it.')
  return ratings_lib.Ratings(table.users, table.items,
                             np.ones(len(table), np.float32), table.timestamps)
