"""From a run's trained Keras model to the TFF-free export.

`export_model` writes `<experiment_dir>/export/` (see `inference/export.py`)
at the end of every run, so `recommend.py` and a user's own code can use the
model without TensorFlow Federated.
"""

import dataclasses
import os
import secrets
from typing import Optional

import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import client_states
from research.fedrec.data import side_info
from research.fedrec.data import splits as splits_lib
from research.fedrec.inference import demographics
from research.fedrec.inference import export as export_lib
from research.fedrec.inference import implicit
from research.fedrec.inference import reconstruction
from research.fedrec.inference import recommender as recommender_lib
from research.fedrec.models import builder
from research.fedrec.models import mf
from research.fedrec.utils import json_io


# In a DP run's directory: the secret seed of its user prior's noise.
PRIOR_SEED_FILE = 'dp_prior_noise.seed'


def keras_model_of(model_config: builder.ModelConfig, num_items: int,
                   num_users: Optional[int], model_weights) -> tf.keras.Model:
  """A Keras model holding a TFF process's global `model_weights`.

  `num_users=None` is the FedRecon layout, whose global weights are the item
  side only (in `global_layers` order); otherwise the classic layout.
  """
  layers = builder.create_keras_model(model_config, num_items, num_users)
  _assign(layers, num_users, model_weights)
  return layers.model


def _assign(layers, num_users: Optional[int], model_weights) -> None:
  if num_users is not None:
    model_weights.assign_weights_to(layers.model)
    return
  values = [np.asarray(v) for v in model_weights.trainable]
  for layer in layers.global_layers:
    count = len(layer.weights)
    layer.set_weights(values[:count])
    values = values[count:]


class KerasModels:
  """`keras_model_of` for an evaluation every round: one Keras model per
  layout, built once and given each call's weights (a later call's weights
  replace an earlier call's)."""

  def __init__(self, model_config: builder.ModelConfig, num_items: int):
    self._model_config = model_config
    self._num_items = num_items
    self._layers = {}

  def of(self, num_users: Optional[int], model_weights) -> tf.keras.Model:
    if num_users not in self._layers:
      self._layers[num_users] = builder.create_keras_model(
          self._model_config, self._num_items, num_users)
    _assign(self._layers[num_users], num_users, model_weights)
    return self._layers[num_users].model


def model_from_keras(keras_model: tf.keras.Model, model_config,
                     num_items: int):
  """`(ItemModel, user vectors, user biases)` of an explicit-feedback model.

  From the registered model's bilinear parts (`registry.RatingParts`); the
  user arrays are None for the FedRecon layout (no user table).
  """
  parts = builder.rating_parts(model_config, keras_model, num_items)
  model = reconstruction.ItemModel(
      item_embeddings=parts.item_embeddings, item_bias=parts.item_bias,
      global_bias=parts.global_bias,
      initial_user_vector=parts.initial_user_vector)
  return model, parts.user_vectors, parts.user_biases


def _metadata(config, data) -> dict:
  raw_users, raw_items = data.id_maps.raw_users, data.id_maps.raw_items
  return dict(
      algorithm=config.algorithm, dataset=data.name,
      experiment=config.experiment_name,
      data_config=json_io.to_jsonable(config.data),
      corpus_hash=data.content_hash(),
      raw_ids_numeric=bool(np.issubdtype(raw_users.dtype, np.integer) and
                           np.issubdtype(raw_items.dtype, np.integer)))


