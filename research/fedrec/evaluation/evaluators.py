"""The evaluators of a run's models on a split (val or test).

`RatingEvaluator` gives rating metrics (explicit feedback) and
`RankingEvaluator` top-K ranking metrics (implicit feedback) of a federated
process's global weights or of a Keras model: users of a method that
reconstructs them are rebuilt from their own ratings as their clients would
(`inference/`), users of a global table take their row. `config` is the
run's `training/experiment.ExperimentConfig`.
"""

import collections

import numpy as np
import tensorflow as tf

from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import ratings as ratings_lib
from research.fedrec.data import splits as splits_lib
from research.fedrec.evaluation import ranking as ranking_lib
from research.fedrec.evaluation import rating_metrics
from research.fedrec.evaluation import scoring
from research.fedrec.inference import from_keras
from research.fedrec.inference import implicit
from research.fedrec.inference import reconstruction
from research.fedrec.models import builder


def predict_ratings(model: tf.keras.Model,
                    table: ratings_lib.Ratings) -> np.ndarray:
  """Predicted ratings of `table`'s (user, item) pairs (table layout)."""
  if len(table) == 0:  # pylint: disable=g-explicit-length-test
    return np.zeros(0, np.float32)
  return model.predict(
      collections.OrderedDict(user=table.users, item=table.items),
      batch_size=8192, verbose=0)


def rating_metrics_of(model: tf.keras.Model,
                      partition: splits_lib.EvalPartition
                      ) -> collections.OrderedDict:
  """Rating metrics of a table-layout `model` on a partition's query ratings.

  With cold items (the item_cold_start split), also by warm and cold items.
  """
  return rating_metrics.compute_with_item_slices(
      partition.query.ratings, predict_ratings(model, partition.query),
      partition.query.items, partition.cold_items)


class RatingEvaluator:
  """Evaluates a federated model's weights on a split (val or test).

  FedRecon users are reconstructed by `inference/reconstruction.py`, which
  replays each client's reconstruction (same ratings, shuffle, batches,
  optimizer and steps) for all users at once in NumPy: TFF's federated
  evaluation (`fed_recon.build_evaluation`) gives the same metrics to 1e-6
  (tests/training/trained_test.py), at a second instead of about 35 s for 943
  users. FedAvg users take their row of the global table (an untrained,
  initial row for users unseen in training), or with `evaluate_finetuned`
  that row after local fine-tuning.
  """

  def __init__(self, config, data: corpus_lib.Corpus,
               split: splits_lib.Split, model_config: builder.ModelConfig):
    self._config = config
    self._split = split
    self._data = data
    self._model_config = model_config
    self._client_ratings = {}
    self._models = from_keras.KerasModels(model_config, data.num_items)

  def evaluate(self, model_weights, split_name: str,
               max_clients: int = 0,
               client_states=None) -> collections.OrderedDict:
    """Example-weighted metrics over the split's query ratings.

    With `max_clients`, over that many users drawn with the run's seed.
    With `client_states` (a stateful method's: name -> [users, ...]), each
    user is scored with its own state (algorithms/stateful.py).
    """
    if client_states is not None:
      from research.fedrec.algorithms import stateful  # pylint: disable=g-import-not-at-top
      partition = getattr(self._split, split_name)
      query = partition.query
      predictions = stateful.predict_pairs(
          self._model_config, self._data.num_items, model_weights,
          client_states, query.users, query.items)
      return rating_metrics.compute_with_item_slices(
          query.ratings, predictions, query.items, partition.cold_items)
    if not self._config.method.reconstructs_users:  # A global user table.
      return rating_metrics_of(self._fedavg_model(model_weights),
                                      getattr(self._split, split_name))
    users = self._ratings(split_name)[0]
    chosen = np.arange(len(users))
    if max_clients and max_clients < len(users):
      rng = np.random.default_rng([self._config.seed, 7])
      chosen = np.sort(rng.choice(len(users), max_clients, replace=False))
    model, _, _ = from_keras.model_from_keras(
        self._models.of(None, model_weights), self._model_config,
        self._data.num_items)
    return self._reconstructed_metrics(model, split_name, chosen)

  def evaluate_finetuned(self, model_weights,
                         split_name: str) -> collections.OrderedDict:
    """FedAvg plus local fine-tuning, on every user of the split.

    Each user's client first fine-tunes its own row and bias of the global
    user table on the ratings it holds (its training ratings, or the support
    half of an unseen user), with the item side frozen and the reconstruction
    settings (`--recon_epochs`, `--recon_steps_max`, the reconstruction
    optimizer): the steps of a FedRecon reconstruction, started from the
    user's FedAvg row instead of a fresh vector.
    """
    model, vectors, biases = from_keras.model_from_keras(
        self._fedavg_model(model_weights), self._model_config,
        self._data.num_items)
    users = self._ratings(split_name)[0]
    return self._reconstructed_metrics(
        model, split_name, np.arange(len(users)),
        initial=(vectors[users], biases[users]))

  def _reconstructed_metrics(self, model, split_name: str, chosen: np.ndarray,
                             initial=None) -> collections.OrderedDict:
    """Metrics of the `chosen` users after each reconstructs its vector.

    From `initial` (per chosen user), the same steps fine-tune given ones.
    """
    partition = getattr(self._split, split_name)
    query = partition.query
    users, items, ratings = self._ratings(split_name)
    vectors, biases = reconstruction.reconstruct(
        model, [items[k] for k in chosen], [ratings[k] for k in chosen],
        reconstruction.Settings.of_run(self._config), initial)
    scored = np.isin(query.users, users[chosen])
    row = np.searchsorted(users[chosen], query.users[scored])
    predictions = model.predict(vectors[row], biases[row],
                                query.items[scored])
    return rating_metrics.compute_with_item_slices(
        query.ratings[scored], predictions, query.items[scored],
        partition.cold_items)

  def _fedavg_model(self, model_weights) -> tf.keras.Model:
    return self._models.of(self._data.num_users, model_weights)

  def _ratings(self, split_name: str):
    if split_name not in self._client_ratings:
      self._client_ratings[split_name] = splits_lib.client_ratings(
          self._split, split_name)
    return self._client_ratings[split_name]


