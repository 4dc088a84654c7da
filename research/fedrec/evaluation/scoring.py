"""Score functions of every kind of model for ranking evaluation (implicit).

Builds the `evaluation.ranking` task of a partition (val or test) and the score
function of each kind of model:

* a classic-layout model (FedAvg, centralized): its user table;
* a FedRecon model: users reconstructed from their support interactions exactly
  as a client does (`inference.implicit`), then scored;
* a model of user vectors (U-AutoRec): the user's support vector through it;
* popularity: one score vector for everyone.

What is masked in full ranking is what the user's client knows before scoring:
the support interactions (training items under holdout / leave-one-out), and
for the test partition also the user's validation items, which happened before
the test items and are not what the test asks to find.
"""

import dataclasses

import numpy as np
from scipy import sparse
import tensorflow as tf

from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import splits as splits_lib
from research.fedrec.evaluation import ranking
from research.fedrec.inference import implicit
from research.fedrec.models import builder


@dataclasses.dataclass(frozen=True)
class Partition:
  """A ranking task plus each evaluated user's support interactions."""

  task: ranking.RankingTask
  support: sparse.csr_matrix  # [users, items]: what reconstruction sees.

  def subset(self, rows: np.ndarray) -> 'Partition':
    return Partition(self.task.subset(rows), self.support[rows])


def build_partition(data: corpus_lib.Corpus, split: splits_lib.Split,
                    split_name: str) -> Partition:
  partition = getattr(split, split_name)
  known = [partition.support]
  if split_name == 'test' and split.val.support is split.train:
    known.append(split.val.query)  # Same users; validation came first.
  known_users = np.concatenate([t.users for t in known])
  known_items = np.concatenate([t.items for t in known])
  task = ranking.build_task(
      known_users, known_items, partition.query.users, partition.query.items,
      data.ratings.users, data.ratings.items, split.train.items,
      data.num_items, partition.cold_items)
  support = ranking.interaction_matrix(
      task.users, partition.support.users, partition.support.items,
      data.num_items)
  return Partition(task, support)


def classic_scores(model: tf.keras.Model, partition: Partition):
  """Score function of a model with a user table indexed by dense user id."""
  def score(rows):
    return implicit.score_items(model, partition.task.users[rows],
                                partition.task.num_items)
  return score


def user_vector_scores(model: tf.keras.Model, partition: Partition):
  """Score function of a model whose input is a user's multi-hot vector."""
  def score(rows):
    inputs = partition.support[rows].toarray().astype(np.float32)
    return model.predict(inputs, batch_size=256, verbose=0)
  return score


def popularity_scores(counts: np.ndarray, partition: Partition):
  counts = np.asarray(counts, np.float32)
  return lambda rows: np.tile(counts, (len(rows), 1))


def _classic_with_global(global_model: tf.keras.Model,
                         model_config: builder.ModelConfig, num_items: int,
                         num_users: int):
  """(classic-layout model of `num_users` rows holding `global_model`'s
  trained global layers, {user layer: its initial vector})."""
  classic = builder.create_keras_model(model_config, num_items, num_users)
  initial_vectors = builder.initial_user_vectors(model_config, num_items)
  _copy_global_layers(global_model, classic.model, initial_vectors)
  return classic.model, initial_vectors


def _copy_global_layers(global_model: tf.keras.Model, model: tf.keras.Model,
                        user_layer_names) -> None:
  """Sets `global_model`'s weights into `model`'s layers of the same names,
  its user layers left as they are."""
  for layer in global_model.layers:
    if layer.weights and layer.name not in user_layer_names:
      model.get_layer(layer.name).set_weights(layer.get_weights())


def row_scores(global_model: tf.keras.Model,
               model_config: builder.ModelConfig, partition: Partition,
               user_rows, users_per_batch: int):
  """Score function of a FedRecon model whose users are given as rows.

  `user_rows(task rows)` -> [len(rows), parts]: each user's user layers
  side by side (as `ImplicitRecommender.user_rows` gives them), set into a
  classic-layout model's user tables and scored.
  """
  num_items = partition.task.num_items
  model, initial_vectors = _classic_with_global(
      global_model, model_config, num_items, users_per_batch)
  names = list(initial_vectors)
  sizes = [len(v) for v in initial_vectors.values()]

  def score(rows):
    parts = np.split(np.asarray(user_rows(rows), np.float32),
                     np.cumsum(sizes)[:-1], axis=1)
    for name, part in zip(names, parts):
      layer = model.get_layer(name)
      table = layer.get_weights()[0]
      table[:len(rows)] = part
      layer.set_weights([table])
    return implicit.score_items(model, np.arange(len(rows)), num_items)
  return score


