"""The registry of training methods: `--algorithm` names -> `Method` objects.

A method is one object, in its own module of algorithms/, that

  * validates the settings of a run it is asked to train (`validate`),
  * builds its TFF learning process from the registered model, the client
    store and an aggregator factory (`build_process`, for `Kind.PROCESS`),
  * says how the users it trained are scored (`reconstructs_users`: each user
    rebuilds its own vector from its ratings, or takes its row of a trained
    global user table), and
  * states what its privacy guarantee covers (`privacy_note`).

Orchestration (training/) asks a method what it is and never compares
algorithm names. Adding a method is one module plus one line in `_BUILT_IN`
(or a `register` call, e.g. in a test); its own settings are declared in the
registration (`Setting`), and train.py turns them into flags.

The registry itself is light (no TensorFlow): the binaries list the names and
settings for --help without importing TFF; a method's module is imported the
first time the method is looked up.
"""

import collections
import dataclasses
import enum
import importlib
from typing import Any, Optional

from research.fedrec import defaults


class Kind(enum.Enum):
  PROCESS = 'process'  # A tff.learning process trained round by round.
  COUNTS = 'counts'  # One federated round of item counts, all clients.
  CENTRAL = 'central'  # Trained on the pooled ratings (the baseline).


@dataclasses.dataclass(frozen=True)
class Setting:
  """A method's own hyperparameter (train.py: a flag of the same name)."""

  name: str
  default: float | bool  # A bool: an on/off setting (--name / --noname).
  help: str
  lower_bound: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class ProcessInputs:
  """What a method builds its learning process from."""

  model_config: Any  # models/registry.py: the registered model's config.
  num_items: int
  num_users: int
  optimizers: Any  # fed_recon.Optimizers: client, server, reconstruction.
  recon: Any  # fed_recon.ReconConfig (reconstruction methods).
  pipeline: Any  # data/pipelines.PipelineConfig.
  store_path: str  # The client store (data/client_store.py).
  aggregator: Any  # A tff.aggregators factory (DP, secure sum, compression).
  uniform_weighting: bool
  implicit: bool
  settings: dict  # The method's own settings by name (`Method.settings`).
  # Cohort execution (algorithms/cohorts.py): many users per TFF client; the
  # aggregator is then a weighted one, each cohort weighted by its users'
  # summed weight (the users themselves by `uniform_weighting`).
  in_cohorts: bool = False
  cohort_size: int = 0  # Users per cohort at most (0: automatic).
  optimizer_settings: Any = None  # experiment.OptimizerConfig (names, rates).
  # Cohorts: adaptive zeroing acts on each user in the client work (then
  # `aggregator` does not zero: it would zero a whole cohort).
  zeroing_per_user: bool = False
  # Cohorts under --dp=fixed: the DP query whose preprocess_record clips each
  # user in the client work (`aggregator` is then over preclipped records).
  clip_query: Any = None
  # Cross-silo rounds (--partition=silo, data/silos.py): each dense user id's
  # silo, each silo's users packed as one cohort; and how a silo's record
  # is weighed and clipped (algorithms/cohort_work.SiloRecords). None: users.
  silo_of: Any = None
  silo_records: Any = None
  # Stateful methods (`Method.keeps_client_state`): where the users' local
  # states are kept on the simulated devices' side, and the run's seed that
  # draws their first values.
  client_state_dir: str = ''
  seed: int = 0


