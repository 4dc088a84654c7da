"""The Keras metrics a model reports while it trains, by feedback.

Explicit ratings: RMSE, MSE, MAE and rating accuracy (keras_metrics.py);
implicit feedback: BCE and accuracy on positives and sampled negatives
(interaction_metrics.py). The algorithms attach them to their TFF models;
models/ stays free of evaluation code.
"""

import tensorflow as tf

from research.fedrec.evaluation import interaction_metrics
from research.fedrec.evaluation import keras_metrics


def create_metrics(implicit: bool) -> list[tf.keras.metrics.Metric]:
  if implicit:
    return interaction_metrics.create_keras_metrics()
  return keras_metrics.create_keras_metrics()