class RankingEvaluator:
  """Ranking metrics of a model on a split (implicit feedback)."""

  def __init__(self, config, data: corpus_lib.Corpus,
               split: splits_lib.Split, model_config: builder.ModelConfig):
    self._config = config
    self._data = data
    self._split = split
    self._model_config = model_config
    self._partitions = {}
    self._reconstructions = {}
    self._models = from_keras.KerasModels(model_config, data.num_items)
    self.last_result = None  # The latest `RankingResult`, for slices.

  def partition(self, split_name: str,
                max_clients: int = 0) -> scoring.Partition:
    if split_name not in self._partitions:
      self._partitions[split_name] = scoring.build_partition(
          self._data, self._split, split_name)
    partition = self._partitions[split_name]
    num_users = len(partition.task.users)
    if max_clients and max_clients < num_users:
      rng = np.random.default_rng([self._config.seed, 7])
      partition = partition.subset(
          np.sort(rng.choice(num_users, max_clients, replace=False)))
    return partition

  def _reconstruction(self, split_name: str,
                      max_clients: int = 0) -> scoring.Reconstruction:
    """FedRecon's scoring of a partition, made once for all evaluations."""
    key = (split_name, max_clients)
    if key not in self._reconstructions:
      self._reconstructions[key] = scoring.Reconstruction(
          self._model_config, self.partition(split_name, max_clients),
          implicit.Settings.of_run(self._config),
          self._config.ranking.users_per_batch,
          self._config.pipeline.exclude_heldout,
          self._config.pipeline.unavailable_items)
    return self._reconstructions[key]

  def _run(self, partition, score_fn) -> collections.OrderedDict:
    self.last_result = ranking_lib.evaluate(partition.task, score_fn,
                                            self._config.ranking)
    return self.last_result.overall

  def evaluate_keras(self, model: tf.keras.Model, split_name: str,
                     max_clients: int = 0,
                     reconstruct: bool = False) -> collections.OrderedDict:
    """Metrics of a Keras model (reconstruction layout if `reconstruct`)."""
    partition = self.partition(split_name, max_clients)
    if reconstruct:
      score_fn = self._reconstruction(split_name, max_clients).scores(model)
    elif builder.user_vector_inputs(self._model_config):
      score_fn = scoring.user_vector_scores(model, partition)
    else:
      score_fn = scoring.classic_scores(model, partition)
    return self._run(partition, score_fn)

  def evaluate_user_rows(self, model_weights, split_name: str, user_rows,
                         reconstruct: bool = False
                         ) -> collections.OrderedDict:
    """Metrics of a FedRecon process's global weights, each evaluated user
    given as a row (`user_rows(dense users)` -> [N, parts], its user
    layers side by side): scored as it is, or with `reconstruct` its
    reconstruction from its support interactions starts there."""
    partition = self.partition(split_name)
    model = self._models.of(None, model_weights)
    batch = self._config.ranking.users_per_batch

    def rows_of(rows):
      return user_rows(partition.task.users[rows])

    if reconstruct:
      score_fn = self._reconstruction(split_name).scores(
          model, initial_rows=rows_of)
    else:
      score_fn = scoring.row_scores(model, self._model_config, partition,
                                    rows_of, batch)
    return self._run(partition, score_fn)

  def evaluate_popularity(self, counts: np.ndarray,
                          split_name: str) -> collections.OrderedDict:
    partition = self.partition(split_name)
    return self._run(partition,
                     scoring.popularity_scores(counts, partition))

  def evaluate(self, model_weights, split_name: str,
               max_clients: int = 0,
               client_states=None) -> collections.OrderedDict:
    """Metrics of a federated process's global weights.

    With `client_states` (a stateful method's), each user is scored with
    its own state (algorithms/stateful.py).
    """
    if client_states is not None:
      from research.fedrec.algorithms import stateful  # pylint: disable=g-import-not-at-top
      partition = self.partition(split_name, max_clients)
      return self._run(partition, stateful.score_function(
          self._model_config, self._data.num_items, model_weights,
          client_states, partition.task.users))
    reconstruct = self._config.method.reconstructs_users
    model = self._models.of(None if reconstruct else self._data.num_users,
                            model_weights)
    return self.evaluate_keras(model, split_name, max_clients, reconstruct)
