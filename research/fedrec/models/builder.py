"""From a model config to Keras models, losses and what the model is.

Each function asks the config's registered model (models/registry.py), so
algorithms, training and inference code call these and never branch on the
model themselves. TensorFlow only (no TFF), so exported models load without
TFF; the algorithms wrap these models for TFF.
"""

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from research.fedrec.models import registry

# A registered model's config (a frozen dataclass; models/registry.py).
ModelConfig = Any


def check_supported(config, implicit: bool, reconstruction: bool) -> None:
  """Raises ValueError (one line) for a model the setting cannot train."""
  model = registry.of(config)
  if not implicit and registry.EXPLICIT not in model.feedbacks:
    raise ValueError(f'--model={model.name} learns from implicit feedback: '
                     'add --feedback=implicit.')
  if reconstruction and not model.has_user_part:
    raise ValueError(f'--model={model.name} has no user-specific part to '
                     'reconstruct: use --algorithm=fedavg or centralized.')


def has_user_part(config) -> bool:
  return registry.of(config).has_user_part


def user_vector_inputs(config) -> bool:
  """Whether one example is a user's multi-hot vector (else a rated pair)."""
  return registry.of(config).inputs == registry.Inputs.USER_VECTORS


def create_keras_model(config, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False
                       ) -> registry.ModelLayers:
  """The Keras model; `num_users=None` gives the reconstruction layout.

  With `regularization_output`, the table layout outputs (score,
  regularization) columns, as the reconstruction layout always does, instead
  of adding the regularization with `add_loss` (see mf.py).
  """
  return registry.of(config).create_keras_model(
      config, num_items, num_users, regularization_output)


def initial_user_vectors(config, num_items: int) -> dict[str, np.ndarray]:
  """Each user layer's initial vector, where every reconstruction starts."""
  layers = create_keras_model(config, num_items).user_layers
  return {layer.name: layer.get_weights()[0][0] for layer in layers}


def create_loss(config, implicit: bool,
                regularization_column: bool) -> tf.keras.losses.Loss:
  """The training loss of the model's output (with a regularization column?)."""
  return registry.of(config).create_loss(config, implicit,
                                         regularization_column)


def prepared(config, train_mean: float, item_info=None):
  """The config fitted to the training data (e.g. MF's g at the mean).

  `item_info()`: the corpus's item side information (Model.prepared).
  """
  return registry.of(config).prepared(config, train_mean, item_info)


def described_item_config(config, genres: list, year: Optional[float],
                          title: str = ''):
  """`config` with a described item appended, or None (Model's doc)."""
  return registry.of(config).described_item_config(config, genres, year,
                                                   title)


def new_item_parts(config, keras_model: tf.keras.Model):
  """Arrays that score an item described by metadata, or None (registry)."""
  return registry.of(config).new_item_parts(keras_model, config)


def rating_parts(config, keras_model: tf.keras.Model,
                 num_items: int) -> registry.RatingParts:
  """The bilinear rating model of a trained explicit-feedback model."""
  return registry.of(config).rating_parts(keras_model, config, num_items)
