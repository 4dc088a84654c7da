"""Matrix factorization whose items are also described by their features.

An item's vector and bias are an id part plus a learned projection of the
item's side-information features x_i (genres, release year:
data/side_info.py, `--item_features`):

    q_i = e_i + W x_i        b_i = c_i + w . x_i
    r_hat = p_u . q_i + b_u + b_i + g

The id parts e_i, c_i start at zero; an item no training rating touches
keeps them at zero, so a new item (the item_cold_start split, or an item
added after training) is scored from its features alone. Trained with id
dropout (DropoutNet, Volkovs et al., NeurIPS 2017): in each training step
the id parts of a share `id_dropout` of the examples are zeroed, so that
W x_i and w . x_i learn to stand in for them. At inference the whole vector
is used.

W, w, the id parts and g are global (aggregated by the server under every
method); the user part (p_u, b_u) is MF's (local under FedRecon). The
feature table itself is public metadata: a constant of the model (no
weight) from `feature_values`, which `prepared` fills from the corpus
(scaled by one factor so that the longest item's features have norm
`feature_scale`). L2 is MF's, on the rated pair's final vectors and biases.
"""

import dataclasses
from typing import ClassVar, Optional

import numpy as np
import tensorflow as tf

from research.fedrec.data import side_info
from research.fedrec.models import mf
from research.fedrec.models import registry


@dataclasses.dataclass(frozen=True)
class FeatureMFConfig:
  """Hyperparameters of feature-augmented matrix factorization."""

  model_name: ClassVar[str] = 'mf_features'

  embedding_dim: int = 16
  use_biases: bool = True
  l2: float = 0.0
  init_stddev: float = 0.1
  global_mean: float = 0.0
  seed: int = 0
  item_features: tuple[str, ...] = ('genres', 'year')
  id_dropout: float = 0.5
  # The longest item feature vector's norm. W and w see every example while
  # an item row sees its own: scaling x by s scales their steps by s^2, so
  # 0.3 keeps them at about 1/10 of the rows' (FedRecon's server rate of 10
  # makes up for rows that few clients touch; shared weights at that rate
  # diverge within 5 rounds, measured 2026-12-06).
  feature_scale: float = 0.3
  # How a described item's genres and year become a row (`prepared`).
  encoder: Optional[side_info.FeatureEncoder] = None
  feature_multiplier: float = 1.0  # Encoded rows times this: the table.
  # [items][features], filled by `prepared` from the corpus's side
  # information (a tuple, so that the config stays frozen and hashable).
  feature_values: tuple[tuple[float, ...], ...] = ()

  def __post_init__(self):
    mf.check_common(self)
    check_feature_settings(self)

  @property
  def features(self) -> np.ndarray:
    return feature_table(self)


def check_feature_settings(config) -> None:
  """Raises ValueError (one line) for bad item-feature settings of a
  feature model's config (its fields item_features, feature_scale,
  id_dropout, as FeatureMFConfig's)."""
  known = side_info.ITEM_FEATURES
  if (not config.item_features or
      any(name not in known for name in config.item_features) or
      len(set(config.item_features)) < len(config.item_features)):
    raise ValueError(f'--item_features={",".join(config.item_features)}: '
                     f'expected distinct names among {", ".join(known)}.')
  if not config.feature_scale > 0:
    raise ValueError('feature_scale must be > 0.')
  if not 0.0 <= config.id_dropout < 1.0:
    raise ValueError(f'--id_dropout={config.id_dropout:g}: expected in '
                     '[0, 1).')


def feature_table(config, num_items: Optional[int] = None) -> np.ndarray:
  """[items, features] of a prepared feature model's config (checked to
  have `num_items` rows, if given)."""
  if not config.feature_values:
    raise ValueError(f'{config.model_name}: the item features are not loaded '
                     '(the config was not prepared from the corpus).')
  features = np.array(config.feature_values, np.float32)
  if num_items is not None and features.shape[0] != num_items:
    raise ValueError(f'{config.model_name}: {features.shape[0]} items have '
                     f'features, the corpus has {num_items}.')
  return features


