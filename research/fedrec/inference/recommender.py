"""Top-K, cold-start and group recommendation from an exported model.

NumPy only (the export is loaded with TensorFlow, never TFF):

* A known user's vector is that user's row of the global user table (FedAvg,
  centralized) or, under Federated Reconstruction, reconstructed locally from
  all of the user's ratings, as the user's own device would.
* A new user (cold start) is reconstructed from the ratings given, with the
  trained item model frozen (what FedRecon is for). With no rating at all
  there is nothing to reconstruct from: items are ranked by the model's
  rating for an average user, b_i + g (zero user vector and bias), ties and
  models without biases by the number of training ratings (popularity).
* Group recommendation scores each candidate item from the members' predicted
  ratings: `average` (mean), `least_misery` (minimum), `most_pleasure`
  (maximum) or `borda` (each member ranks the candidates; an item gets, per
  member, the number of candidates that member ranks below it, tied items
  sharing the mean of their positions; points are summed).

Items a user (any group member) already rated are never recommended. Ranking
is by score, ties broken by the smaller item index, so results are
deterministic.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from research.fedrec.inference import export as export_lib
from research.fedrec.inference import reconstruction

GROUP_STRATEGIES = ('average', 'least_misery', 'most_pleasure', 'borda')


def rank(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
  """Indices of the top-k candidate items: score descending, index ascending."""
  index = np.flatnonzero(candidates)
  order = np.lexsort((index, -scores[index]))
  return index[order[:k]]


def _borda_points(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
  """Per item: candidates ranked strictly below it (ties share the mean)."""
  values = scores[candidates]
  order = np.sort(values)
  below = np.searchsorted(order, values, side='left')
  not_above = np.searchsorted(order, values, side='right')
  points = np.zeros(scores.shape, np.float64)
  points[candidates] = (below + not_above - 1) / 2.0
  return points


def group_scores(member_scores: np.ndarray, candidates: np.ndarray,
                 strategy: str) -> np.ndarray:
  """The group's score of every item from members' predictions [M, items]."""
  if strategy == 'average':
    return member_scores.mean(axis=0)
  if strategy == 'least_misery':
    return member_scores.min(axis=0)
  if strategy == 'most_pleasure':
    return member_scores.max(axis=0)
  if strategy == 'borda':
    return sum(_borda_points(s, candidates) for s in member_scores)
  raise ValueError(f'--group_strategy={strategy} is not one of '
                   f'{", ".join(GROUP_STRATEGIES)}.')


@dataclasses.dataclass(frozen=True)
class UserRatings:
  """A user's ratings as dense item indices (in the device's order)."""

  items: np.ndarray
  ratings: np.ndarray


class Recommender:
  """Scores items for known users, new users and groups."""

  def __init__(self, exported: export_lib.Export,
               settings: Optional[reconstruction.Settings] = None):
    self.exported = exported
    self.settings = settings or exported.settings

  @property
  def num_items(self) -> int:
    return self.exported.model.num_items

  def user_scores(self, user: int, history: UserRatings) -> np.ndarray:
    """Predicted ratings of known user `user` (dense index) for all items."""
    if self.exported.user_source == export_lib.USER_TABLE:
      return self.exported.model.score_all(self.exported.user_vectors[user],
                                           self.exported.user_biases[user])
    return self.new_user_scores(history)

  def new_user_scores(self, history: UserRatings) -> np.ndarray:
    """Predicted ratings after reconstructing a user from `history`.

    Raises:
      ValueError: `history` is empty (use `fallback_scores`).
    """
    if not len(history.items):  # pylint: disable=g-explicit-length-test
      raise ValueError('No ratings to reconstruct a user from.')
    vectors, biases = reconstruction.reconstruct(
        self.exported.model, [history.items], [history.ratings], self.settings)
    return self.exported.model.score_all(vectors[0], biases[0])

  def initial_scores(self) -> np.ndarray:
    """Predictions of a user before reconstruction (the initial vector)."""
    return self.exported.model.score_all(self.exported.model.initial_user_vector,
                                         0.0)

  def fallback_scores(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(ranking key, shown rating) for a user with no ratings.

    The key orders by b_i + g, then popularity; the shown rating is b_i + g,
    or None for a model without biases (ranked by popularity alone).
    """
    model = self.exported.model
    popularity = self.exported.item_train_counts.astype(np.float64)
    if not model.use_biases:
      return popularity, None
    average_user = (model.item_bias + np.float32(model.global_bias)).astype(
        np.float32)
    # Popularity as a tie-break below the float32 resolution of the bias.
    tie_break = popularity / (popularity.max() + 1.0) * 1e-9
    return average_user.astype(np.float64) + tie_break, average_user

  def recommend(self, scores: np.ndarray, exclude: Sequence[int],
                k: int) -> np.ndarray:
    """The top-k items by `scores` among items not in `exclude`."""
    candidates = np.ones(self.num_items, bool)
    candidates[np.asarray(exclude, np.int64)] = False
    return rank(scores, candidates, k)

  def recommend_group(self, member_scores: np.ndarray,
                      exclude: Sequence[int], k: int, strategy: str):
    """(top-k items, group scores) for a group's member predictions."""
    candidates = np.ones(self.num_items, bool)
    candidates[np.asarray(exclude, np.int64)] = False
    scores = group_scores(member_scores, candidates, strategy)
    return rank(scores, candidates, k), scores