class Method:
  """A training method; subclasses override what differs from FedAvg-like.

  Attributes:
    name: the --algorithm value.
    label: how tables and messages name it (e.g. 'FedAvg').
    kind: how orchestration runs it (`Kind`).
    reconstructs_users: users are scored after rebuilding their own vector
      from their ratings (Federated Reconstruction); otherwise they take their
      row of the trained global user table (if the model has a user part).
    keeps_client_state: users keep local parameters between visits and are
      scored with them (algorithms/stateful.py).
    help: one line for --help.
  """

  name: str = ''
  label: str = ''
  kind: Kind = Kind.PROCESS
  reconstructs_users: bool = False
  # Users keep local state between visits (algorithms/stateful.py): they
  # are scored with it, and it is checkpointed with the run.
  keeps_client_state: bool = False
  # Trains in cross-silo rounds (--partition=silo, data/silos.py): its
  # cohort client work takes a silo's users, and no user parameter reaches
  # the server.
  trains_in_silos: bool = False
  help: str = ''

  @property
  def global_user_table(self) -> bool:
    """Its users are scored with their row of a trained global user table
    (if the model has a user part): neither rebuilt nor kept on devices."""
    return not (self.reconstructs_users or self.keeps_client_state)

  def validate(self, config) -> None:
    """Raises ValueError (one line) for settings this method cannot train.

    Args:
      config: the run's training/experiment.ExperimentConfig.
    """
    from research.fedrec.data import splits  # pylint: disable=g-import-not-at-top
    from research.fedrec.models import builder  # pylint: disable=g-import-not-at-top
    builder.check_supported(config.model, config.data.implicit,
                            self.reconstructs_users)
    if config.finetune and not self.finetunes(config.data.implicit):
      methods = ' or '.join(
          f'--algorithm={m.name}' for m in map(get, names())
          if m.finetunes(False))
      raise ValueError('--finetune fine-tunes the user rows of explicit-'
                       f'feedback federated training: add {methods}, drop '
                       '--feedback=implicit.')
    if (self.kind == Kind.PROCESS and not self.reconstructs_users and
        builder.has_user_part(config.model) and
        config.split.kind == splits.SplitKind.USER_DISJOINT and
        not config.finetune):
      raise ValueError(
          f'--algorithm={self.name} cannot be evaluated with '
          f"--split=user_disjoint: {self.label}'s global user table has no "
          'trained row for users unseen in training (use fedrecon, add '
          '--finetune, or a holdout / leave_one_out split).')

    if getattr(config, 'silos', None) and config.silos.enabled and (
        not self.trains_in_silos):
      why = ('it trains no federated process' if self.kind != Kind.PROCESS
             else "its global user table would carry every silo's user "
             'embeddings to the server' if self.global_user_table else
             'it has no silo client work yet')
      silo_methods = ', '.join(m.name for m in map(get, names())
                               if m.trains_in_silos)
      raise ValueError(f'--partition=silo: --algorithm={self.name} cannot '
                       f'train in silos ({why}); these can: {silo_methods}.')

  def finetunes(self, implicit: bool) -> bool:
    """Whether --finetune applies: rows of a global table, explicit ratings."""
    return (self.kind == Kind.PROCESS and not self.reconstructs_users and
            not implicit)

  def settings(self, given: dict) -> dict:
    """This method's settings: `given` over the registered defaults."""
    unknown = sorted(set(given) - {s.name for s in _settings_of(self.name)})
    if unknown:
      raise ValueError(f'--{unknown[0]} is not a setting of '
                       f'--algorithm={self.name}.')
    values = {s.name: s.default for s in _settings_of(self.name)}
    values.update(given)
    for setting in _settings_of(self.name):
      value = values[setting.name]
      if isinstance(setting.default, bool):
        continue
      if setting.lower_bound is not None and not value >= setting.lower_bound:
        raise ValueError(f'--{setting.name}={value:g}: expected a number >= '
                         f'{setting.lower_bound:g}.')
    return values

  def cohort_unsupported(self, config) -> Optional[str]:
    """Why `config` cannot train in cohorts yet (None: it can).

    A method that runs in cohorts overrides this with the combinations its
    cohort client work reproduces exactly (tested against per_client).
    """
    del config
    return f'{self.label} has no cohort client work yet'

  def build_process(self, inputs: ProcessInputs):
    """The tff.learning process; its `next` takes client-id strings."""
    raise NotImplementedError(f'{self.name} trains no learning process.')

  def privacy_note(self, dp: bool) -> str:
    """What the privacy statement adds about this method ('' if nothing)."""
    return privacy_note(self.name, dp)


@dataclasses.dataclass(frozen=True)
class _Registration:
  """What is known of a method without importing its module."""

  name: str
  module: Optional[str]  # Defines METHOD; None: registered as an object.
  help: str
  settings: tuple = ()
  # Appended to the privacy statement, under DP and without (None: as under
  # DP). Here rather than in the module, so that the privacy calculator
  # states them without importing TFF.
  privacy_note: str = ''
  privacy_note_without_dp: Optional[str] = None
  private: bool = True  # Trains under --dp (the privacy calculator lists it).
  # The default --server_learning_rate under explicit feedback (None:
  # defaults.SERVER_LEARNING_RATE), chosen on validation for the main job's
  # budget.
  server_learning_rate: Optional[float] = None


