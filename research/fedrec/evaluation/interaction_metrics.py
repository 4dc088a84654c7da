"""Training metrics of implicit-feedback models: cross-entropy and accuracy.

Keras metrics (summed across clients by TFF, like `keras_metrics`) of a logit
against a label in {1 positive, 0 sampled negative}, example-weighted. They
accept every model's output: `[batch]` logits, `[batch, 2]` (logit, L2) of the
reconstruction layout, and U-AutoRec's `[batch, items]` logits with labels of
the same shape, where entries labelled -1 (neither) are left out. Ranking
quality is measured by `ranking.py`, not here.
"""

import tensorflow as tf

from research.fedrec.evaluation import keras_metrics

METRIC_NAMES = ('bce', 'binary_accuracy')


class _PerExampleMean(keras_metrics.InlineMean):
  """Mean over labelled examples of a per-example value of (label, logit)."""

  def _per_example(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def update_state(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    y_true = tf.convert_to_tensor(y_true)
    y_pred = tf.convert_to_tensor(y_pred)
    if y_true.shape.rank != 2 and y_pred.shape.rank == 2:
      y_pred = y_pred[:, 0]  # (logit, regularization) columns.
    labels = tf.reshape(tf.cast(y_true, self.dtype), [-1])
    logits = tf.reshape(tf.cast(y_pred, self.dtype), [-1])
    weights = tf.cast(labels >= 0, self.dtype)
    return super().update_state(
        self._per_example(tf.maximum(labels, 0.0), logits),
        sample_weight=weights)


class BinaryCrossEntropy(_PerExampleMean):

  def __init__(self, name: str = 'bce', dtype=tf.float32):
    super().__init__(name=name, dtype=dtype)

  def _per_example(self, labels, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels,
                                                   logits=logits)


class BinaryAccuracy(_PerExampleMean):
  """Fraction of examples whose logit has the label's sign (> 0 for 1)."""

  def __init__(self, name: str = 'binary_accuracy', dtype=tf.float32):
    super().__init__(name=name, dtype=dtype)

  def _per_example(self, labels, logits):
    return tf.cast(tf.equal(tf.cast(logits > 0, self.dtype), labels),
                   self.dtype)


def create_keras_metrics() -> list[tf.keras.metrics.Metric]:
  """Fresh Keras metrics named as in `METRIC_NAMES`."""
  return [BinaryCrossEntropy(), BinaryAccuracy()]
