"""Neural collaborative filtering (He et al., WWW 2017) as Keras models.

Three architectures score a (user, item) pair with a logit, trained with binary
cross-entropy on positives and sampled negatives:

* GMF: h . (p_u * q_i), a generalized matrix factorization;
* MLP: a tower of ReLU layers over [p'_u, q'_i], then h' . z;
* NeuMF: both, with separate embeddings, joined by one output layer over
  [p_u * q_i, z].

Like `mf.create_keras_model`, each has two layouts: with `num_users=None` the
Federated Reconstruction layout (inputs are item ids; the user's embeddings are
single local vectors, never aggregated) and with `num_users` the classic layout
(inputs `{user, item}` and global user tables, for FedAvg and the centralized
baseline). The reconstruction layout outputs `[batch, 2]` of (logit, per-example
L2) for `RegularizedBCE`; the classic layout outputs the logit and adds the L2
with `add_loss`, exactly as the MF model does.

The MLP's embeddings have half the width of its first layer, as in the paper;
GMF's have `embedding_dim`.
"""

import collections
import dataclasses
from typing import ClassVar, Optional

import tensorflow as tf

from research.fedrec.models import mf
from research.fedrec.models import registry


@dataclasses.dataclass(frozen=True)
class _NCFConfig:
  """The settings the three NCF models share."""

  l2: float = 0.0
  init_stddev: float = 0.1
  seed: int = 0

  def __post_init__(self):
    mf.check_common(self)


@dataclasses.dataclass(frozen=True)
class GMFConfig(_NCFConfig):
  """Hyperparameters of GMF."""

  model_name: ClassVar[str] = 'gmf'
  embedding_dim: int = 16


@dataclasses.dataclass(frozen=True)
class MLPConfig(_NCFConfig):
  """Hyperparameters of the MLP model (embeddings half the first width)."""

  model_name: ClassVar[str] = 'mlp'
  mlp_layers: tuple[int, ...] = (32, 16, 8)


@dataclasses.dataclass(frozen=True)
class NeuMFConfig(_NCFConfig):
  """Hyperparameters of NeuMF: GMF's and the MLP's."""

  model_name: ClassVar[str] = 'neumf'
  embedding_dim: int = 16
  mlp_layers: tuple[int, ...] = (32, 16, 8)


def _mlp_embedding_dim(config) -> int:
  return max(1, config.mlp_layers[0] // 2)


def create_keras_model(config, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False,
                       item_vectors=None) -> registry.ModelLayers:
  """GMF, MLP or NeuMF (by the config's class) in either layout.

  `regularization_output` as in `mf.create_keras_model`. `item_vectors`,
  if given, builds each tower's item vector instead of an id embedding:
  `item_vectors(tower, dim, item_input) -> (vector, global layers)` for
  tower 'gmf' or 'mlp' (models/ncf_features.py).
  """
  use_gmf = hasattr(config, 'embedding_dim')
  use_mlp = hasattr(config, 'mlp_layers')

  def init(offset):
    return tf.keras.initializers.RandomNormal(
        stddev=config.init_stddev, seed=config.seed + offset)

  if item_vectors is None:
    offsets = dict(gmf=1, mlp=3)

    def item_vectors(tower, dim, item_input):  # pylint: disable=function-redefined
      layer = tf.keras.layers.Embedding(
          num_items, dim, embeddings_initializer=init(offsets[tower]),
          name=f'{tower}_item_embedding')
      return layer(item_input), [layer]

  def dense_init(offset):
    return tf.keras.initializers.GlorotUniform(seed=config.seed + offset)

  item_input = tf.keras.Input(shape=(), dtype=tf.int64, name='item')
  if num_users is None:
    inputs = item_input
    user_key = item_input

    def user_embedding(dim, offset, name):
      return mf.UserEmbedding(dim, init(offset), name=name)
  else:
    user_input = tf.keras.Input(shape=(), dtype=tf.int64, name='user')
    inputs = collections.OrderedDict(user=user_input, item=item_input)
    user_key = user_input

    def user_embedding(dim, offset, name):
      return tf.keras.layers.Embedding(
          num_users, dim, embeddings_initializer=init(offset), name=name)

  global_layers, user_layers, pair, towers = [], [], [], []
  if use_gmf:
    gmf_user = user_embedding(config.embedding_dim, 2, 'gmf_user_embedding')
    user_vector = gmf_user(user_key)
    gmf_item, item_layers = item_vectors('gmf', config.embedding_dim,
                                         item_input)
    vectors = [user_vector, gmf_item]
    towers.append(tf.keras.layers.Multiply(name='gmf')(vectors))
    pair += vectors
    user_layers.append(gmf_user)
    global_layers += item_layers
  if use_mlp:
    dim = _mlp_embedding_dim(config)
    mlp_user = user_embedding(dim, 4, 'mlp_user_embedding')
    user_vector = mlp_user(user_key)
    mlp_item, mlp_item_layers = item_vectors('mlp', dim, item_input)
    vectors = [user_vector, mlp_item]
    hidden = tf.keras.layers.Concatenate(name='mlp_input')(vectors)
    for index, units in enumerate(config.mlp_layers):
      layer = tf.keras.layers.Dense(
          units, activation='relu', kernel_initializer=dense_init(10 + index),
          name=f'mlp_{index}')
      hidden = layer(hidden)
      global_layers.append(layer)
    towers.append(hidden)
    pair += vectors
    user_layers.append(mlp_user)
    global_layers += mlp_item_layers
  joined = towers[0] if len(towers) == 1 else tf.keras.layers.Concatenate(
      name='neumf')(towers)
  output = tf.keras.layers.Dense(1, kernel_initializer=dense_init(5),
                                 name='logit')
  logit = output(joined)
  global_layers.append(output)
  regularization = mf.PairL2(config.l2, name='regularization')(pair)
  name = config.model_name
  if num_users is None or regularization_output:
    outputs = tf.keras.layers.Concatenate(name='logit_and_regularization')(
        [logit, tf.keras.layers.Reshape((1,))(regularization)])
    return registry.ModelLayers(tf.keras.Model(inputs, outputs, name=name),
                       global_layers, user_layers)
  logit = tf.keras.layers.Reshape((), name='score')(logit)
  model = tf.keras.Model(inputs, logit, name=name)
  if config.l2 > 0:
    model.add_loss(tf.reduce_mean(regularization))
  return registry.ModelLayers(model, global_layers, user_layers)


class NCF(registry.Model):
  """GMF, MLP or NeuMF as a registered model (implicit feedback)."""

  def __init__(self, name: str, label: str, config_class: type):
    self.name, self.label, self.config_class = name, label, config_class

  def create_keras_model(self, config, num_items, num_users=None,
                         regularization_output=False):
    return create_keras_model(config, num_items, num_users,
                              regularization_output)


GMF = NCF('gmf', 'GMF', GMFConfig)
MLP = NCF('mlp', 'MLP', MLPConfig)
NEUMF = NCF('neumf', 'NeuMF', NeuMFConfig)
