"""Rating-prediction metrics: RMSE, MSE, MAE and rating accuracy.

Rating accuracy is the fraction of predictions within 0.5 of the true rating,
the metric of Federated Reconstruction (Singhal et al., NeurIPS 2021) and of
TFF's "Federated Reconstruction for Matrix Factorization" tutorial.

This module is the NumPy function over pooled arrays (for the centralized
baseline and server-side evaluation; no TensorFlow). The same metrics as Keras
metrics, which TFF sums across clients, are in `keras_metrics.py`. Both are
example-weighted over all scored ratings, so they agree.
"""

import collections

import numpy as np

METRIC_NAMES = ('rmse', 'mse', 'mae', 'rating_accuracy')
ACCURACY_TOLERANCE = 0.5


def compute(ratings: np.ndarray,
            predictions: np.ndarray) -> collections.OrderedDict:
  """The metrics of `predictions` against `ratings` (float64 arithmetic)."""
  errors = np.asarray(predictions, np.float64) - np.asarray(ratings, np.float64)
  if errors.size == 0:
    return collections.OrderedDict((n, float('nan')) for n in METRIC_NAMES)
  mse = float(np.mean(np.square(errors)))
  return collections.OrderedDict(
      rmse=float(np.sqrt(mse)),
      mse=mse,
      mae=float(np.mean(np.abs(errors))),
      rating_accuracy=float(np.mean(np.abs(errors) <= ACCURACY_TOLERANCE)),
  )


def compute_with_item_slices(ratings: np.ndarray, predictions: np.ndarray,
                             items: np.ndarray, cold_items: np.ndarray
                             ) -> collections.OrderedDict:
  """`compute`, plus `warm_items/<metric>` and `cold_items/<metric>`.

  The slices are added when there are cold items (the item_cold_start
  split): the ratings of items with training ratings and of items without.
  """
  metrics = compute(ratings, predictions)
  if not len(cold_items):  # pylint: disable=g-explicit-length-test
    return metrics
  cold = np.isin(items, cold_items)
  ratings, predictions = np.asarray(ratings), np.asarray(predictions)
  for name, mask in (('warm_items', ~cold), ('cold_items', cold)):
    for metric, value in compute(ratings[mask], predictions[mask]).items():
      metrics[f'{name}/{metric}'] = value
  return metrics