_GLOBAL_TABLE_NOTE = (
    ' Under {name} the global user table is part of the noised update and so '
    'covered too, but each row is noised like every other parameter and '
    'learns little.')
_UNPROTECTED_TABLE_NOTE = (
    ' {name}\'s global user table is unprotected: it reveals each '
    'participating user\'s preferences directly.')

_LOCAL_STATE_NOTE = (
    ' Under {name} {state} stay on the user\'s device between rounds and '
    'are never sent, so they need no noise; they shape the item-side '
    'updates the user sends, and those updates are what user-level DP '
    'clips and noises, so their influence is covered as the rest of the '
    'user\'s data is.')

_ITEM_LEARNING_RATE_SCALE = Setting(
    'item_learning_rate_scale', 1.0,
    'PFedRec and FedRecon + DualPer: the item side\'s client learning rate '
    'is the client rate times this (PFedRec\'s official code: num_items x '
    'lr_eta, 1682 x 80 on ML-100K).', 0.0)

_PROBABILITY_LOSS = Setting(
    'probability_loss', False,
    'PFedRec (implicit feedback): the binary cross-entropy of float32 '
    'sigmoid probabilities as PyTorch\'s BCELoss computes it in their code '
    '(each log clamped at -100, the gradient\'s p(1 - p) at 1e-12), so a '
    'score saturated in float32 passes little or no gradient (none once p '
    'rounds to 1, about logit 17); off: the loss of the logits, which never '
    'saturates.')

# The built-in methods, in --help order.
_BUILT_IN = (
    _Registration(
        'fedrecon', 'research.fedrec.algorithms.fed_recon',
        'Federated Reconstruction: user embeddings never leave the client.',
        server_learning_rate=10.0,
        privacy_note=(
            ' Under Federated Reconstruction each user\'s embedding is '
            'rebuilt on the client and never sent, so it needs no noise.')),
    _Registration(
        'fedavg', 'research.fedrec.algorithms.fed_avg',
        'FedAvg over the whole model; its user table is global, so updates '
        'leak users\' preferences.',
        privacy_note=_GLOBAL_TABLE_NOTE.format(name='FedAvg'),
        privacy_note_without_dp=_UNPROTECTED_TABLE_NOTE.format(name='FedAvg'),
        server_learning_rate=3.0),
    _Registration(
        'fedprox', 'research.fedrec.algorithms.fed_prox',
        'FedProx (Li et al., MLSys 2020): FedAvg whose clients are pulled '
        'towards the global model (--proximal_strength).',
        (Setting('proximal_strength', 0.01,
                 'FedProx: mu of the proximal term mu/2 |w - w_global|^2 '
                 'added to each client\'s loss (0 trains as FedAvg).', 0.0),),
        privacy_note=_GLOBAL_TABLE_NOTE.format(name='FedProx'),
        privacy_note_without_dp=_UNPROTECTED_TABLE_NOTE.format(
            name='FedProx'),
        server_learning_rate=3.0),
    _Registration(
        'fedmf', 'research.fedrec.algorithms.fed_mf',
        'FedMF: MF whose user embedding stays on the device between rounds '
        '(a stateful client); the item side is averaged.',
        privacy_note=_LOCAL_STATE_NOTE.format(
            name='FedMF', state="each user's embedding and bias")),
    _Registration(
        'pfedrec', 'research.fedrec.algorithms.pfedrec',
        'PFedRec (Zhang et al., IJCAI 2023): a score function kept on the '
        'device, item embeddings averaged and fine-tuned per user (dual '
        'personalization).',
        (_ITEM_LEARNING_RATE_SCALE, _PROBABILITY_LOSS),
        privacy_note=_LOCAL_STATE_NOTE.format(
            name='PFedRec', state="each user's score function and its "
            'personal view of the item embeddings')),
    _Registration(
        'fedrecon_dualper', 'research.fedrec.algorithms.fedrecon_dualper',
        'FedRecon + DualPer (PFedRec paper, Table 3): FedRecon whose users '
        'also keep their fine-tuned item embeddings as a personal view.',
        (_ITEM_LEARNING_RATE_SCALE,),
        privacy_note=_LOCAL_STATE_NOTE.format(
            name='FedRecon + DualPer', state="each user's rebuilt embedding "
            'and its personal view of the item embeddings')),
    _Registration(
        'centralized', 'research.fedrec.algorithms.centralized',
        'Keras fit on the pooled ratings only (the baseline).',
        private=False),
    _Registration(
        'popularity', 'research.fedrec.algorithms.popularity',
        'federated item counts (implicit feedback; the floor).'),
)
_REGISTRATIONS = {r.name: r for r in _BUILT_IN}
_METHODS: dict[str, Method] = {}


