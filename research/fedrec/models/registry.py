"""The registry of recommender models: `--model` names -> `Model` objects.

A model is one object, in its own module of models/, that declares

  * its hyperparameters: one frozen dataclass (`config_class`) whose class
    attribute `model_name` names the model, so a config says which model it
    configures (train.py fills the fields it has from the flags of the same
    names: `config`);
  * its Keras builder in the two layouts (`create_keras_model`: the Federated
    Reconstruction layout with local user layers when `num_users` is None,
    else the table layout with a global user table) and its loss per
    feedback (`create_loss`);
  * what it learns from (`feedbacks`), whether it has a user part to
    reconstruct (`has_user_part`), what one example is (`inputs`: rated pairs
    or one multi-hot vector per user), and
  * how its users are scored outside TFF: implicit feedback ranks items with
    the Keras model itself (inference/implicit.py rebuilds a user's layers);
    explicit feedback goes through the bilinear item model of
    inference/reconstruction.py (`rating_parts`).

Nothing outside models/ compares model names. Adding a model is one module
plus one line in `_BUILT_IN` (or a `register` call, e.g. in a test). The
registry itself imports no TensorFlow: the binaries list the names for --help
without it, and a model's module is imported when the model is looked up.
"""

import dataclasses
import enum
import importlib
from typing import Any, Optional

EXPLICIT = 'explicit'
IMPLICIT = 'implicit'


class Inputs(enum.Enum):
  """What one training example of the model is."""

  PAIRS = 'pairs'  # A rated (user, item) pair; batches of item ids (+ users).
  USER_VECTORS = 'user_vectors'  # A user's multi-hot vector of their items.


@dataclasses.dataclass
class ModelLayers:
  """A built Keras model and its layers grouped by where they live."""

  model: Any  # tf.keras.Model
  global_layers: list  # Aggregated by the server.
  user_layers: list  # Local to a client under Federated Reconstruction.


@dataclasses.dataclass(frozen=True)
class RatingParts:
  """The arrays of a bilinear rating model r = p_u.q_i + b_u + b_i + g.

  What explicit-feedback evaluation and export need (see
  inference/reconstruction.ItemModel); the user arrays are None for the
  reconstruction layout (no user table).
  """

  item_embeddings: Any
  item_bias: Any  # None: no biases.
  global_bias: float
  initial_user_vector: Any
  user_vectors: Any = None
  user_biases: Any = None


class Model:
  """A recommender architecture; subclasses override what differs.

  Attributes:
    name: the --model value.
    label: how tables and messages name it.
    help: one line for --help.
    config_class: its hyperparameters (a frozen dataclass with a class
      attribute `model_name` equal to `name`).
    feedbacks: what it learns from (EXPLICIT needs `rating_parts`).
    has_user_part: users have their own parameters (reconstructed under
      FedRecon; rows of a global table otherwise).
    inputs: what one example is (`Inputs`).
  """

  name: str = ''
  label: str = ''
  help: str = ''
  config_class: type = type(None)
  feedbacks: tuple = (IMPLICIT,)
  has_user_part: bool = True
  inputs: Inputs = Inputs.PAIRS

  def config(self, **settings):
    """The model's config from `settings` (the fields it has; rest ignored)."""
    names = {f.name for f in dataclasses.fields(self.config_class)}
    return self.config_class(**{k: v for k, v in settings.items()
                                if k in names})

  def create_keras_model(self, config, num_items: int,
                         num_users: Optional[int] = None,
                         regularization_output: bool = False) -> ModelLayers:
    """The Keras model; `num_users=None` gives the reconstruction layout.

    With `regularization_output`, the table layout outputs (score,
    regularization) columns, as the reconstruction layout always does,
    instead of adding the regularization with `add_loss` (see mf.py).
    """
    raise NotImplementedError

  def create_loss(self, config, implicit: bool, regularization_column: bool):
    """The training loss of the model's output (with a regularization column?).

    Default: MSE for ratings, binary cross-entropy of logits for implicit
    feedback (positives and sampled negatives), each plus the batch mean of
    the regularization column where the output has one.
    """
    del config
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from research.fedrec.models import mf  # pylint: disable=g-import-not-at-top
    if regularization_column:
      return mf.RegularizedBCE() if implicit else mf.RegularizedMSE()
    if implicit:
      return tf.keras.losses.BinaryCrossentropy(from_logits=True)
    return tf.keras.losses.MeanSquaredError()

  def prepared(self, config, train_mean: float, item_info=None):
    """`config` fitted to the training data before the model is built.

    `train_mean` is the mean training rating (0 under implicit feedback);
    `item_info()` reads the corpus's item side information
    (data/side_info.ItemInfo of the dense items), for models that use it.
    """
    del train_mean, item_info
    return config

  def described_item_config(self, config, genres: list, year: Optional[float],
                            title: str):
    """`config` with one more item, known only by its genres, year and title
    (its id part zero, as an item no rating touched), or None for a model
    that reads no item features. The Keras model of the result, built with
    one more item and the trained weights (item tables padded with a zero
    row), scores the described item (inference/recommender.py).

    Raises:
      ValueError: a genre the corpus does not have (one line).
    """
    del config, genres, year, title
    return None

  def new_item_parts(self, keras_model, config) -> Optional[dict]:
    """What scores an item described by metadata, for the export, or None.

    A model that reads item features returns arrays (saved as
    export/new_items.npz): `projection` [features, dim] and `bias` [features]
    (a row x gives the item vector x W and bias x . w), and the encoder's
    `names`, `genre_names`, `year_mean`, `year_std`, `genome_components`
    and `multiplier` (data/side_info.FeatureEncoder, the row scaled by it).
    """
    del keras_model, config
    return None

  def rating_parts(self, keras_model, config, num_items: int) -> RatingParts:
    """The bilinear rating model of a trained explicit-feedback model."""
    raise NotImplementedError(f'--model={self.name} learns from implicit '
                              'feedback only.')