def reconstruction_scores(global_model: tf.keras.Model,
                          model_config: builder.ModelConfig,
                          partition: Partition,
                          settings: implicit.Settings, users_per_batch: int,
                          exclude_heldout: bool = False,
                          unavailable_items=(), initial_rows=None):
  """Score function of a FedRecon model (reconstruction layout, trained).

  Users are reconstructed in the batches the ranking evaluation asks for, in a
  classic-layout model with one table row per user of the batch. With
  `exclude_heldout` (`--negative_protocol=published`), reconstruction's
  negatives avoid every interaction of the user, held-out ones included;
  never the `unavailable_items` (item_cold_start's cold items), as in
  training. `initial_rows(task rows)`, if given, is where each user's
  reconstruction starts (as `row_scores`' rows) instead of the model's
  initial vectors.
  """
  return Reconstruction(model_config, partition, settings, users_per_batch,
                        exclude_heldout, unavailable_items).scores(
                            global_model, initial_rows)


# The most bytes of reconstruction batches a `Reconstruction` keeps.
EXAMPLES_CACHE_BYTES = 1 << 28


class Reconstruction:
  """`reconstruction_scores` of one partition, for many models in turn (a
  run's evaluation every round): the classic-layout model, its traced
  reconstruction and each batch's reconstruction examples (seeded per user,
  so the same for every model) are made once."""

  def __init__(self, model_config: builder.ModelConfig, partition: Partition,
               settings: implicit.Settings, users_per_batch: int,
               exclude_heldout: bool = False, unavailable_items=()):
    self._partition = partition
    self._users_per_batch = users_per_batch
    self._exclude_heldout = exclude_heldout
    num_items = partition.task.num_items
    self._model = builder.create_keras_model(model_config, num_items,
                                             users_per_batch).model
    initial_vectors = builder.initial_user_vectors(model_config, num_items)
    self._names = list(initial_vectors)
    self._initial = list(initial_vectors.values())
    self._reconstructor = implicit.Reconstructor(self._model, self._names,
                                                 settings)
    self._unavailable = None
    if len(unavailable_items):  # pylint: disable=g-explicit-length-test
      columns = np.asarray(unavailable_items, np.int64)
      num_users = len(partition.task.users)
      self._unavailable = sparse.csr_matrix(
          (np.ones(num_users * len(columns), bool),
           (np.repeat(np.arange(num_users), len(columns)),
            np.tile(columns, num_users))), shape=(num_users, num_items))
    self._examples = {}  # Task rows -> implicit.Examples.
    self._cached_bytes = 0

  def _examples_of(self, rows: np.ndarray) -> implicit.Examples:
    """The batches of `rows`' users, kept while the kept ones take at
    most `EXAMPLES_CACHE_BYTES` (a large corpus's are redrawn each time)."""
    key = rows.tobytes()
    if key in self._examples:
      return self._examples[key]
    partition = self._partition
    excluded = None
    if self._exclude_heldout:
      excluded = partition.task.interacted[rows]
    if self._unavailable is not None:
      excluded = (partition.support[rows] if excluded is None else excluded
                  ).maximum(self._unavailable[rows])
    examples = self._reconstructor.examples(
        partition.task.users[rows], partition.support[rows], excluded)
    size = examples.items.nbytes + examples.labels.nbytes
    if self._cached_bytes + size <= EXAMPLES_CACHE_BYTES:
      self._examples[key] = examples
      self._cached_bytes += size
    return examples

  def scores(self, global_model: tf.keras.Model, initial_rows=None):
    """The score function of `global_model` (a reconstruction-layout model
    of the same config); one at a time: a later call's model replaces it."""
    _copy_global_layers(global_model, self._model, self._names)
    sizes = [len(v) for v in self._initial]
    num_items = self._partition.task.num_items

    def score(rows):
      rows = np.asarray(rows)
      if len(rows) > self._users_per_batch:
        raise ValueError('More users than reconstruction table rows.')
      start = self._initial if initial_rows is None else np.split(
          np.asarray(initial_rows(rows), np.float32), np.cumsum(sizes)[:-1],
          axis=1)
      self._reconstructor.reconstruct(start, self._examples_of(rows))
      return implicit.score_items(self._model, np.arange(len(rows)),
                                  num_items)
    return score
