"""From a model config to Keras models, losses, metrics and TFF models.

The one place that knows which architecture lives where (mf.py, ncf.py,
autorec.py) and which loss goes with which feedback: MSE for explicit ratings,
binary cross-entropy on positives and sampled negatives for implicit feedback.
Algorithms and training code call these functions and never branch on the
architecture themselves.
"""

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.evaluation import interaction_metrics
from research.fedrec.evaluation import rating_metrics
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
                       num_users: Optional[int] = None) -> mf.MFLayers:
  """The Keras model; `num_users=None` gives the reconstruction layout."""
  if config.architecture == Architecture.MF:
    return mf.create_keras_model(config, num_items, num_users)
  if config.architecture == Architecture.AUTOREC:
    return autorec.create_keras_model(config, num_items)
  return ncf.create_keras_model(config, num_items, num_users)


def create_loss(config: mf.MFConfig, implicit: bool,
                reconstruction_layout: bool) -> tf.keras.losses.Loss:
  """The training loss of the model's output in the given layout."""
  if config.architecture == Architecture.AUTOREC:
    return autorec.MaskedBCE()
  if reconstruction_layout:
    return mf.RegularizedBCE() if implicit else mf.RegularizedMSE()
  if implicit:
    return tf.keras.losses.BinaryCrossentropy(from_logits=True)
  return tf.keras.losses.MeanSquaredError()


def create_metrics(implicit: bool) -> list[tf.keras.metrics.Metric]:
  if implicit:
    return interaction_metrics.create_keras_metrics()
  return rating_metrics.create_keras_metrics()


def create_recon_model_fns(config: mf.MFConfig, num_items: int, input_spec,
                           implicit: bool = False):
  """The (model_fn, loss_fn) pair for TFF's Federated Reconstruction.

  Args:
    config: The model's hyperparameters.
    num_items: Number of items.
    input_spec: The client batches' type (`mf.RECON_TRAIN_SPEC`,
      `mf.RECON_IMPLICIT_TRAIN_SPEC` or `mf.RECON_EVAL_SPEC`; the Keras model is
      the same, the dataset split function turns batches into its input).
    implicit: Implicit feedback (BCE) instead of ratings (MSE).

  Returns:
    `model_fn` returning a `tff.learning.models.ReconstructionModel` and
    `loss_fn` returning the loss.
  """
  def model_fn() -> tff.learning.models.ReconstructionModel:
    layers = create_keras_model(config, num_items)
    return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
        keras_model=layers.model,
        global_layers=layers.global_layers,
        local_layers=layers.user_layers,
        input_spec=input_spec)

  return model_fn, lambda: create_loss(config, implicit, True)


def create_fedavg_model_fn(config: mf.MFConfig, num_items: int,
                           num_users: int, implicit: bool = False):
  """A no-arg function returning the classic layout as a `tff.learning` model."""
  if config.architecture == Architecture.AUTOREC:
    input_spec = autorec.element_spec(num_items)
  else:
    input_spec = mf.FEDAVG_SPEC

  def model_fn() -> tff.learning.models.VariableModel:
    layers = create_keras_model(config, num_items, num_users)
    return tff.learning.models.from_keras_model(
        layers.model,
        loss=create_loss(config, implicit, False),
        input_spec=input_spec,
        metrics=create_metrics(implicit))
  return model_fn