@dataclasses.dataclass(frozen=True)
class _Registration:
  """What is known of a model without importing its module."""

  name: str
  module: Optional[str]  # Defines `attribute`; None: registered as an object.
  help: str
  attribute: str = 'MODEL'


# The built-in models, in --help order.
_BUILT_IN = (
    _Registration('mf', 'research.fedrec.models.mf',
                  'matrix factorization (explicit, or implicit with BCE: '
                  '"FedMF").'),
    _Registration('gmf', 'research.fedrec.models.ncf',
                  'generalized MF (He et al. 2017), implicit.', 'GMF'),
    _Registration('mlp', 'research.fedrec.models.ncf',
                  'an MLP over the two embeddings (He et al. 2017), '
                  'implicit.', 'MLP'),
    _Registration('neumf', 'research.fedrec.models.ncf',
                  'NeuMF, GMF and MLP joined (He et al. 2017), implicit.',
                  'NEUMF'),
    _Registration('mf_features', 'research.fedrec.models.mf_features',
                  'MF whose item vectors add a projection of the item '
                  'features (--item_features), trained with id dropout: '
                  'new items are scored from their features; explicit or '
                  'implicit.'),
    _Registration('neumf_features', 'research.fedrec.models.ncf_features',
                  'NeuMF whose item vectors (both towers) add a projection '
                  'of the item features (--item_features), trained with id '
                  'dropout: new items are ranked from their features; '
                  'implicit.'),
    _Registration('autorec', 'research.fedrec.models.autorec',
                  'U-AutoRec (Sedhain et al. 2015), implicit, no user part '
                  '(fedavg, fedprox, centralized).'),
)
_REGISTRATIONS = {r.name: r for r in _BUILT_IN}
_MODELS: dict[str, Model] = {}


def register(model: Model) -> None:
  """Adds `model` (e.g. from a test or a user's own module).

  Raises:
    ValueError: a model of that name is registered already, or its config
      class does not name it.
  """
  if model.name in _REGISTRATIONS:
    raise ValueError(f'A model named {model.name!r} is registered already.')
  if getattr(model.config_class, 'model_name', None) != model.name:
    raise ValueError(f'{model.config_class.__name__}.model_name must be '
                     f'{model.name!r}.')
  _REGISTRATIONS[model.name] = _Registration(model.name, None, model.help)
  _MODELS[model.name] = model


def unregister(name: str) -> None:
  """Removes a model added with `register` (built-in ones stay)."""
  if _REGISTRATIONS.get(name) is not None and _REGISTRATIONS[name].module:
    raise ValueError(f'{name} is built in.')
  _REGISTRATIONS.pop(name, None)
  _MODELS.pop(name, None)


def names() -> list[str]:
  return list(_REGISTRATIONS)


def help_text() -> str:
  """One sentence per model, for --model's help."""
  return ' '.join(f'{r.name}: {r.help}' for r in _REGISTRATIONS.values())


def get(name: str) -> Model:
  """The model registered as `name`.

  Raises:
    ValueError: no such model (one line listing the registered ones).
  """
  if name not in _REGISTRATIONS:
    raise ValueError(f'--model={name}: no such model (registered: '
                     f'{", ".join(names())}).')
  if name not in _MODELS:
    registration = _REGISTRATIONS[name]
    model = getattr(importlib.import_module(registration.module),
                    registration.attribute)
    if model.name != name:
      raise ValueError(f'{registration.module}.{registration.attribute} is '
                       f'named {model.name!r}, registered as {name!r}.')
    _MODELS[name] = model
  return _MODELS[name]


def of(config) -> Model:
  """The model a config configures (by its class's `model_name`)."""
  name = getattr(type(config), 'model_name', None)
  if name is None:
    raise ValueError(f'{type(config).__name__} is not a registered model\'s '
                     'config (no model_name).')
  return get(name)