def with_features(config, item_info):
  """`config` with the corpus's encoder and scaled feature table.

  The encoder is fitted to the items' side information (`item_info()`),
  and the rows scaled by one factor so that the longest has norm
  `config.feature_scale`.
  """
  if item_info is None:
    raise ValueError(f'--model={config.model_name} needs the corpus\'s item '
                     'features.')
  info = item_info()
  encoder = side_info.FeatureEncoder.fit(info, config.item_features)
  values = encoder.encode(info.genres, info.years, list(info.titles),
                          genome=info.genome).astype(np.float64)
  longest = np.linalg.norm(values, axis=1).max() if values.size else 0.0
  multiplier = config.feature_scale / longest if longest > 0 else 1.0
  return dataclasses.replace(
      config, encoder=encoder, feature_multiplier=multiplier,
      feature_values=tuple(map(tuple, (values * multiplier).tolist())))


def with_described_item(config, genres, year, title):
  """`config` with one more item, described by its genres, year and title,
  as the last row of its feature table (encoded as in training)."""
  encoder = config.encoder
  if encoder is None:
    raise ValueError(f'{config.model_name}: the item features are not '
                     'loaded (the config was not prepared from the corpus).')
  row = encoder.encode_one(genres, year, title) * config.feature_multiplier
  return dataclasses.replace(config, feature_values=config.feature_values + (
      tuple(float(v) for v in row),))


def new_item_encoder(config) -> dict:
  """The encoder's arrays of `Model.new_item_parts` (a described item's row
  is encoded as in training, times the multiplier)."""
  encoder = config.encoder
  return dict(names=np.array(encoder.names),
              genre_names=np.array(encoder.genre_names),
              year_mean=np.float64(encoder.year_mean),
              year_std=np.float64(encoder.year_std),
              genome_components=np.int64(encoder.genome_components),
              multiplier=np.float64(config.feature_multiplier))


class IdDropout(tf.keras.layers.Layer):
  """Zeroes the id part of a share of a batch's examples while training.

  The mask is a stateless function of (seed, the batch's items), so a run
  repeats exactly; no rescaling (inference uses the whole id part, as
  DropoutNet does).
  """

  def __init__(self, rate: float, seed: int, **kwargs):
    super().__init__(**kwargs)
    self._rate = rate
    self._seed = seed

  def call(self, inputs, training=None):
    values, item_ids = inputs
    if not training or self._rate == 0.0:
      return values
    ids = tf.cast(item_ids, tf.int64)
    batch_key = tf.reduce_sum(ids * (ids + 7)) + tf.size(ids, tf.int64)
    keep = tf.random.stateless_uniform(
        tf.shape(ids), seed=tf.stack([tf.constant(self._seed, tf.int64),
                                      batch_key])) >= self._rate
    return values * tf.cast(keep, values.dtype)[:, None]

  def get_config(self):
    return dict(super().get_config(), rate=self._rate, seed=self._seed)


class FeatureLookup(tf.keras.layers.Layer):
  """The items' feature rows, from a constant table (no weights)."""

  def __init__(self, features: np.ndarray, **kwargs):
    super().__init__(**kwargs)
    self._features = np.asarray(features, np.float32)

  def call(self, item_ids):
    return tf.gather(tf.constant(self._features), item_ids)


