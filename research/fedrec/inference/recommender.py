"""Top-K, cold-start and group recommendation from an exported model.

NumPy only (the export is loaded with TensorFlow, never TFF):

* A known user's vector is that user's row of the global user table (FedAvg,
  centralized) or, under Federated Reconstruction, reconstructed locally from
  all of the user's ratings, as the user's own device would.
* A new user (cold start) is reconstructed from the ratings given, with the
  trained item model frozen (what FedRecon is for). With no rating at all
  there is nothing to reconstruct from: items are ranked by the model's
  rating for the mean training user (the export's user prior), ties by the
  number of training ratings (popularity).
* Group recommendation scores each candidate item from the members' predicted
  ratings with one of `groups.GROUP_STRATEGIES` (`groups.py`).
* A known user of a method with personal item views (PFedRec, FedRecon +
  DualPer) is scored as its device does, with its own vector and its own
  view of the item table (`device_states`: the run's
  `client_states.read_folder`; a user never trained sees the global table).

Items a user (any group member) already rated are never recommended. Ranking
is by score, ties broken by the smaller item index, so results are
deterministic.

`ImplicitRecommender` does the same for implicit-feedback models (scores are
interaction probabilities): a FedRecon user is reconstructed from the user's
interactions with sampled negatives, exactly as in ranking evaluation
(`inference/implicit.py`); a FedAvg / centralized user takes the trained table
row, and a new user of such a model is reconstructed the same way; U-AutoRec
encodes the user's interaction vector. A new user with no interaction gets the
most popular items.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np
from scipy import sparse

from research.fedrec.algorithms import client_states
from research.fedrec.data import side_info
from research.fedrec.inference import export as export_lib
from research.fedrec.inference import groups
from research.fedrec.inference import implicit
from research.fedrec.inference import reconstruction
from research.fedrec.models import builder


NO_ITEM_FEATURES = ('--new_item: this run\'s model reads no item features '
                    '(train with --model=mf_features or neumf_features).')


def rank(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
  """Indices of the top-k candidate items: score descending, index ascending."""
  index = np.flatnonzero(candidates)
  order = np.lexsort((index, -scores[index]))
  return index[order[:k]]


@dataclasses.dataclass(frozen=True)
class UserRatings:
  """A user's ratings as dense item indices (in the device's order)."""

  items: np.ndarray
  ratings: np.ndarray


class Recommender:
  """Scores items for known users, new users and groups."""

  def __init__(self, exported: export_lib.Export,
               settings: Optional[reconstruction.Settings] = None,
               device_states: Optional[dict] = None):
    self.exported = exported
    self.settings = settings or exported.settings
    self.device_states = device_states

  @property
  def num_items(self) -> int:
    return self.exported.model.num_items

  def _global_item_side(self) -> dict:
    """The export's item side by `client_states.mf_scores` name."""
    model = self.exported.model
    values = {'item_embedding': model.item_embeddings}
    if model.use_biases:
      values.update(item_bias=model.item_bias[:, None],
                    global_bias=np.float32(model.global_bias))
    return values

  def _device_scores(self, user: int) -> np.ndarray:
    """Known user `user`'s MF scores of every item with its own state."""
    values = self._global_item_side()
    return client_states.mf_scores(
        'item_bias' in values, values, self.device_states,
        np.array([user]), np.arange(self.num_items)[None])[0]

  def user_parts(self, user: Optional[int], history: UserRatings,
                 initial: Optional[tuple[np.ndarray, float]] = None):
    """(vector, bias) of known user `user` (dense index), or of a new user
    (`user` None) reconstructed from `history`, starting at `initial`
    (vector, bias) if given (else the model's initial vector, bias 0).

    Raises:
      ValueError: a new user's `history` is empty (use `fallback_scores`).
    """
    if user is not None and (
        self.exported.user_source == export_lib.USER_TABLE):
      return self.exported.user_vectors[user], self.exported.user_biases[user]
    if not len(history.items):  # pylint: disable=g-explicit-length-test
      raise ValueError('No ratings to reconstruct a user from.')
    vectors, biases = reconstruction.reconstruct(
        self.exported.model, [history.items], [history.ratings], self.settings,
        None if initial is None else (initial[0][None], np.array([initial[1]])))
    return vectors[0], biases[0]

  def user_rows(self, users: np.ndarray,
                histories: Sequence[UserRatings]) -> np.ndarray:
    """[N, dim + 1]: each known user's vector then bias, as `user_parts`
    gives them (its table row, or reconstructed from its history; the
    reconstructions run side by side). What inference/demographics.py maps
    attributes to."""
    if self.exported.user_source == export_lib.USER_TABLE:
      vectors = self.exported.user_vectors[users]
      biases = self.exported.user_biases[users]
    else:
      vectors, biases = reconstruction.reconstruct(
          self.exported.model, [h.items for h in histories],
          [h.ratings for h in histories], self.settings)
    return np.concatenate([vectors, np.asarray(biases)[:, None]], axis=1)

  def row_scores(self, row: np.ndarray) -> np.ndarray:
    """Predicted ratings of a user given as a `user_rows` row."""
    return self.exported.model.score_all(row[:-1].astype(np.float32),
                                         float(row[-1]))

  def new_user_scores_from(self, history: UserRatings,
                           row: np.ndarray) -> np.ndarray:
    """`new_user_scores`, the reconstruction starting at a `user_rows`
    row instead of the model's initial vector and bias 0."""
    return self.exported.model.score_all(*self.user_parts(
        None, history, (row[:-1].astype(np.float32), float(row[-1]))))

  def user_scores(self, user: int, history: UserRatings) -> np.ndarray:
    """Predicted ratings of known user `user` (dense index) for all items."""
    if self.device_states is not None:
      return self._device_scores(user)
    return self.exported.model.score_all(*self.user_parts(user, history))

  def new_user_scores(self, history: UserRatings) -> np.ndarray:
    """Predicted ratings after reconstructing a user from `history`.

    Raises:
      ValueError: `history` is empty (use `fallback_scores`).
    """
    return self.exported.model.score_all(*self.user_parts(None, history))

  def described_item(self, genres: list[str], year: Optional[float],
                     title: str = '') -> tuple[np.ndarray, float]:
    """(vector, bias) of an item known only by its genres, year and title.

    From a feature model's new_items.npz: the row x of the corpus's encoder,
    scaled as in training, gives x W and x . w (the id part of a new item is
    zero, as for an item no rating touched).

    Raises:
      ValueError: the model reads no item features, or a genre is unknown.
    """
    parts = self.exported.new_items
    if parts is None:
      raise ValueError(NO_ITEM_FEATURES)
    encoder = side_info.FeatureEncoder(
        tuple(parts['names'].tolist()), tuple(parts['genre_names'].tolist()),
        float(parts['year_mean']), float(parts['year_std']),
        int(parts['genome_components']) if 'genome_components' in parts
        else 0)
    x = encoder.encode_one(genres, year, title) * float(parts['multiplier'])
    return x @ parts['projection'], float(x @ parts['bias'])

  def described_item_score(self, user: Optional[int], history: UserRatings,
                           genres: list[str], year: Optional[float],
                           title: str = '') -> float:
    """The predicted rating of an item known only by its metadata, for known
    user `user` or a new user (`user` None) reconstructed from `history`.

    Raises:
      ValueError: as `described_item` and `user_parts`.
    """
    vector, bias = self.described_item(genres, year, title)
    user_vector, user_bias = self.user_parts(user, history)
    return float(user_vector @ vector + user_bias + bias +
                 self.exported.model.global_bias)

  def initial_scores(self) -> np.ndarray:
    """Predictions of a user before reconstruction (the initial vector)."""
    return self.exported.model.score_all(self.exported.model.initial_user_vector,
                                         0.0)

  def fallback_scores(self) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """(ranking key, shown rating, what it is) for a user with no ratings.

    With the export's user prior: the predicted ratings of the mean
    training user (the mean of the training users' vectors and biases,
    inference/demographics.py), ties by popularity. Without one (exports of
    runs under DP, of stateful methods, of before 2026-12-07): b_i + g, the
    rating of the zero user, ties by popularity; None shown for a model
    without biases, ranked by popularity alone.
    """
    model = self.exported.model
    popularity = self.exported.item_train_counts.astype(np.float64)
    prior = self.exported.user_prior
    if prior is not None:
      shown = self.row_scores(prior.mean_row()).astype(np.float32)
      what = (f'the model\'s rating for the mean of its {prior.num_users} '
              'training users (their vectors and biases)')
    elif model.use_biases:
      shown = (model.item_bias + np.float32(model.global_bias)).astype(
          np.float32)
      what = ('the model\'s rating for an average user (item bias + global '
              'bias)')
    else:
      return popularity, None, 'popularity (training ratings)'
    # Popularity as a tie-break below the float32 resolution of the scores.
    tie_break = popularity / (popularity.max() + 1.0) * 1e-9
    return shown.astype(np.float64) + tie_break, shown, what

  def recommend(self, scores: np.ndarray, exclude: Sequence[int],
                k: int) -> np.ndarray:
    """The top-k items by `scores` among items not in `exclude`."""
    candidates = np.ones(self.num_items, bool)
    candidates[np.asarray(exclude, np.int64)] = False
    return rank(scores, candidates, k)

  def recommend_group(self, member_scores: np.ndarray,
                      exclude: Sequence[int], k: int, strategy: str):
    """(top-k items, group scores) for a group's member predictions."""
    candidates = np.ones(self.num_items, bool)
    candidates[np.asarray(exclude, np.int64)] = False
    scores = groups.group_scores(member_scores, candidates, strategy)
    return rank(scores, candidates, k), scores


