"""A trained model exported for use without TensorFlow Federated.

`train.py` writes `<experiment_dir>/export/`:

    model/        Keras SavedModel of the global model: inputs
                  `user_vector` [B, dim], `user_bias` [B], `item` [B] (int64
                  item index) -> predicted rating [B]. Standard Keras layers
                  only, so `tf.keras.models.load_model` needs no custom code.
    export.json   corpus, rating scale, the run's reconstruction settings,
                  the user initializer value, where user vectors come from
    items.csv     item index, raw corpus id, title, training ratings
    users.csv     user index, raw corpus id
    user_table.npz  FedAvg / centralized only: the global user table (vectors,
                  biases); FedRecon has none, user vectors are reconstructed
                  on the client from the user's own ratings.
    new_items.npz   models with item features (mf_features) only: what
                  turns a described item's genres and year into its vector
                  and bias (recommend.py --new_item).
    user_prior.npz  models with user vectors, users keeping no state, no
                  DP or --dp_prior_noise_multiplier: the two sums over the
                  training users that give the mean training user and the
                  demographics map (inference/demographics.py `UserPrior`;
                  recommend.py for a new user with no rating).

An implicit-feedback run (any --model, `"kind": "implicit"` in export.json)
writes instead of model/ and user_table.npz:

    weights.npz   the trained weights by `<layer>/<index>`: the global layers,
                  plus the user tables (FedAvg / centralized) or the user
                  layers' initial vectors (FedRecon, `initial/<layer>`);
                  export.json holds the model config, so `builder` rebuilds
                  the Keras model (TensorFlow only, no TFF) and
                  `recommender.ImplicitRecommender` scores with it.

Everything is written under a temporary name and renamed into place, so a
killed export never leaves a half-written directory.
"""

import csv
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from research.fedrec.inference import demographics
from research.fedrec.inference import implicit
from research.fedrec.inference import reconstruction
from research.fedrec.models import builder
from research.fedrec.models import registry as models_registry
from research.fedrec.utils import json_io

FORMAT_VERSION = 1
NEW_ITEMS_FILE = 'new_items.npz'  # Feature models: scoring described items.
USER_PRIOR_FILE = 'user_prior.npz'  # demographics.UserPrior.arrays().
EXPORT_DIRNAME = 'export'
# What the model predicts.
RATING = 'rating'  # Explicit feedback: a rating.
IMPLICIT = 'implicit'  # Implicit feedback: the logit of an interaction.
# How a known user's vector is obtained.
RECONSTRUCT = 'reconstruct'  # FedRecon: from the user's ratings, locally.
USER_TABLE = 'user_table'  # FedAvg / centralized: the trained table row.
ENCODE = 'encode'  # U-AutoRec: the model encodes the user's interactions.


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Loaded:
  """What every export holds besides the model."""

  user_source: str  # RECONSTRUCT, USER_TABLE or (implicit only) ENCODE
  raw_users: np.ndarray
  raw_items: np.ndarray
  titles: list[str]
  item_train_counts: np.ndarray
  rating_scale: tuple[float, float, float]
  metadata: dict
  new_items: Optional[dict] = None  # new_items.npz of a feature model.
  # What training released about its users' vectors (user_prior.npz).
  user_prior: Optional[demographics.UserPrior] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Export(_Loaded):
  """A loaded rating export: the model as arrays plus everything to use it."""

  model: reconstruction.ItemModel
  settings: reconstruction.Settings
  user_vectors: Optional[np.ndarray] = None  # USER_TABLE only
  user_biases: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImplicitExport(_Loaded):
  """A loaded implicit-feedback export (see `write`)."""

  model_config: Any  # The registered model's config (models/registry.py).
  weights: dict[str, np.ndarray]
  settings: implicit.Settings

  @property
  def num_items(self) -> int:
    return len(self.raw_items)

  def keras_model(self, num_users: Optional[int]) -> tf.keras.Model:
    """The classic layout with `num_users` user rows, trained weights set.

    User tables keep their initial values when `weights` has none (a
    RECONSTRUCT model) or one of another size (reconstructing new users of a
    USER_TABLE model into a smaller table).
    """
    model = builder.create_keras_model(self.model_config, self.num_items,
                                       num_users).model
    for layer in model.layers:
      values = [self.weights.get(f'{layer.name}/{i}')
                for i in range(len(layer.weights))]
      if values and all(v is not None and v.shape == w.shape
                        for v, w in zip(values, layer.weights)):
        layer.set_weights(values)
    return model


def layer_weights(layers) -> dict[str, np.ndarray]:
  """`<layer>/<index>` -> array, the form an implicit export stores."""
  return {f'{layer.name}/{i}': np.asarray(w)
          for layer in layers for i, w in enumerate(layer.get_weights())}