def register(method: Method, settings: tuple = (),
             privacy_note: str = '') -> None:
  """Adds `method` (e.g. from a test or a user's own module).

  Raises:
    ValueError: a method of that name is registered already.
  """
  if method.name in _REGISTRATIONS:
    raise ValueError(f'A method named {method.name!r} is registered already.')
  _REGISTRATIONS[method.name] = _Registration(
      method.name, None, method.help, tuple(settings), privacy_note)
  _METHODS[method.name] = method


def unregister(name: str) -> None:
  """Removes a method added with `register` (built-in ones stay)."""
  if _REGISTRATIONS.get(name) is not None and _REGISTRATIONS[name].module:
    raise ValueError(f'{name} is built in.')
  _REGISTRATIONS.pop(name, None)
  _METHODS.pop(name, None)


def names(private_only: bool = False) -> list[str]:
  """The registered methods (`private_only`: those that train under DP)."""
  return [r.name for r in _REGISTRATIONS.values()
          if r.private or not private_only]


def help_text() -> str:
  """One sentence per method, for --algorithm's help."""
  return ' '.join(f'{r.name}: {r.help}' for r in _REGISTRATIONS.values())


def all_settings() -> dict[str, tuple[str, Setting]]:
  """Every method's own settings: name -> (the names of the methods that
  take it, joined by ' or ', Setting)."""
  methods, found = collections.defaultdict(list), {}
  for registration in _REGISTRATIONS.values():
    for setting in registration.settings:
      methods[setting.name].append(registration.name)
      found.setdefault(setting.name, setting)
  return {name: (' or '.join(methods[name]), setting)
          for name, setting in found.items()}


def privacy_note(name: str, dp: bool) -> str:
  """The method's addition to the privacy statement (no import of it)."""
  registration = _REGISTRATIONS[name]
  if not dp and registration.privacy_note_without_dp is not None:
    return registration.privacy_note_without_dp
  return registration.privacy_note


def default_server_learning_rate(name: str, implicit: bool) -> float:
  """--server_learning_rate when unset (no import of the method)."""
  chosen = _REGISTRATIONS[name].server_learning_rate
  if implicit or chosen is None:
    return defaults.SERVER_LEARNING_RATE
  return chosen


def server_learning_rate_help() -> str:
  """The per-method defaults, for --server_learning_rate's help."""
  chosen = ', '.join(f'{r.name} {r.server_learning_rate:g}'
                     for r in _REGISTRATIONS.values()
                     if r.server_learning_rate is not None)
  return (f'{chosen} under explicit feedback; '
          f'{defaults.SERVER_LEARNING_RATE:g} otherwise')


def _settings_of(name: str) -> tuple:
  return _REGISTRATIONS[name].settings


def get(name: str) -> Method:
  """The method registered as `name`.

  Raises:
    ValueError: no such method (one line listing the registered ones).
  """
  if name not in _REGISTRATIONS:
    raise ValueError(f'--algorithm={name}: no such method (registered: '
                     f'{", ".join(names())}).')
  if name not in _METHODS:
    method = importlib.import_module(_REGISTRATIONS[name].module).METHOD
    if method.name != name:
      raise ValueError(f'{_REGISTRATIONS[name].module}.METHOD is named '
                       f'{method.name!r}, registered as {name!r}.')
    _METHODS[name] = method
  return _METHODS[name]
