"""Matrix factorization (Koren et al., IEEE Computer 2009) as Keras models.

The predicted rating of user u for item i is

    r_hat = p_u . q_i  [+ b_u + b_i + g]      (biases optional)

Two layouts of the same model:

* `create_keras_model(config, num_items, num_users=None)` with `num_users=None`
  is the Federated Reconstruction layout (Singhal et al., NeurIPS 2021): the
  input is item ids only and the user part (p_u, b_u) is a single local
  vector, trained on the client and never sent anywhere. Item embeddings, item
  biases and the global bias g are global.
* With `num_users` set it is the classic layout (FedAvg and the centralized
  baseline): inputs `{user, item}` and a global table of all users' p_u, b_u.

L2 regularization is per example: l2 * (|p_u|^2 + |q_i|^2 [+ b_u^2 + b_i^2])
for each rated pair, averaged over the batch. The classic layout adds it with
`add_loss` (Keras `fit` includes `model.losses`). TFF's Federated
Reconstruction computes its loss from the model's predictions alone, so the
reconstruction layout outputs a [batch, 2] tensor of (rating, regularization)
and `RegularizedMSE` adds the batch mean of the second column to the squared
error of the first: the same objective in both layouts. FedAvg uses the classic
layout with that output too (`regularization_output`): an `add_loss` tensor
built with the model cannot be read inside TFF's client computation.
"""

import collections
import dataclasses
from typing import ClassVar, Optional

import numpy as np
import tensorflow as tf

from research.fedrec.models import registry


def check_common(config) -> None:
  """One-line errors for the settings every model's config may have."""
  for name in ('embedding_dim', 'hidden_units'):
    if getattr(config, name, 1) < 1:
      raise ValueError(f'--{name} must be >= 1.')
  if getattr(config, 'l2', 0.0) < 0:
    raise ValueError('--l2 must be >= 0.')
  layers = getattr(config, 'mlp_layers', (1,))
  if not layers or min(layers) < 1:
    raise ValueError('--mlp_layers must be positive layer widths.')


@dataclasses.dataclass(frozen=True)
class MFConfig:
  """Hyperparameters of matrix factorization."""

  model_name: ClassVar[str] = 'mf'

  embedding_dim: int = 16
  use_biases: bool = True
  l2: float = 0.0
  init_stddev: float = 0.1
  global_mean: float = 0.0  # Initial value of g (the train mean, usually).
  seed: int = 0

  def __post_init__(self):
    check_common(self)


class UserEmbedding(tf.keras.layers.Layer):
  """The one user's local vector(s), broadcast to every example of a batch."""

  def __init__(self, dim: int, initializer, **kwargs):
    super().__init__(**kwargs)
    self._dim = dim
    self._initializer = initializer

  def build(self, input_shape):
    self.embedding = self.add_weight(
        name='embedding', shape=(1, self._dim),
        initializer=self._initializer, dtype=tf.float32)
    super().build(input_shape)

  def call(self, item_ids):
    return tf.tile(self.embedding, [tf.shape(item_ids)[0], 1])

  def get_config(self):
    return dict(super().get_config(), dim=self._dim)