def _build_keras_model(model: reconstruction.ItemModel):
  """The scoring model: (user_vector, user_bias, item) -> rating."""
  num_items, dim = model.item_embeddings.shape
  user_vector = tf.keras.Input(shape=(dim,), name='user_vector')
  user_bias = tf.keras.Input(shape=(), name='user_bias')
  item = tf.keras.Input(shape=(), dtype=tf.int64, name='item')
  item_embedding = tf.keras.layers.Embedding(num_items, dim,
                                             name='item_embedding')
  rating = tf.keras.layers.Dot(axes=1, name='dot')(
      [user_vector, item_embedding(item)])
  layers = {item_embedding: [model.item_embeddings]}
  if model.use_biases:
    item_bias = tf.keras.layers.Embedding(num_items, 1, name='item_bias')
    # b_u + g as a standard layer: kernel fixed at 1, bias g.
    global_bias = tf.keras.layers.Dense(1, name='global_bias')
    rating = tf.keras.layers.Add(name='add_biases')([
        rating,
        global_bias(tf.keras.layers.Reshape((1,))(user_bias)),
        item_bias(item),
    ])
    layers[item_bias] = [model.item_bias.reshape(-1, 1)]
    layers[global_bias] = [np.ones((1, 1), np.float32),
                           np.full((1,), model.global_bias, np.float32)]
  rating = tf.keras.layers.Reshape((), name='rating')(rating)
  keras_model = tf.keras.Model(
      inputs={'user_vector': user_vector, 'user_bias': user_bias,
              'item': item}, outputs=rating, name='mf_scoring')
  for layer, weights in layers.items():
    layer.set_weights(weights)
  return keras_model