def _sigmoid(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


class ImplicitRecommender(Recommender):
  """Scores items with an implicit-feedback export (probabilities)."""

  def __init__(self, exported: export_lib.ImplicitExport,
               settings: Optional[implicit.Settings] = None,
               device_states: Optional[dict] = None):
    super().__init__(exported, settings, device_states)
    self._table_model = None
    self._single_model = None
    self._layer_names = None

  @property
  def num_items(self) -> int:
    return self.exported.num_items

  def _model(self, with_table: bool):
    """The classic layout: all user rows, or one row to reconstruct into."""
    if with_table:
      if self._table_model is None:
        self._table_model = self.exported.keras_model(
            len(self.exported.raw_users))
      return self._table_model
    if self._single_model is None:
      self._single_model = self.exported.keras_model(1)
    return self._single_model

  def _global_item_side(self) -> dict:
    weights = self.exported.weights
    values = {'item_embedding': weights['item_embedding/0']}
    if 'item_bias/0' in weights:
      values.update(item_bias=weights['item_bias/0'],
                    global_bias=weights['global_bias/0'])
    return values

  def user_scores(self, user: int, history: UserRatings) -> np.ndarray:
    """Interaction probabilities of known user `user` for all items."""
    if self.device_states is not None:
      return _sigmoid(self._device_scores(user))
    if self.exported.user_source == export_lib.USER_TABLE:
      return _sigmoid(implicit.score_items(self._model(True), [user],
                                           self.num_items)[0])
    return self._history_scores(user, history)

  def new_user_scores(self, history: UserRatings) -> np.ndarray:
    """Probabilities for a new user from `history` (interactions).

    Raises:
      ValueError: `history` is empty (use `fallback_scores`).
    """
    if not len(history.items):  # pylint: disable=g-explicit-length-test
      raise ValueError('No interactions to reconstruct a user from.')
    # A new user's negatives and shuffles are seeded as one past the last user.
    return self._history_scores(len(self.exported.raw_users), history)

  def _known(self, histories: Sequence[UserRatings]) -> sparse.csr_matrix:
    """[len(histories), items] 1 where a history has the item."""
    rows = np.concatenate([np.full(len(h.items), r, np.int64)
                           for r, h in enumerate(histories)] + [[]])
    items = np.concatenate([h.items for h in histories] + [[]])
    known = sparse.csr_matrix(
        (np.ones(len(items), np.float32),
         (rows.astype(np.int64), items.astype(np.int64))),
        shape=(len(histories), self.num_items))
    known.sum_duplicates()
    known.data[:] = 1.0
    return known

  def _user_layers(self) -> list[str]:
    """The model's user layers (reconstructed, or rows of a user table)."""
    if self._layer_names is None:
      self._layer_names = [layer.name for layer in builder.create_keras_model(
          self.exported.model_config, self.num_items).user_layers]
    return self._layer_names

  def _history_scores(self, user: int, history: UserRatings,
                      initial: Optional[list] = None) -> np.ndarray:
    known = self._known([history])
    if self.exported.user_source == export_lib.ENCODE:
      model = self._model(True)
      return _sigmoid(model.predict(known.toarray(), verbose=0)[0])
    model = self._model(False)
    layers = self._user_layers()
    if initial is None:
      initial = [self.exported.weights[f'initial/{name}'] for name in layers]
    implicit.reconstruct_users(model, layers, initial, np.array([user]), known,
                               self.settings)
    return _sigmoid(implicit.score_items(model, [0], self.num_items)[0])

  def _split_row(self, row: np.ndarray) -> list[np.ndarray]:
    """A `user_rows` row as one vector per user layer."""
    model = self._model(False)
    sizes = [model.get_layer(name).get_weights()[0].shape[1]
             for name in self._user_layers()]
    return np.split(np.asarray(row, np.float32), np.cumsum(sizes)[:-1])

  def user_rows(self, users: np.ndarray,
                histories: Sequence[UserRatings]) -> np.ndarray:
    """[N, parts]: each known user's user layers side by side (MF: its
    vector, then its bias; NeuMF: its GMF then MLP vector): its table rows,
    or reconstructed from its interactions as `user_scores` does it (the
    users side by side).

    Raises:
      ValueError: a model without user vectors (U-AutoRec).
    """
    if self.exported.user_source == export_lib.ENCODE:
      raise ValueError('this run\'s model has no user vectors (it encodes '
                       'each user\'s interactions).')
    layers = self._user_layers()
    if self.exported.user_source == export_lib.USER_TABLE:
      model = self._model(True)
      return np.concatenate([model.get_layer(name).get_weights()[0][users]
                             for name in layers], axis=1)
    model = self.exported.keras_model(len(users))
    initial = [self.exported.weights[f'initial/{name}'] for name in layers]
    return np.concatenate(implicit.reconstruct_users(
        model, layers, initial, np.asarray(users), self._known(histories),
        self.settings), axis=1)

  def row_scores(self, row: np.ndarray) -> np.ndarray:
    """Interaction probabilities of a user given as a `user_rows` row."""
    model = self._model(False)
    for name, part in zip(self._user_layers(), self._split_row(row)):
      model.get_layer(name).set_weights([part[None]])
    return _sigmoid(implicit.score_items(model, [0], self.num_items)[0])

  def new_user_scores_from(self, history: UserRatings,
                           row: np.ndarray) -> np.ndarray:
    """`new_user_scores`, the reconstruction starting at a `user_rows`
    row."""
    if not len(history.items):  # pylint: disable=g-explicit-length-test
      raise ValueError('No interactions to reconstruct a user from.')
    return self._history_scores(len(self.exported.raw_users), history,
                                self._split_row(row))

  def _user_model(self, user: Optional[int], history: UserRatings):
    """(Keras model, its user row, its user rows) holding known user
    `user`, or a new user (`user` None) reconstructed from `history`: its
    table row, or its reconstruction as `user_scores` / `new_user_scores`
    do it.

    Raises:
      ValueError: a user to reconstruct has an empty `history`.
    """
    if user is not None and (
        self.exported.user_source == export_lib.USER_TABLE):
      return self._model(True), user, len(self.exported.raw_users)
    if not len(history.items):  # pylint: disable=g-explicit-length-test
      raise ValueError('No interactions to reconstruct a user from.')
    self._history_scores(
        len(self.exported.raw_users) if user is None else user, history)
    return self._model(False), 0, 1

  def described_item_score(self, user: Optional[int], history: UserRatings,
                           genres: list[str], year: Optional[float],
                           title: str = '') -> float:
    """The interaction probability of an item known only by its metadata,
    for known user `user` or a new user (`user` None) from `history`.

    Any model with item features (MF, NeuMF): the Keras model with one more
    item, whose feature row is the described item's and whose id parts are
    zero (an item no interaction touched), every trained weight and the
    user's own parts copied in; the user's parts are those its scores of
    the corpus's items come from.

    Raises:
      ValueError: the model reads no item features, a genre is unknown, or
        a user to reconstruct has no interaction.
    """
    config = builder.described_item_config(self.exported.model_config,
                                           genres, year, title)
    if config is None:
      raise ValueError(NO_ITEM_FEATURES)
    model, row, num_users = self._user_model(user, history)
    padded = builder.create_keras_model(config, self.num_items + 1,
                                        num_users).model
    for layer in padded.layers:
      if not layer.weights:
        continue
      values = []
      for weight, value in zip(layer.weights,
                               model.get_layer(layer.name).get_weights()):
        if value.shape != tuple(weight.shape):  # An item table: a zero row.
          value = np.concatenate([value, np.zeros_like(value[:1])])
        values.append(value)
      layer.set_weights(values)
    logit = padded.predict({'user': np.array([row], np.int64),
                            'item': np.array([self.num_items], np.int64)},
                           verbose=0)
    return float(_sigmoid(np.ravel(logit)[0]))

  def fallback_scores(self) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """(ranking key, shown score, what it is) for a user with no
    interaction: popularity."""
    return (self.exported.item_train_counts.astype(np.float64), None,
            'popularity (training interactions)')
