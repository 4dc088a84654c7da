"""How a group's members' predicted ratings combine into the group's score.

`average` (mean), `least_misery` (minimum), `most_pleasure` (maximum) or
`borda` (each member ranks the candidates; an item gets, per member, the number
of candidates that member ranks below it, tied items sharing the mean of their
positions; points are summed). NumPy only.
"""

import numpy as np

GROUP_STRATEGIES = ('average', 'least_misery', 'most_pleasure', 'borda')


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
