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
from typing import Optional

import tensorflow as tf

from research.fedrec.models import mf


def _mlp_embedding_dim(config: mf.MFConfig) -> int:
  return max(1, config.mlp_layers[0] // 2)


def create_keras_model(config: mf.MFConfig, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False) -> mf.MFLayers:
  """GMF, MLP or NeuMF (by `config.architecture`) in either layout.

  `regularization_output` as in `mf.create_keras_model`.
  """
  architecture = config.architecture
  use_gmf = architecture in (mf.Architecture.GMF, mf.Architecture.NEUMF)
  use_mlp = architecture in (mf.Architecture.MLP, mf.Architecture.NEUMF)
  if not (use_gmf or use_mlp):
    raise ValueError(f'{architecture.value} is not an NCF architecture.')

  def init(offset):
    return tf.keras.initializers.RandomNormal(
        stddev=config.init_stddev, seed=config.seed + offset)

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
    gmf_item = tf.keras.layers.Embedding(
        num_items, config.embedding_dim, embeddings_initializer=init(1),
        name='gmf_item_embedding')
    vectors = [gmf_user(user_key), gmf_item(item_input)]
    towers.append(tf.keras.layers.Multiply(name='gmf')(vectors))
    pair += vectors
    user_layers.append(gmf_user)
    global_layers.append(gmf_item)
  if use_mlp:
    dim = _mlp_embedding_dim(config)
    mlp_user = user_embedding(dim, 4, 'mlp_user_embedding')
    mlp_item = tf.keras.layers.Embedding(
        num_items, dim, embeddings_initializer=init(3),
        name='mlp_item_embedding')
    vectors = [mlp_user(user_key), mlp_item(item_input)]
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
    global_layers.append(mlp_item)
  joined = towers[0] if len(towers) == 1 else tf.keras.layers.Concatenate(
      name='neumf')(towers)
  output = tf.keras.layers.Dense(1, kernel_initializer=dense_init(5),
                                 name='logit')
  logit = output(joined)
  global_layers.append(output)
  regularization = mf.PairL2(config.l2, name='regularization')(pair)
  name = architecture.value
  if num_users is None or regularization_output:
    outputs = tf.keras.layers.Concatenate(name='logit_and_regularization')(
        [logit, tf.keras.layers.Reshape((1,))(regularization)])
    return mf.MFLayers(tf.keras.Model(inputs, outputs, name=name),
                       global_layers, user_layers)
  logit = tf.keras.layers.Reshape((), name='score')(logit)
  model = tf.keras.Model(inputs, logit, name=name)
  if config.l2 > 0:
    model.add_loss(tf.reduce_mean(regularization))
  return mf.MFLayers(model, global_layers, user_layers)