def create_keras_model(config: FeatureMFConfig, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False
                       ) -> registry.ModelLayers:
  """Both layouts, as mf.create_keras_model."""
  features = feature_table(config, num_items)
  zeros = tf.keras.initializers.Zeros()
  item_input = tf.keras.Input(shape=(), dtype=tf.int64, name='item')
  inputs, user_embedding, user_bias, user_key = mf.user_part(
      config, num_users, item_input)

  lookup = FeatureLookup(features, name='item_features')
  item_embedding = tf.keras.layers.Embedding(
      num_items, config.embedding_dim, embeddings_initializer=zeros,
      name='item_embedding')
  projection = tf.keras.layers.Dense(
      config.embedding_dim, use_bias=False,
      kernel_initializer=tf.keras.initializers.RandomNormal(
          stddev=config.init_stddev, seed=config.seed + 3),
      name='feature_projection')
  dropout = IdDropout(config.id_dropout, config.seed, name='id_dropout')
  x = lookup(item_input)
  item_vector = tf.keras.layers.Add(name='item_vector')(
      [dropout([item_embedding(item_input), item_input]), projection(x)])
  user_vector = user_embedding(user_key)
  prediction = tf.keras.layers.Dot(axes=1, name='dot')(
      [user_vector, item_vector])
  pair = [user_vector, item_vector]
  # The feature table is a constant of the config built into every copy of
  # the model (no weight): never sent or aggregated.
  global_layers = [item_embedding, projection]
  user_layers = [user_embedding]
  if config.use_biases:
    item_bias = tf.keras.layers.Embedding(
        num_items, 1, embeddings_initializer=zeros, name='item_bias')
    feature_bias = tf.keras.layers.Dense(
        1, use_bias=False, kernel_initializer=zeros, name='feature_bias')
    bias_dropout = IdDropout(config.id_dropout, config.seed,
                             name='id_bias_dropout')
    item_bias_value = tf.keras.layers.Add(name='item_bias_value')(
        [bias_dropout([item_bias(item_input), item_input]), feature_bias(x)])
    global_bias = mf.GlobalBias(config.global_mean, name='global_bias')
    biases = [user_bias(user_key), item_bias_value]
    prediction = global_bias(tf.keras.layers.Add(name='add_biases')(
        [prediction] + biases))
    pair += biases
    global_layers += [item_bias, feature_bias, global_bias]
    user_layers += [user_bias]
  return mf.finish_model(config, inputs, prediction, pair, global_layers,
                         user_layers, num_users, regularization_output,
                         'mf_features')


class FeatureMF(registry.Model):
  """Feature-augmented MF as a registered model (see the module doc)."""

  name = 'mf_features'
  label = 'MF + item features'
  config_class = FeatureMFConfig
  feedbacks = (registry.EXPLICIT, registry.IMPLICIT)

  def create_keras_model(self, config, num_items, num_users=None,
                         regularization_output=False):
    return create_keras_model(config, num_items, num_users,
                              regularization_output)

  def prepared(self, config, train_mean, item_info=None):
    """g at the training mean; the feature table from the corpus."""
    return dataclasses.replace(with_features(config, item_info),
                               global_mean=train_mean)

  def described_item_config(self, config, genres, year, title):
    return with_described_item(config, genres, year, title)

  def new_item_parts(self, keras_model, config):
    """W, w and the encoder: a described item's row x gives x W, x . w."""
    def weight(name):
      return keras_model.get_layer(name).get_weights()[0]

    projection = weight('feature_projection')
    return dict(
        new_item_encoder(config), projection=projection,
        bias=(weight('feature_bias')[:, 0] if config.use_biases else
              np.zeros(projection.shape[0], np.float32)))

  def rating_parts(self, keras_model, config, num_items):
    """Item vectors and biases with their feature parts added."""
    def weight(name):
      return keras_model.get_layer(name).get_weights()[0]

    features = config.features
    vectors = weight('item_embedding') + features @ weight(
        'feature_projection')
    initial = create_keras_model(config, num_items).model.get_layer(
        'user_embedding').get_weights()[0][0]
    parts = dict(item_embeddings=vectors, item_bias=None, global_bias=0.0,
                 initial_user_vector=initial)
    if config.use_biases:
      parts.update(
          item_bias=weight('item_bias')[:, 0] + (
              features @ weight('feature_bias'))[:, 0],
          global_bias=float(weight('global_bias')))
    if isinstance(keras_model.get_layer('user_embedding'),
                  tf.keras.layers.Embedding):  # The table layout.
      user_vectors = weight('user_embedding')
      parts.update(user_vectors=user_vectors, user_biases=(
          weight('user_bias')[:, 0] if config.use_biases else
          np.zeros(user_vectors.shape[0], np.float32)))
    return registry.RatingParts(**parts)


MODEL = FeatureMF()
