"""A finished run's model: loading its checkpoint and evaluating it.

`load_run(experiment_dir)` rebuilds everything a run used from its
hparams.json (corpus, split, client store) and restores the global weights of
its latest checkpoint. `evaluate_run` then scores a validation or test split
per user, exactly as federated evaluation does but vectorized: a FedRecon user
is reconstructed from the ratings on that user's client (training ratings, and
for the user-disjoint split the support ratings; see
`inference/reconstruction.py`), FedAvg users take their row of the global user
table. Implicit-feedback runs are ranked instead (`evaluate_ranking`), with
the same evaluation as train.py.
"""

import dataclasses
import os
import sys
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from research.fedrec.algorithms import registry
from research.fedrec.algorithms import sampling as sampling_lib
from research.fedrec.data import client_store
from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import side_info
from research.fedrec.data import splits as splits_lib
from research.fedrec.evaluation import evaluators
from research.fedrec.evaluation import ranking
from research.fedrec.evaluation import slices
from research.fedrec.inference import demographics
from research.fedrec.inference import export as export_lib
from research.fedrec.inference import from_keras
from research.fedrec.inference import reconstruction
from research.fedrec.training import experiment as experiment_lib
from research.fedrec.training import loop as loop_lib


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class TrainedRun:
  """A run's data and trained global weights."""

  config: experiment_lib.ExperimentConfig
  data: corpus_lib.Corpus
  split: splits_lib.Split
  model: Optional[reconstruction.ItemModel]  # None for implicit feedback.
  round_num: int  # The checkpoint's round.
  user_vectors: Optional[np.ndarray] = None  # FedAvg: the global user table.
  user_biases: Optional[np.ndarray] = None
  model_weights: Any = None  # The TFF process's global weights.
  # A stateful method's users' local states (name -> [users, ...]) as of
  # the checkpoint (of its selected round, with --select_by).
  client_states: Optional[dict] = None
  silo_of: Optional[np.ndarray] = None  # --partition=silo: each user's silo.


def load_run(experiment_dir: str) -> TrainedRun:
  """Restores a federated run's latest checkpoint (no flags needed).

  Raises:
    ValueError: not a federated run's directory, or it has no checkpoint.
  """
  config = experiment_lib.load_config(experiment_dir)
  config = dataclasses.replace(
      config, root_output_dir=os.path.dirname(os.path.abspath(experiment_dir)),
      experiment_name=os.path.basename(os.path.abspath(experiment_dir)))
  if config.method.kind != registry.Kind.PROCESS:
    raise ValueError(f'{experiment_dir} is a {config.algorithm} run: it keeps '
                     'no checkpoint (its test metrics are in summary.json).')
  data = corpus_lib.load_corpus(config.data)
  split = splits_lib.split(data.ratings, config.split)
  config = experiment_lib.fitted_to_split(config, split)
  model_config = experiment_lib.model_config_of(config, split, data)
  checkpoints = os.path.join(experiment_dir, 'checkpoints')
  experiment_lib.check_same_data(experiment_dir, split)
  store_path = client_store.create_client_store(
      split, config.cache_dir or os.path.join(config.root_output_dir, 'cache'),
      log=_log)
  num_training_users = int(np.unique(split.train.users).size)
  config, silo_of = experiment_lib.fitted_to_silos(config, data,
                                                   num_training_users)
  accountant = experiment_lib.resolve_privacy(config, num_training_users,
                                              log=lambda _: None)
  process = experiment_lib.build_process(
      config, data, store_path, model_config,
      None if accountant is None else accountant.noise_multiplier, silo_of)
  structure = loop_lib.checkpoint_structure(process, config.loop,
                                           accountant is not None)
  manager = tff.program.FileProgramStateManager(checkpoints)
  saved, _ = loop_lib.load_latest(manager, structure, checkpoints, log=_log)
  if saved is None:
    raise ValueError(f'{checkpoints}: no checkpoint; the run has not finished '
                     'a checkpointed round yet.')
  # The model the run reports: the last round's, or with --select_by the
  # round best on validation.
  weights = loop_lib.selection_of(saved, process, config.loop).weights
  states = getattr(process, 'client_states', None)
  if states is not None:
    states = states.snapshot(int(saved['round']),
                             selected=bool(config.loop.select_by))
  if config.data.implicit:
    return TrainedRun(config, data, split, None, int(saved['round']),
                      model_weights=weights, client_states=states,
                      silo_of=silo_of)
  num_users = None if not config.method.global_user_table else data.num_users
  keras_model = from_keras.keras_model_of(
      model_config, data.num_items, num_users, weights)
  model, vectors, biases = from_keras.model_from_keras(
      keras_model, model_config, data.num_items)
  return TrainedRun(config, data, split, model, int(saved['round']), vectors,
                    biases, weights, states, silo_of)


