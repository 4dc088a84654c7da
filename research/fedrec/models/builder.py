"""From a model config to Keras models and losses.

The one place that knows which architecture lives where (mf.py, ncf.py,
autorec.py) and which loss goes with which feedback: MSE for explicit ratings,
binary cross-entropy on positives and sampled negatives for implicit feedback.
Algorithms and training code call these functions and never branch on the
architecture themselves. TensorFlow only (no TFF), so exported models load
without TFF; the algorithms wrap these models for TFF.
"""

from typing import Optional

import numpy as np
import tensorflow as tf

from research.fedrec.models import autorec
from research.fedrec.models import mf
from research.fedrec.models import ncf

Architecture = mf.Architecture
IMPLICIT_ONLY = (Architecture.GMF, Architecture.MLP, Architecture.NEUMF,
                 Architecture.AUTOREC)


def check_supported(config: mf.MFConfig, implicit: bool,
                    reconstruction: bool) -> None:
  """Raises ValueError (one line) for a model the setting cannot train."""
  name = config.architecture.value
  if not implicit and config.architecture in IMPLICIT_ONLY:
    raise ValueError(f'--model={name} learns from implicit feedback: add '
                     '--feedback=implicit.')
  if reconstruction and not has_user_part(config):
    raise ValueError(f'--model={name} has no user-specific part to '
                     'reconstruct: use --algorithm=fedavg or centralized.')


def has_user_part(config: mf.MFConfig) -> bool:
  return config.architecture != Architecture.AUTOREC


def create_keras_model(config: mf.MFConfig, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False) -> mf.MFLayers:
  """The Keras model; `num_users=None` gives the reconstruction layout.

  With `regularization_output`, the classic layout (`num_users` set) outputs
  (score, regularization) columns, as the reconstruction layout always does,
  instead of adding the regularization with `add_loss` (see mf.py).
  """
  if config.architecture == Architecture.MF:
    return mf.create_keras_model(config, num_items, num_users,
                                 regularization_output)
  if config.architecture == Architecture.AUTOREC:
    return autorec.create_keras_model(config, num_items)
  return ncf.create_keras_model(config, num_items, num_users,
                                regularization_output)


def initial_user_vectors(config: mf.MFConfig,
                         num_items: int) -> dict[str, np.ndarray]:
  """Each user layer's initial vector, where every reconstruction starts."""
  layers = create_keras_model(config, num_items).user_layers
  return {layer.name: layer.get_weights()[0][0] for layer in layers}


def create_loss(config: mf.MFConfig, implicit: bool,
                regularization_column: bool) -> tf.keras.losses.Loss:
  """The training loss of the model's output (with a regularization column?)."""
  if config.architecture == Architecture.AUTOREC:
    return autorec.MaskedBCE()
  if regularization_column:
    return mf.RegularizedBCE() if implicit else mf.RegularizedMSE()
  if implicit:
    return tf.keras.losses.BinaryCrossentropy(from_logits=True)
  return tf.keras.losses.MeanSquaredError()
