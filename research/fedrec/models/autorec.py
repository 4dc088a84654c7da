"""U-AutoRec (Sedhain et al., WWW 2015) for implicit feedback.

Each user is one example: the multi-hot vector x_u of the items the user has
interacted with in training. The model encodes and decodes it,

    logits = W' sigmoid(W x_u + b) + b',

and is trained with binary cross-entropy on the user's positives and on sampled
negatives (items the user never interacted with); all other entries are masked
out (label -1), since an unobserved entry is not a known negative. The whole
model is global and no per-user parameter exists, so the user's data enters only
as the model's input on the user's own device: a natural fit for FedAvg.
Scoring a user needs only that user's training vector, so unseen users are
scored without any reconstruction.

L2 (`l2`) regularizes both weight matrices (Keras kernel regularizers, which
`model.fit` and TFF's `from_keras_model` both include).
"""

import dataclasses
from typing import ClassVar

import tensorflow as tf

from research.fedrec.models import mf
from research.fedrec.models import registry

MASKED = -1.0  # Label of an entry that is neither a positive nor a negative.


@dataclasses.dataclass(frozen=True)
class AutoRecConfig:
  """Hyperparameters of U-AutoRec."""

  model_name: ClassVar[str] = 'autorec'

  hidden_units: int = 500
  l2: float = 0.0
  seed: int = 0

  def __post_init__(self):
    mf.check_common(self)


def create_keras_model(config: AutoRecConfig,
                       num_items: int) -> registry.ModelLayers:
  """The autoencoder: input `x` [batch, num_items] -> logits of the same shape."""
  regularizer = (tf.keras.regularizers.L2(config.l2) if config.l2 > 0 else
                 None)
  inputs = tf.keras.Input(shape=(num_items,), dtype=tf.float32, name='x')
  encoder = tf.keras.layers.Dense(
      config.hidden_units, activation='sigmoid',
      kernel_initializer=tf.keras.initializers.GlorotUniform(seed=config.seed),
      kernel_regularizer=regularizer, name='encoder')
  decoder = tf.keras.layers.Dense(
      num_items,
      kernel_initializer=tf.keras.initializers.GlorotUniform(
          seed=config.seed + 1),
      kernel_regularizer=regularizer, name='decoder')
  model = tf.keras.Model(inputs, decoder(encoder(inputs)), name='autorec')
  return registry.ModelLayers(model, [encoder, decoder], [])


class MaskedBCE(tf.keras.losses.Loss):
  """Mean binary cross-entropy over the entries whose label is not `MASKED`."""

  def __init__(self, name: str = 'masked_bce'):
    super().__init__(name=name)

  def call(self, y_true, y_pred):
    y_true = tf.cast(y_true, tf.float32)
    mask = tf.cast(tf.not_equal(y_true, MASKED), tf.float32)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.maximum(y_true, 0.0), logits=y_pred)
    return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

  def __call__(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    return self.call(y_true, y_pred)


class AutoRec(registry.Model):
  """U-AutoRec as a registered model: no user part, one example per user."""

  name = 'autorec'
  label = 'U-AutoRec'
  config_class = AutoRecConfig
  has_user_part = False
  inputs = registry.Inputs.USER_VECTORS

  def create_keras_model(self, config, num_items, num_users=None,
                         regularization_output=False):
    del num_users, regularization_output  # One layout; L2 on the kernels.
    return create_keras_model(config, num_items)

  def create_loss(self, config, implicit, regularization_column):
    del config, implicit, regularization_column
    return MaskedBCE()


MODEL = AutoRec()