def user_vectors(run: TrainedRun, users: np.ndarray, items, ratings):
  """The (vectors, biases) that score `users` (reconstructed or looked up)."""
  if run.user_vectors is not None:
    return run.user_vectors[users], run.user_biases[users]
  return reconstruction.reconstruct(run.model, items, ratings,
                                    reconstruction.Settings.of_run(
                                        run.config))


def participants(run: TrainedRun) -> set[int]:
  """Users sampled in at least one of the run's training rounds so far."""
  store_ids = sorted({str(u) for u in np.unique(run.split.train.users)},
                     key=int)
  sampler = sampling_lib.ClientSampler(store_ids, run.config.clients_per_round,
                                       run.config.sampling, run.config.seed)
  seen = set()
  for round_num in range(1, run.round_num + 1):
    seen.update(int(c) for c in sampler.sample(round_num))
  return seen


def evaluate_run(run: TrainedRun, split_name: str,
                 activity_edges=slices.DEFAULT_ACTIVITY_EDGES):
  """Scores every query rating of the split; returns a `slices.Report`."""
  partition = getattr(run.split, split_name)
  if not len(partition.query):  # pylint: disable=g-explicit-length-test
    raise ValueError(f'The {split_name} split is empty.')
  users, items, ratings = splits_lib.client_ratings(run.split, split_name)
  if run.client_states is not None:  # Each user with its kept state.
    from research.fedrec.algorithms import stateful  # pylint: disable=g-import-not-at-top
    predictions = stateful.predict_pairs(
        experiment_lib.model_config_of(run.config, run.split, run.data),
        run.data.num_items, run.model_weights, run.client_states,
        partition.query.users, partition.query.items)
  else:
    vectors, biases = user_vectors(run, users, items, ratings)
    row = np.searchsorted(users, partition.query.users)
    predictions = run.model.predict(vectors[row], biases[row],
                                    partition.query.items)
  activity = np.array([len(x) for x in items])
  seen = np.isin(users, np.fromiter(participants(run), np.int64))
  return slices.report(users, activity, seen, partition.query.users,
                       partition.query.ratings, predictions, activity_edges,
                       partition.query.items, partition.cold_items,
                       None if run.silo_of is None else run.silo_of[users])


def evaluate_ranking(run: TrainedRun, split_name: str) -> ranking.RankingResult:
  """Ranks the split's held-out items for every user, as train.py does."""
  if not len(getattr(run.split, split_name).query):  # pylint: disable=g-explicit-length-test
    raise ValueError(f'The {split_name} split is empty.')
  evaluator = evaluators.RankingEvaluator(
      run.config, run.data, run.split,
      experiment_lib.model_config_of(run.config, run.split, run.data))
  evaluator.evaluate(run.model_weights, split_name,
                     client_states=run.client_states)
  return evaluator.last_result


