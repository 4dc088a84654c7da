"""NeuMF whose items are also described by their features.

NeuMF (models/ncf.py: a GMF and an MLP tower joined by one output layer)
with each tower's item vector an id part plus a learned projection of the
item's side-information features x_i (genres, release year, title text:
`--item_features`), as models/mf_features.py does for MF:

    q_i = e_i + W x_i  (GMF)        q'_i = e'_i + W' x_i  (MLP)

The id parts start at zero; an item no training interaction touches keeps
them at zero, so a new item is scored from its features alone (through
both towers). Trained with id dropout (DropoutNet): in each training step
the id parts of a share `id_dropout` of the examples are zeroed, in both
towers alike (one stateless draw per batch, `mf_features.IdDropout`).

W, W' and the id parts are global under every method, with the towers'
dense layers; the user parts (p_u, p'_u) are NeuMF's (local under
FedRecon). The feature table is public metadata, a constant of the model
filled by `prepared` from the corpus. Implicit feedback, as NeuMF.
"""

import dataclasses
from typing import ClassVar, Optional

import numpy as np
import tensorflow as tf

from research.fedrec.data import side_info
from research.fedrec.models import mf
from research.fedrec.models import mf_features
from research.fedrec.models import ncf
from research.fedrec.models import registry


@dataclasses.dataclass(frozen=True)
class NeuMFFeaturesConfig:
  """Hyperparameters of NeuMF with item features: NeuMF's and the item
  features' (as models/mf_features.FeatureMFConfig's)."""

  model_name: ClassVar[str] = 'neumf_features'

  embedding_dim: int = 16
  mlp_layers: tuple[int, ...] = (32, 16, 8)
  l2: float = 0.0
  init_stddev: float = 0.1
  seed: int = 0
  item_features: tuple[str, ...] = ('genres', 'year')
  id_dropout: float = 0.5
  feature_scale: float = 0.3  # The longest item feature row's norm.
  encoder: Optional[side_info.FeatureEncoder] = None
  feature_multiplier: float = 1.0
  feature_values: tuple[tuple[float, ...], ...] = ()

  def __post_init__(self):
    mf.check_common(self)
    mf_features.check_feature_settings(self)

  @property
  def features(self) -> np.ndarray:
    return mf_features.feature_table(self)


def create_keras_model(config: NeuMFFeaturesConfig, num_items: int,
                       num_users: Optional[int] = None,
                       regularization_output: bool = False
                       ) -> registry.ModelLayers:
  """Both layouts, as ncf.create_keras_model."""
  features = mf_features.feature_table(config, num_items)
  lookups = {}  # The one feature lookup, shared by both towers.
  offsets = dict(gmf=1, mlp=3)

  def item_vectors(tower, dim, item_input):
    if 'x' not in lookups:
      lookups['x'] = mf_features.FeatureLookup(
          features, name='item_features')(item_input)
    item_embedding = tf.keras.layers.Embedding(
        num_items, dim, embeddings_initializer=tf.keras.initializers.Zeros(),
        name=f'{tower}_item_embedding')
    projection = tf.keras.layers.Dense(
        dim, use_bias=False,
        kernel_initializer=tf.keras.initializers.RandomNormal(
            stddev=config.init_stddev, seed=config.seed + 20 +
            offsets[tower]),
        name=f'{tower}_feature_projection')
    dropout = mf_features.IdDropout(config.id_dropout, config.seed,
                                    name=f'{tower}_id_dropout')
    vector = tf.keras.layers.Add(name=f'{tower}_item_vector')(
        [dropout([item_embedding(item_input), item_input]),
         projection(lookups['x'])])
    return vector, [item_embedding, projection]

  return ncf.create_keras_model(config, num_items, num_users,
                                regularization_output, item_vectors)


class NeuMFFeatures(registry.Model):
  """NeuMF with item features as a registered model (module doc)."""

  name = 'neumf_features'
  label = 'NeuMF + item features'
  config_class = NeuMFFeaturesConfig

  def create_keras_model(self, config, num_items, num_users=None,
                         regularization_output=False):
    return create_keras_model(config, num_items, num_users,
                              regularization_output)

  def prepared(self, config, train_mean, item_info=None):
    """The feature table from the corpus."""
    del train_mean
    return mf_features.with_features(config, item_info)


  def described_item_config(self, config, genres, year, title):
    return mf_features.with_described_item(config, genres, year, title)


MODEL = NeuMFFeatures()
