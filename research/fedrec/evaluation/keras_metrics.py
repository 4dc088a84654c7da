"""The rating metrics of `rating_metrics.py` as Keras metrics, for TFF.

TFF's federated training and evaluation sum the metrics' unfinalized states
across clients; each metric is example-weighted over all scored ratings, so a
round's value equals `rating_metrics.compute` over the pooled ratings.
"""

import types

import tensorflow as tf

from research.fedrec.evaluation import rating_metrics


class InlineMean(tf.keras.metrics.Mean):
  """A Keras `Mean` whose `update_state` traces inline into its caller.

  Keras wraps a custom metric's `update_state` in a `tf.function` of its own
  when the metric is created in graph mode, as TFF's client work creates it;
  TF's runtime then instantiates and optimizes that nested function again for
  every client of every round (about 0.8 s of a 100-client FedRecon round with
  four metrics). The subclasses' `update_state` is plain TF ops, so it is left
  unwrapped, as Keras leaves its built-in metrics; the ops are the same.
  """

  def __new__(cls, *args, **kwargs):
    metric = super().__new__(cls, *args, **kwargs)
    metric.update_state = types.MethodType(cls.update_state, metric)
    return metric


class _PerExampleMean(InlineMean):
  """Mean over all examples of a per-example value of (rating, prediction).

  Keras's own `MeanSquaredError` / `MeanAbsoluteError` metrics reduce a 1-D
  batch to one number per batch, which would weight batches, not examples.
  Predictions are [batch] ratings, or [batch, k] with the rating first.
  """

  def _per_example(self, errors: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def update_state(self, y_true, y_pred, sample_weight=None):
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank == 2:  # (rating, regularization) columns.
      y_pred = y_pred[:, 0]
    errors = (tf.reshape(tf.cast(y_pred, self.dtype), [-1]) -
              tf.reshape(tf.cast(y_true, self.dtype), [-1]))
    return super().update_state(self._per_example(errors),
                                sample_weight=sample_weight)


class MeanSquaredError(_PerExampleMean):

  def __init__(self, name: str = 'mse', dtype=tf.float32):
    super().__init__(name=name, dtype=dtype)

  def _per_example(self, errors):
    return tf.square(errors)


class RootMeanSquaredError(MeanSquaredError):
  """The square root of the example-weighted mean squared error."""

  def __init__(self, name: str = 'rmse', dtype=tf.float32):
    super().__init__(name=name, dtype=dtype)

  def result(self):
    return tf.sqrt(super().result())


class MeanAbsoluteError(_PerExampleMean):

  def __init__(self, name: str = 'mae', dtype=tf.float32):
    super().__init__(name=name, dtype=dtype)

  def _per_example(self, errors):
    return tf.abs(errors)


class RatingAccuracy(_PerExampleMean):
  """Fraction of predictions with |prediction - rating| <= 0.5."""

  def __init__(self, name: str = 'rating_accuracy', dtype=tf.float32):
    super().__init__(name=name, dtype=dtype)

  def _per_example(self, errors):
    return tf.cast(tf.abs(errors) <= rating_metrics.ACCURACY_TOLERANCE,
                   self.dtype)


def create_keras_metrics() -> list[tf.keras.metrics.Metric]:
  """Fresh example-weighted metrics, named as `rating_metrics.METRIC_NAMES`."""
  return [
      RootMeanSquaredError(),
      MeanSquaredError(),
      MeanAbsoluteError(),
      RatingAccuracy(),
  ]