def implicit_weights(keras_model: tf.keras.Model,
                     model_config: builder.ModelConfig,
                     num_items: int):
  """(user source, weights) of a trained implicit model for the export.

  The reconstruction layout (FedRecon) keeps its global layers, the classic
  layout and U-AutoRec every layer. Models with a user part also keep the
  user layers' initial vectors (`initial/<layer>`), where the reconstruction
  of a (new) user starts.
  """
  if not builder.has_user_part(model_config):
    return export_lib.ENCODE, export_lib.layer_weights(keras_model.layers)
  initial = builder.initial_user_vectors(model_config, num_items)
  reconstructs = any(isinstance(layer, mf.UserEmbedding)
                     for layer in keras_model.layers)
  weights = export_lib.layer_weights(
      [layer for layer in keras_model.layers if layer.name not in initial]
      if reconstructs else keras_model.layers)
  weights.update({f'initial/{name}': vector
                  for name, vector in initial.items()})
  return (export_lib.RECONSTRUCT if reconstructs else export_lib.USER_TABLE,
          weights)


def user_prior_withheld(config) -> Optional[str]:
  """Why the run (`ExperimentConfig`) releases no user prior, or None."""
  if not builder.has_user_part(config.model):
    return 'the model has no user vectors'
  if config.method.keeps_client_state:
    return 'the users keep their vectors on their devices'
  if config.dp.enabled and config.dp.prior_noise_multiplier is None:
    return ('the run is differentially private and was given no '
            '--dp_prior_noise_multiplier')
  if config.dp.enabled and config.silos.enabled and (
      config.silos.dp_unit == 'silo'):
    return 'the run protects silos, and the prior is released per user'
  return None


def prior_noise_seed(run_dir: str) -> int:
  """The secret seed of a DP run's user prior noise.

  Drawn from the operating system's entropy at the run's first export and
  kept in the run directory (`PRIOR_SEED_FILE`, the server's side, never in
  the export): exporting the run again releases the same sums, not a
  second noisy copy that would spend privacy again, while nobody can
  derive the noise from the run's flags (the DP noise is never seeded by
  them).
  """
  path = os.path.join(run_dir, PRIOR_SEED_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      return int(f.read().strip())
  seed = secrets.randbits(128)
  tmp = f'{path}.tmp'
  with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            'w') as f:
    f.write(f'{seed}\n')
  os.replace(tmp, path)
  return seed


def user_prior(config, data, split, exported, run_dir: str
               ) -> tuple[Optional[demographics.UserPrior], str]:
  """What the run releases about its training users' vectors, and what
  that is (or why nothing is released: export.json's `user_prior`).

  Each training user's parts as the export scores that user (its table
  row, or reconstructed from its training ratings as its device would:
  `Recommender.user_rows`), summed with its demographics where the corpus
  has a user file (`demographics.UserPrior`); under DP clipped to
  --dp_prior_clip and noised with --dp_prior_noise_multiplier (the
  accountant has composed that release from the start:
  privacy/accounting.py), the noise seeded by `prior_noise_seed(run_dir)`.
  Nothing where `user_prior_withheld` says so.
  """
  withheld = user_prior_withheld(config)
  if withheld:
    return None, f'none: {withheld}'
  users = np.unique(split.train.users)
  histories = [recommender_lib.UserRatings(i, r) for i, r in zip(
      *splits_lib.ratings_by_user(split.train, users))]
  kind = (recommender_lib.ImplicitRecommender if data.implicit else
          recommender_lib.Recommender)
  rows = kind(exported).user_rows(users, histories)
  what = (f'sums over the {len(users)} training users\' '
          + ('table rows' if exported.user_source == export_lib.USER_TABLE
             else 'vectors reconstructed from their training data'))
  encoder = features = None
  if data.has_user_info(config.data):
    info = data.user_info(config.data)
    encoder = side_info.DemographicEncoder.fit(info)
    features = encoder.encode(info)[users]
    what += f' and their {", ".join(encoder.fields)}'
  dp = config.dp
  if not dp.enabled:
    return demographics.UserPrior.of(encoder, features, rows), what
  prior = demographics.UserPrior.of(
      encoder, features, rows, clip=dp.prior_clip,
      noise_multiplier=dp.prior_noise_multiplier,
      seed=prior_noise_seed(run_dir))
  return prior, (f'{what}, each user\'s parts clipped to L2 norm '
                 f'{dp.prior_clip:g}, Gaussian noise of std '
                 f'{prior.noise_std:.4g} (noise multiplier '
                 f'{dp.prior_noise_multiplier:g}) on every sum')