def new_users(run: TrainedRun, split_name: str,
              l2: float = demographics.DEFAULT_L2) -> Optional[dict]:
  """How new users are served, compared on a user-disjoint split.

  The split's evaluated users never trained. Their query ratings are
  scored (RMSE) with, in turn: the average user (zero vector and bias:
  b_i + g, what a new user without ratings got before the user prior), the
  mean training user's vector and bias (what a new user without ratings
  gets), the user's demographics alone (the attribute map of
  inference/demographics.py), the user's support ratings (the run's own
  evaluation), and the support ratings with the reconstruction started at
  the demographics' vector. The mean user and the map come from the same
  release as the export's user prior: sums over the training users'
  vectors, each reconstructed from its training ratings as its device
  would (`from_keras.user_prior`). Implicit feedback: `_new_users_ranking`.

  Returns:
    The RMSEs (implicit: the ranking metrics) and counts, or None where it
    does not apply: a split that is not user-disjoint, a method with a
    user table or kept client states, a corpus without a user file, or an
    implicit run whose export has no user prior.
  """
  if (run.user_vectors is not None or run.client_states is not None or
      run.config.split.kind != splits_lib.SplitKind.USER_DISJOINT or
      not run.data.has_user_info(run.config.data) or
      not run.config.method.reconstructs_users):
    return None
  if run.config.data.implicit:
    return _new_users_ranking(run, split_name, l2)
  if run.model is None:
    return None
  info = run.data.user_info(run.config.data)
  settings = reconstruction.Settings.of_run(run.config)
  encoder = side_info.DemographicEncoder.fit(info)
  features = encoder.encode(info)

  # What recommend.py serves: the export's user prior (noised under DP);
  # recomputed, exactly, for a run whose export has none.
  served = export_lib.read_user_prior(
      os.path.join(run.config.output_dir, export_lib.EXPORT_DIRNAME))
  prior = served
  if prior is None:
    train_users = np.unique(run.split.train.users)
    vectors, biases = user_vectors(
        run, train_users,
        *splits_lib.ratings_by_user(run.split.train, train_users))
    prior = demographics.UserPrior.of(
        encoder, features[train_users],
        np.concatenate([vectors, biases[:, None]], axis=1))
  attribute_map = prior.attribute_map(l2)
  mean = prior.mean_row()
  users, items, ratings = splits_lib.client_ratings(run.split, split_name)
  query = getattr(run.split, split_name).query
  row = np.searchsorted(users, query.users)
  mapped = attribute_map.rows(features[users])
  mapped = (mapped[:, :-1].astype(np.float32),
            mapped[:, -1].astype(np.float32))
  count = len(users)

  def rmse(parts):
    predicted = run.model.predict(parts[0][row], parts[1][row], query.items)
    return float(np.sqrt(np.mean((predicted - query.ratings) ** 2)))

  strategies = {
      'average user (b_i + g)': (
          np.zeros((count, len(mean) - 1), np.float32),
          np.zeros(count, np.float32)),
      'mean training user': (
          np.tile(mean[:-1], (count, 1)).astype(np.float32),
          np.full(count, mean[-1], np.float32)),
      'demographics alone': mapped,
      'support ratings': user_vectors(run, users, items, ratings),
      'support ratings, from the demographics': reconstruction.reconstruct(
          run.model, items, ratings, settings, initial=mapped),
  }
  return dict(_prior_fields(encoder, prior, served is not None, l2),
              users=count, ratings=int(len(query)),
              rmse={name: rmse(parts) for name, parts in strategies.items()})


def _prior_fields(encoder, prior: demographics.UserPrior, from_export: bool,
                  l2: float) -> dict:
  """What `new_users` says about the prior its users are served from."""
  return dict(fields=list(encoder.fields), map_users=prior.num_users,
              l2=float(l2), prior=('the export\'s' if from_export else
                                   'recomputed (the export has none)'),
              prior_noise_std=prior.noise_std)


def _new_users_ranking(run: TrainedRun, split_name: str,
                       l2: float) -> Optional[dict]:
  """`new_users` under implicit feedback: the split's new users' held-out
  interactions ranked (the run's ranking metrics) with, in turn: the
  popularity of the training interactions (what a new user without
  interactions gets), the mean training user, the user's demographics
  alone, its support interactions (the run's own evaluation), and its
  support interactions with the reconstruction started at the
  demographics' parts. The mean user and the map: the export's user prior
  (None if it has none)."""
  prior = export_lib.read_user_prior(
      os.path.join(run.config.output_dir, export_lib.EXPORT_DIRNAME))
  if prior is None or prior.encoder is None:
    return None
  features = prior.encoder.encode(run.data.user_info(run.config.data))
  attribute_map = prior.attribute_map(l2)
  mean = prior.mean_row()
  evaluator = evaluators.RankingEvaluator(
      run.config, run.data, run.split,
      experiment_lib.model_config_of(run.config, run.split, run.data))
  weights = run.model_weights

  def mapped(users):
    return attribute_map.rows(features[users])

  metrics = {
      'popularity': evaluator.evaluate_popularity(
          np.bincount(run.split.train.items, minlength=run.data.num_items),
          split_name),
      'mean training user': evaluator.evaluate_user_rows(
          weights, split_name, lambda users: np.tile(mean, (len(users), 1))),
      'demographics alone': evaluator.evaluate_user_rows(
          weights, split_name, mapped),
      'support interactions': evaluator.evaluate(weights, split_name),
      'support interactions, from the demographics':
          evaluator.evaluate_user_rows(weights, split_name, mapped,
                                       reconstruct=True),
  }
  query = getattr(run.split, split_name).query
  return dict(_prior_fields(prior.encoder, prior, True, l2),
              users=int(len(np.unique(query.users))),
              interactions=int(len(query)),
              metrics={name: dict(values) for name, values in metrics.items()})