def _write_atomically(export_dir: str, write) -> None:
  """Calls `write(tmp_dir)`, then renames tmp_dir to `export_dir`."""
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.export-')
  try:
    write(tmp)
    for root, dirs, files in os.walk(tmp):
      for name in dirs:
        os.chmod(os.path.join(root, name), 0o755)
      for name in files:
        os.chmod(os.path.join(root, name), 0o644)
    os.chmod(tmp, 0o755)
    if os.path.exists(export_dir):
      shutil.rmtree(export_dir)
    os.replace(tmp, export_dir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def _write_common(directory: str, info: dict, raw_users: np.ndarray,
                  raw_items: np.ndarray, titles: list[str],
                  item_train_counts: np.ndarray) -> None:
  """export.json, items.csv and users.csv."""
  with open(os.path.join(directory, 'export.json'), 'w') as f:
    json.dump(info, f, indent=2)
    f.write('\n')
  with open(os.path.join(directory, 'items.csv'), 'w', newline='',
            encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['item', 'raw_id', 'title', 'train_ratings'])
    writer.writerows(zip(range(len(raw_items)), raw_items.tolist(), titles,
                         np.asarray(item_train_counts).tolist()))
  with open(os.path.join(directory, 'users.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['user', 'raw_id'])
    writer.writerows(zip(range(len(raw_users)), raw_users.tolist()))


def _write_rating(directory: str, exported: 'Export') -> dict:
  """model/, user_table.npz and the rating fields of export.json."""
  model = exported.model
  _build_keras_model(model).save(os.path.join(directory, 'model'),
                                 include_optimizer=False)
  if exported.user_source == USER_TABLE:
    np.savez(os.path.join(directory, 'user_table.npz'),
             vectors=exported.user_vectors, biases=exported.user_biases)
  return dict(
      kind=RATING,
      user_source=exported.user_source,
      embedding_dim=int(model.item_embeddings.shape[1]),
      use_biases=model.use_biases,
      initial_user_vector=model.initial_user_vector.astype(float).tolist())


def _write_implicit(directory: str, exported: 'ImplicitExport') -> dict:
  """weights.npz and the implicit fields of export.json."""
  np.savez(os.path.join(directory, 'weights.npz'), **exported.weights)
  return dict(
      kind=IMPLICIT,
      user_source=exported.user_source,
      model_name=type(exported.model_config).model_name,
      model=json_io.to_jsonable(exported.model_config))


def write(export_dir: str, exported: 'Export | ImplicitExport') -> None:
  """Writes an export directory atomically (module docstring), the inverse
  of `load_export`.

  A rating export (`Export`) writes model/ (and user_table.npz for a
  USER_TABLE source); an implicit one (`ImplicitExport`: its model config
  is recorded by name, so the loader rebuilds that model) writes
  weights.npz: the global layers, the user tables (USER_TABLE) or the user
  layers' initial vectors (RECONSTRUCT). Either writes new_items.npz (a
  feature model's arrays that score an item described by metadata,
  models/registry.Model.new_item_parts) and user_prior.npz where it has
  them.
  """
  def write_files(tmp):
    if exported.new_items is not None:
      np.savez(os.path.join(tmp, NEW_ITEMS_FILE), **exported.new_items)
    if exported.user_prior is not None:
      np.savez(os.path.join(tmp, USER_PRIOR_FILE),
               **exported.user_prior.arrays())
    kind = (_write_implicit(tmp, exported) if isinstance(
        exported, ImplicitExport) else _write_rating(tmp, exported))
    info = dict(
        format_version=FORMAT_VERSION,
        **kind,
        reconstruction=dataclasses.asdict(exported.settings),
        rating_scale=list(exported.rating_scale),
        num_users=len(exported.raw_users),
        num_items=len(exported.raw_items))
    # A loaded export's metadata is its whole export.json.
    info.update((k, v) for k, v in exported.metadata.items() if k not in info)
    _write_common(tmp, info, exported.raw_users, exported.raw_items,
                  exported.titles, exported.item_train_counts)
  _write_atomically(export_dir, write_files)


def _read_ids(path: str, dtype) -> np.ndarray:
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  return np.array([r['raw_id'] for r in rows]).astype(dtype)


def _read_common(export_dir: str, info: dict) -> dict:
  """The fields both export kinds share, from export.json and the CSVs."""
  with open(os.path.join(export_dir, 'items.csv'), newline='',
            encoding='utf-8') as f:
    items = list(csv.DictReader(f))
  raw_dtype = np.int64 if info.get('raw_ids_numeric', True) else str
  return dict(
      user_source=info['user_source'],
      raw_users=_read_ids(os.path.join(export_dir, 'users.csv'), raw_dtype),
      raw_items=np.array([r['raw_id'] for r in items]).astype(raw_dtype),
      titles=[r['title'] for r in items],
      item_train_counts=np.array([int(r['train_ratings']) for r in items]),
      rating_scale=tuple(info['rating_scale']),
      metadata=info,
      new_items=_read_npz(export_dir, NEW_ITEMS_FILE),
      user_prior=read_user_prior(export_dir))


def _load_implicit(export_dir: str, info: dict) -> ImplicitExport:
  with np.load(os.path.join(export_dir, 'weights.npz')) as arrays:
    weights = {name: arrays[name] for name in arrays.files}
  # Exports of before the model registry name the model in the config.
  name = info.get('model_name') or info['model'].get('architecture', 'mf')
  return ImplicitExport(
      model_config=json_io.from_jsonable(models_registry.get(name).config_class,
                                         info['model']),
      weights=weights,
      settings=implicit.Settings(**info['reconstruction']),
      **_read_common(export_dir, info))


def _read_npz(export_dir: str, name: str) -> Optional[dict]:
  """The arrays of the export's file `name`, or None if it has none."""
  if not os.path.isfile(os.path.join(export_dir, name)):
    return None
  with np.load(os.path.join(export_dir, name)) as arrays:
    return {key: arrays[key] for key in arrays.files}


def read_user_prior(export_dir: str) -> Optional[demographics.UserPrior]:
  """The export's user prior (user_prior.npz), or None if it has none."""
  arrays = _read_npz(export_dir, USER_PRIOR_FILE)
  return None if arrays is None else demographics.UserPrior.from_arrays(arrays)


def load_export(export_dir: str) -> Export | ImplicitExport:
  """Loads an export written by `write`.

  Raises:
    ValueError: `export_dir` holds no (complete) export; one line.
  """
  info_path = os.path.join(export_dir, 'export.json')
  if not os.path.exists(info_path):
    raise ValueError(f'{export_dir}: no exported model (export.json missing); '
                     'train.py writes one at the end of a run (rerun it with '
                     'the same flags to export a finished run).')
  try:
    with open(info_path) as f:
      info = json.load(f)
    if not isinstance(info, dict):
      raise ValueError('not a JSON object')
  except (OSError, ValueError) as e:  # JSONDecodeError / UnicodeError too.
    raise ValueError(f'{info_path}: not an export.json written by train.py '
                     f'({" ".join(str(e).split())[:100]}); rerun train.py '
                     'with the same flags to export again.') from None
  try:
    return _load_checked(export_dir, info_path, info)
  except Exception as e:  # pylint: disable=broad-except
    # A damaged SavedModel raises OSError, DecodeError, OpError, KeyError ...
    if isinstance(e, ValueError) and str(e).startswith(info_path):
      raise
    raise ValueError(f'{export_dir}: damaged export ({type(e).__name__}: '
                     f'{" ".join(str(e).split())[:100]}); rerun train.py '
                     'with the same flags to export again.') from None


def _load_checked(export_dir: str, info_path: str, info: dict):
  """`load_export` after export.json has been read."""
  if info.get('format_version') != FORMAT_VERSION:
    raise ValueError(f'{info_path}: export format '
                     f'{info.get("format_version")} is not {FORMAT_VERSION}.')
  if info.get('kind', RATING) == IMPLICIT:
    return _load_implicit(export_dir, info)
  keras_model = tf.keras.models.load_model(os.path.join(export_dir, 'model'),
                                           compile=False)
  weights = {layer.name: layer.get_weights() for layer in keras_model.layers}
  use_biases = info['use_biases']
  model = reconstruction.ItemModel(
      item_embeddings=weights['item_embedding'][0],
      item_bias=weights['item_bias'][0][:, 0] if use_biases else None,
      global_bias=float(weights['global_bias'][1][0]) if use_biases else 0.0,
      initial_user_vector=np.asarray(info['initial_user_vector'], np.float32))
  vectors = biases = None
  if info['user_source'] == USER_TABLE:
    with np.load(os.path.join(export_dir, 'user_table.npz')) as table:
      vectors, biases = table['vectors'], table['biases']
  return Export(
      model=model,
      settings=reconstruction.Settings(**info['reconstruction']),
      user_vectors=vectors,
      user_biases=biases,
      **_read_common(export_dir, info))