def _with_user_prior(config, data, split, exported, export_dir: str):
  """`exported` with its user prior, described in its metadata."""
  prior, what = user_prior(config, data, split, exported, os.path.dirname(
      os.path.abspath(export_dir)))
  return dataclasses.replace(exported, user_prior=prior,
                             metadata=dict(exported.metadata, user_prior=what))


def _loaded_fields(config, data, split, metadata: dict) -> dict:
  """What every export holds besides the model (`export._Loaded`)."""
  scale = data.rating_scale(config.data)
  return dict(
      raw_users=data.id_maps.raw_users, raw_items=data.id_maps.raw_items,
      titles=data.titles(config.data),
      item_train_counts=np.bincount(split.train.items,
                                    minlength=data.num_items),
      rating_scale=(scale.minimum, scale.maximum, scale.step),
      metadata=metadata)


def export_implicit_model(config, data, split, keras_model: tf.keras.Model,
                          model_config: builder.ModelConfig,
                          export_dir: str,
                          metadata: Optional[dict] = None) -> None:
  """Writes a run's trained implicit-feedback model."""
  source, weights = implicit_weights(keras_model, model_config, data.num_items)
  exported = export_lib.ImplicitExport(
      model_config=model_config, weights=weights,
      settings=implicit.Settings.of_run(config), user_source=source,
      new_items=builder.new_item_parts(model_config, keras_model),
      **_loaded_fields(config, data, split,
                       metadata or _metadata(config, data)))
  export_lib.write(export_dir,
                   _with_user_prior(config, data, split, exported,
                                    export_dir))


def device_states_folder(config, export_dir: str) -> Optional[str]:
  """Where a run's users keep personal item views (PFedRec, FedRecon +
  DualPer), relative to the run directory: the folder of the states the run
  reports (its `--select_by` round's, else the last), or None.

  The views stay on the devices, not in the export (a user's view is a
  whole item table); recommend.py reads a known user's own row there.
  """
  if not config.method.keeps_client_state:
    return None
  run_dir = os.path.dirname(os.path.normpath(export_dir))
  states = os.path.join(run_dir, client_states.DIRNAME)
  folder = client_states.SELECTED if config.loop.select_by and os.path.isdir(
      os.path.join(states, client_states.SELECTED)) else client_states.CURRENT
  personal = client_states.PERSONAL_PREFIX.replace('/', '.')
  if not any(f.startswith(personal) for f in os.listdir(
      os.path.join(states, folder))):
    return None
  return os.path.join(client_states.DIRNAME, folder)


def export_model(config, data, split, keras_model: tf.keras.Model,
                 model_config: builder.ModelConfig, export_dir: str) -> None:
  """Writes a run's trained model (`ExperimentConfig`, `Corpus`, `Split`)."""
  metadata = _metadata(config, data)
  device_states = device_states_folder(config, export_dir)
  if device_states:
    metadata['device_states'] = device_states
  if data.implicit:
    export_implicit_model(config, data, split, keras_model, model_config,
                          export_dir, metadata)
    return
  model, vectors, biases = model_from_keras(keras_model, model_config,
                                            data.num_items)
  exported = export_lib.Export(
      model=model, settings=reconstruction.Settings.of_run(config),
      user_source=(export_lib.RECONSTRUCT if vectors is None else
                   export_lib.USER_TABLE),
      user_vectors=vectors, user_biases=biases,
      new_items=builder.new_item_parts(model_config, keras_model),
      **_loaded_fields(config, data, split, metadata))
  export_lib.write(export_dir,
                   _with_user_prior(config, data, split, exported,
                                    export_dir))
