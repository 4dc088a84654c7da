"""Rating metrics overall, per user, and sliced by user activity and novelty.

A user's *activity* is the number of ratings on that user's client before
scoring: the training ratings, plus (user-disjoint split) the support ratings
that reconstruct an unseen user. Buckets are half-open ranges of it, e.g.
edges (20, 50, 200) give `<20`, `20-49`, `50-199`, `>=200`.

A user is *seen* if the user took part in at least one training round (was
sampled, and so shaped the global model), *unseen* otherwise: every test user
of the user-disjoint split, and users the sampler never picked.

Under the item_cold_start split the scored ratings are also sliced by item:
*warm* items have training ratings, *cold* items none. In a cross-silo run
(--partition=silo) they are sliced by the user's *silo* too.

All metrics are example-weighted over the slice's scored ratings, like the
overall ones, so the slices of a partition recombine to the overall value.
"""

import collections
import dataclasses
from typing import Optional, Sequence

import numpy as np

from research.fedrec.evaluation import rating_metrics

DEFAULT_ACTIVITY_EDGES = (20, 50, 200)
SLICE_COLUMNS = ('slice_kind', 'slice', 'users', 'ratings') + (
    rating_metrics.METRIC_NAMES)


def bucket_names(edges: Sequence[int]) -> list[str]:
  """Names of the half-open activity buckets cut at `edges`."""
  edges = list(edges)
  if not edges:
    return ['all']
  names = [f'<{edges[0]}']
  names += [f'{a}-{b - 1}' for a, b in zip(edges[:-1], edges[1:])]
  return names + [f'>={edges[-1]}']


def validate_edges(edges: Sequence[int]) -> tuple[int, ...]:
  """Checks the edges increase strictly from >= 1."""
  edges = tuple(int(e) for e in edges)
  if any(e < 1 for e in edges) or any(
      b <= a for a, b in zip(edges[:-1], edges[1:])):
    raise ValueError(f'--activity_buckets={",".join(map(str, edges))} must be '
                     'strictly increasing positive counts, e.g. 20,50,200.')
  return edges


@dataclasses.dataclass(frozen=True)
class Report:
  """Overall metrics, slice rows and per-user rows of one evaluation."""

  overall: collections.OrderedDict
  slices: list[collections.OrderedDict]
  users: list[collections.OrderedDict]


def report(users: np.ndarray, activity: np.ndarray, seen: np.ndarray,
           query_users: np.ndarray, query_ratings: np.ndarray,
           predictions: np.ndarray,
           edges: Sequence[int] = DEFAULT_ACTIVITY_EDGES,
           query_items: Optional[np.ndarray] = None,
           cold_items: Sequence[int] = (),
           silos: Optional[np.ndarray] = None) -> Report:
  """Metrics of `predictions` for the scored ratings, overall and sliced.

  Args:
    users: Sorted indices of the evaluated users.
    activity: Per user, the ratings on the client before scoring.
    seen: Per user, whether the user took part in training.
    query_users: User index of each scored rating.
    query_ratings: The true ratings.
    predictions: The predicted ratings.
    edges: Activity bucket edges.
    query_items: Item index of each scored rating (for the item slices).
    cold_items: Items without training ratings (the item_cold_start split):
      rows `item` warm / cold are added when there are any.
    silos: Per user, its silo (a cross-silo run): rows `silo` 0, 1, ...
  """
  edges = validate_edges(edges)
  row = np.searchsorted(users, query_users)
  bucket_of_user = np.searchsorted(np.asarray(edges), activity, side='right')
  names = bucket_names(edges)

  def metrics_of(mask_users: np.ndarray, kind: str, name: str):
    mask = mask_users[row]
    values = rating_metrics.compute(query_ratings[mask], predictions[mask])
    return collections.OrderedDict(
        slice_kind=kind, slice=name, users=int(mask_users.sum()),
        ratings=int(mask.sum()), **values)

  rows = [metrics_of(np.ones(len(users), bool), 'all', 'all')]
  rows += [metrics_of(bucket_of_user == b, 'activity', name)
           for b, name in enumerate(names)]
  rows += [metrics_of(seen, 'participation', 'seen'),
           metrics_of(~seen, 'participation', 'unseen')]
  if silos is not None:
    rows += [metrics_of(silos == k, 'silo', str(k))
             for k in np.unique(silos)]
  if len(cold_items):  # pylint: disable=g-explicit-length-test
    cold = np.isin(query_items, cold_items)
    for name, mask in (('warm', ~cold), ('cold', cold)):
      rows.append(collections.OrderedDict(
          slice_kind='item', slice=name,
          users=int(np.unique(query_users[mask]).size),
          ratings=int(mask.sum()),
          **rating_metrics.compute(query_ratings[mask], predictions[mask])))

  # Per-user metrics as example-weighted sums over each user's ratings.
  counts = np.bincount(row, minlength=len(users))
  errors = np.asarray(predictions, np.float64) - np.asarray(query_ratings,
                                                            np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    mse = np.bincount(row, np.square(errors), len(users)) / counts
    mae = np.bincount(row, np.abs(errors), len(users)) / counts
    accuracy = np.bincount(
        row, np.abs(errors) <= rating_metrics.ACCURACY_TOLERANCE,
        len(users)) / counts
  per_user = [
      collections.OrderedDict(
          user=int(user), activity=int(activity[k]), seen=bool(seen[k]),
          ratings=int(counts[k]), bucket=names[bucket_of_user[k]],
          rmse=float(np.sqrt(mse[k])), mse=float(mse[k]), mae=float(mae[k]),
          rating_accuracy=float(accuracy[k]))
      for k, user in enumerate(users)]
  overall = collections.OrderedDict(
      (k, rows[0][k]) for k in ('users', 'ratings') + (
          rating_metrics.METRIC_NAMES))
  return Report(overall, rows, per_user)