class GlobalBias(tf.keras.layers.Layer):
  """A scalar bias g added to every prediction."""

  def __init__(self, initial_value: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self._initial_value = initial_value

  def build(self, input_shape):
    self.bias = self.add_weight(
        name='bias', shape=(),
        initializer=tf.keras.initializers.Constant(self._initial_value))
    super().build(input_shape)

  def call(self, inputs):
    return inputs + self.bias

  def get_config(self):
    return dict(super().get_config(), initial_value=self._initial_value)


class PairL2(tf.keras.layers.Layer):
  """Per-example l2 * sum of squares of the rated pair's parameters."""

  def __init__(self, l2: float, **kwargs):
    super().__init__(**kwargs)
    self._l2 = l2

  def call(self, tensors):
    return self._l2 * tf.add_n(
        [tf.reduce_sum(tf.square(t), axis=-1) for t in tensors])

  def get_config(self):
    return dict(super().get_config(), l2=self._l2)


def get_rating(predictions: tf.Tensor) -> tf.Tensor:
  """The predicted ratings of either layout's output."""
  return predictions[:, 0] if predictions.shape.rank == 2 else predictions


def user_part(config, num_users: Optional[int], item_input):
  """(model inputs, user embedding, user bias, their key) of either layout.

  The reconstruction layout (`num_users=None`) has one local vector keyed
  by the item input's batch; the table layout a global user table.
  """
  init = tf.keras.initializers.RandomNormal(stddev=config.init_stddev,
                                            seed=config.seed + 2)
  zeros = tf.keras.initializers.Zeros()
  if num_users is None:
    return (item_input,
            UserEmbedding(config.embedding_dim, init, name='user_embedding'),
            UserEmbedding(1, zeros, name='user_bias'), item_input)
  user_input = tf.keras.Input(shape=(), dtype=tf.int64, name='user')
  return (collections.OrderedDict(user=user_input, item=item_input),
          tf.keras.layers.Embedding(num_users, config.embedding_dim,
                                    embeddings_initializer=init,
                                    name='user_embedding'),
          tf.keras.layers.Embedding(num_users, 1, embeddings_initializer=zeros,
                                    name='user_bias'), user_input)


def finish_model(config, inputs, prediction, pair, global_layers,
                 user_layers, num_users: Optional[int],
                 regularization_output: bool, name: str
                 ) -> registry.ModelLayers:
  """The model of `prediction` with its L2 on `pair`, in either layout."""
  regularization = PairL2(config.l2, name='regularization')(pair)
  if num_users is None or regularization_output:
    outputs = tf.keras.layers.Concatenate(name='rating_and_regularization')(
        [prediction, tf.keras.layers.Reshape((1,))(regularization)])
    model = tf.keras.Model(inputs=inputs, outputs=outputs, name=name)
  else:
    prediction = tf.keras.layers.Reshape((), name='rating')(prediction)
    model = tf.keras.Model(inputs=inputs, outputs=prediction, name=name)
    if config.l2 > 0:
      model.add_loss(tf.reduce_mean(regularization))
  return registry.ModelLayers(model, global_layers, user_layers)


def create_keras_model(config: MFConfig, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False
                       ) -> registry.ModelLayers:
  """Builds the MF Keras model; see the module docstring for the layouts."""
  zeros = tf.keras.initializers.Zeros()
  item_input = tf.keras.Input(shape=(), dtype=tf.int64, name='item')
  item_embedding = tf.keras.layers.Embedding(
      num_items, config.embedding_dim,
      embeddings_initializer=tf.keras.initializers.RandomNormal(
          stddev=config.init_stddev, seed=config.seed + 1),
      name='item_embedding')
  inputs, user_embedding, user_bias, user_key = user_part(
      config, num_users, item_input)

  pair = [user_embedding(user_key), item_embedding(item_input)]
  prediction = tf.keras.layers.Dot(axes=1, name='dot')(pair)
  global_layers = [item_embedding]
  user_layers = [user_embedding]
  if config.use_biases:
    item_bias = tf.keras.layers.Embedding(
        num_items, 1, embeddings_initializer=zeros, name='item_bias')
    global_bias = GlobalBias(config.global_mean, name='global_bias')
    biases = [user_bias(user_key), item_bias(item_input)]
    prediction = global_bias(tf.keras.layers.Add(name='add_biases')(
        [prediction] + biases))
    pair += biases
    global_layers += [item_bias, global_bias]
    user_layers += [user_bias]
  return finish_model(config, inputs, prediction, pair, global_layers,
                      user_layers, num_users, regularization_output, 'mf')


def count_parameters(config: MFConfig, num_items: int,
                     num_users: Optional[int] = None) -> dict[str, int]:
  """Parameter counts from the formula: global and per-user."""
  per_user = config.embedding_dim + (1 if config.use_biases else 0)
  global_count = num_items * per_user + (1 if config.use_biases else 0)
  if num_users is None:
    return {'global': global_count, 'local_per_user': per_user}
  return {'global': global_count + num_users * per_user, 'local_per_user': 0}


class RegularizedMSE(tf.keras.losses.Loss):
  """Squared error of `y_pred[:, 0]` plus the batch mean of `y_pred[:, 1]`.

  For the reconstruction layout, whose predictions carry the per-example L2.
  """

  def __init__(self, name: str = 'regularized_mse'):
    super().__init__(name=name)

  def call(self, y_true, y_pred):
    error = tf.reshape(tf.cast(y_true, tf.float32), [-1]) - y_pred[:, 0]
    return tf.reduce_mean(tf.square(error)) + tf.reduce_mean(y_pred[:, 1])

  def __call__(self, y_true, y_pred, sample_weight=None):
    del sample_weight  # The batch mean is the loss; no reduction needed.
    return self.call(y_true, y_pred)


class RegularizedBCE(tf.keras.losses.Loss):
  """Binary cross-entropy of the logit `y_pred[:, 0]` plus its L2 column.

  The implicit-feedback twin of `RegularizedMSE` (labels 1 for positives, 0 for
  sampled negatives).
  """

  def __init__(self, name: str = 'regularized_bce'):
    super().__init__(name=name)

  def call(self, y_true, y_pred):
    labels = tf.reshape(tf.cast(y_true, tf.float32), [-1])
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=labels, logits=y_pred[:, 0])) + tf.reduce_mean(y_pred[:, 1])

  def __call__(self, y_true, y_pred, sample_weight=None):
    del sample_weight
    return self.call(y_true, y_pred)


class MF(registry.Model):
  """Matrix factorization as a registered model (see the module doc)."""

  name = 'mf'
  label = 'MF'
  config_class = MFConfig
  feedbacks = (registry.EXPLICIT, registry.IMPLICIT)

  def create_keras_model(self, config, num_items, num_users=None,
                         regularization_output=False):
    return create_keras_model(config, num_items, num_users,
                              regularization_output)

  def prepared(self, config, train_mean, item_info=None):
    """g starts at the training mean (logit 0 under implicit feedback)."""
    del item_info
    return dataclasses.replace(config, global_mean=train_mean)

  def rating_parts(self, keras_model, config, num_items):
    """The arrays of either layout (user table only in the table layout)."""
    layer_names = {layer.name for layer in keras_model.layers}

    def weight(name):
      return keras_model.get_layer(name).get_weights()[0]

    initial = create_keras_model(config, num_items).model.get_layer(
        'user_embedding').get_weights()[0][0]
    use_biases = 'item_bias' in layer_names
    parts = dict(
        item_embeddings=weight('item_embedding'),
        item_bias=weight('item_bias')[:, 0] if use_biases else None,
        global_bias=float(weight('global_bias')) if use_biases else 0.0,
        initial_user_vector=initial)
    if isinstance(keras_model.get_layer('user_embedding'),
                  tf.keras.layers.Embedding):  # The table layout.
      vectors = weight('user_embedding')
      parts.update(user_vectors=vectors, user_biases=(
          weight('user_bias')[:, 0] if use_biases else
          np.zeros(vectors.shape[0], np.float32)))
    return registry.RatingParts(**parts)


MODEL = MF()
