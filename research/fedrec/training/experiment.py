"""One training experiment end to end, from configuration to outputs.

`run_experiment` loads the corpus, splits it, builds (or reuses) the client
store, trains the configured algorithm (Federated Reconstruction, FedAvg or the
centralized baseline; the baseline also runs beside a federated algorithm so
every report shows the cost of federation), evaluates on the held-out users,
and writes everything under `<root_output_dir>/<experiment_name>/`:

    hparams.json    every setting of the run (and the flags that gave it)
    metrics.csv     one row per round: train metrics, periodic validation
                    metrics, seconds per round, examples per second
    tensorboard/    the same metrics as TensorBoard summaries
    checkpoints/    tff.program state: a killed run resumes from the last one
    summary.json    final test metrics of each model, the noise floor
    learning_curves.png
    export/         the trained model for use without TFF (Keras SavedModel
                    and id maps; see inference/export.py)

The library never reads flags; `train.py` turns flags into these configs.
"""

import collections
import contextlib
import csv
import dataclasses
import fcntl
import json
import math
import os
import shutil
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec import defaults
from research.fedrec.algorithms import client_states as client_states_lib
from research.fedrec.algorithms import cohort_work
from research.fedrec.algorithms import cohorts as cohorts_lib
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import optimizers as optimizers_lib
from research.fedrec.algorithms import popularity as popularity_lib
from research.fedrec.algorithms import registry
from research.fedrec.algorithms import sampling as sampling_lib
from research.fedrec.algorithms import sparse_uploads
from research.fedrec.data import client_store
from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import pipelines
from research.fedrec.data import silos as silos_lib
from research.fedrec.data import splits as splits_lib
from research.fedrec.data import synthetic as synthetic_lib
from research.fedrec.evaluation import evaluators
from research.fedrec.evaluation import ranking as ranking_lib
from research.fedrec.evaluation import rating_metrics
from research.fedrec.inference import export as export_lib
from research.fedrec.inference import from_keras
from research.fedrec.inference import reconstruction
from research.fedrec.models import builder
from research.fedrec.models import registry as models_registry
from research.fedrec.models import mf
from research.fedrec.privacy import accounting
from research.fedrec.privacy import aggregation as aggregation_lib
from research.fedrec.privacy import statement
from research.fedrec.reporting import plots
from research.fedrec.training import centralized as centralized_lib
from research.fedrec.training import loop as loop_lib
from research.fedrec.training import runtime
from research.fedrec.utils import json_io
from research.fedrec.utils import phases
from research.fedrec.utils import text_table

to_jsonable = json_io.to_jsonable
write_json_atomically = json_io.write_json_atomically


EXPORT_DIRNAME = export_lib.EXPORT_DIRNAME
# Stateful methods: the users' local states, on the simulated devices' side
# (algorithms/client_states.py), beside the server's checkpoints.
CLIENT_STATES_DIRNAME = client_states_lib.DIRNAME


_EXPLICIT = defaults.BY_FEEDBACK['explicit']
EXECUTIONS = ('auto', 'cohort', 'per_client')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Client, server and reconstruction optimizers (explicit defaults)."""

  client: str = _EXPLICIT['client_optimizer']
  client_learning_rate: float = _EXPLICIT['client_learning_rate']
  server: str = defaults.SERVER_OPTIMIZER
  server_learning_rate: float = defaults.SERVER_LEARNING_RATE
  reconstruction: str = _EXPLICIT['reconstruction_optimizer']
  reconstruction_learning_rate: float = _EXPLICIT[
      'reconstruction_learning_rate']
  # How the server learning rate decays over the rounds (optimizers.Schedule).
  server_schedule: str = 'constant'

  def __post_init__(self):
    for name in ('client_learning_rate', 'server_learning_rate',
                 'reconstruction_learning_rate'):
      value = getattr(self, name)
      if not (math.isfinite(value) and value > 0):
        raise ValueError(f'--{name}={value}: expected a finite number > 0.')
    try:
      optimizers_lib.Schedule(self.server_schedule)
    except ValueError:
      raise ValueError(
          f'--server_lr_schedule={self.server_schedule}: expected one of '
          f'{", ".join(s.value for s in optimizers_lib.Schedule)}.') from None

  @property
  def scheduled(self) -> bool:
    return optimizers_lib.Schedule(
        self.server_schedule) != optimizers_lib.Schedule.CONSTANT

  def server_learning_rate_at(self, round_num: int, total_rounds: int) -> float:
    return optimizers_lib.scheduled_learning_rate(
        self.server_schedule, self.server_learning_rate, round_num,
        total_rounds)

  def create(self) -> fed_recon.Optimizers:
    return fed_recon.Optimizers(
        client=optimizers_lib.create_optimizer(self.client,
                                               self.client_learning_rate),
        server=optimizers_lib.create_optimizer(self.server,
                                               self.server_learning_rate),
        reconstruction=optimizers_lib.create_optimizer(
            self.reconstruction, self.reconstruction_learning_rate))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything that determines a run (grouped into small configs)."""

  root_output_dir: str
  experiment_name: str
  algorithm: str = 'fedrecon'  # A method of algorithms/registry.py.
  # The method's own settings (registry.Setting) by name; unset: defaults.
  method_settings: dict = dataclasses.field(default_factory=dict)
  data: corpus_lib.DataConfig = dataclasses.field(
      default_factory=corpus_lib.DataConfig)
  split: splits_lib.SplitConfig = dataclasses.field(
      default_factory=splits_lib.SplitConfig)
  # Defaults: research/fedrec/defaults.py (explicit feedback; see
  # `default_config` for implicit).
  # The registered model's config (models/registry.py); its class names the
  # model, recorded as `model_name` (the --model value).
  model: builder.ModelConfig = dataclasses.field(
      default_factory=lambda: mf.MFConfig(l2=_EXPLICIT['l2']))
  model_name: str = ''
  pipeline: pipelines.PipelineConfig = dataclasses.field(
      default_factory=lambda: pipelines.PipelineConfig(
          batch_size=defaults.BATCH_SIZE, local_epochs=defaults.CLIENT_EPOCHS))
  recon: fed_recon.ReconConfig = dataclasses.field(
      default_factory=lambda: fed_recon.ReconConfig(
          recon_epochs=defaults.RECON_EPOCHS,
          post_recon_epochs=defaults.CLIENT_EPOCHS))
  # FedRecon's server learning rate (each method has its own default:
  # `default_config`).
  optimizers: OptimizerConfig = dataclasses.field(
      default_factory=lambda: OptimizerConfig(
          server_learning_rate=registry.default_server_learning_rate(
              'fedrecon', implicit=False)))
  loop: loop_lib.LoopConfig = dataclasses.field(
      default_factory=lambda: loop_lib.LoopConfig(
          total_rounds=_EXPLICIT['rounds'], eval_every=defaults.EVAL_EVERY,
          checkpoint_every=defaults.CHECKPOINT_EVERY))
  clients_per_round: int = _EXPLICIT['clients_per_round']
  sampling: sampling_lib.SamplingScheme = sampling_lib.SamplingScheme.UNIFORM
  uniform_weighting: bool = False  # Always uniform under DP.
  dp: aggregation_lib.DPConfig = dataclasses.field(
      default_factory=aggregation_lib.DPConfig)
  aggregation: aggregation_lib.AggregationConfig = dataclasses.field(
      default_factory=aggregation_lib.AggregationConfig)
  # 0 = all validation clients at each periodic evaluation.
  eval_clients: int = defaults.EVAL_CLIENTS
  centralized: centralized_lib.CentralizedConfig = dataclasses.field(
      default_factory=lambda: centralized_lib.CentralizedConfig(
          epochs=defaults.CENTRALIZED_EPOCHS,
          batch_size=defaults.CENTRALIZED_BATCH_SIZE,
          optimizer=defaults.CENTRALIZED_OPTIMIZER,
          learning_rate=defaults.CENTRALIZED_LEARNING_RATE))
  run_centralized_baseline: bool = True
  # FedAvg: also report the test metrics after each test user fine-tunes its
  # own row of the user table (`RatingEvaluator.evaluate_finetuned`).
  finetune: bool = False
  cache_dir: Optional[str] = None  # Default: <root_output_dir>/cache.
  seed: int = 0
  # Implicit feedback: the ranking evaluation (val every eval round, test).
  ranking: ranking_lib.RankingConfig = dataclasses.field(
      default_factory=ranking_lib.RankingConfig)
  # How the sampled users are simulated (EXECUTIONS): each as its own TFF
  # client (per_client, the reference), many per TFF client (cohort:
  # algorithms/cohorts.py, the same numbers to float rounding, much faster),
  # or cohort wherever the method supports the run (auto).
  execution: str = defaults.EXECUTION
  cohort_size: int = 0  # Users per cohort at most (0: automatic).
  # Cross-silo rounds (data/silos.py): stores of many users take part, each
  # every round, instead of sampled users.
  silos: silos_lib.SiloConfig = dataclasses.field(
      default_factory=silos_lib.SiloConfig)

  def __post_init__(self):
    if isinstance(self.model, dict):  # Read back from hparams.json.
      object.__setattr__(self, 'model', json_io.from_jsonable(
          models_registry.get(self.model_name or self.model.get(
              'architecture', 'mf')).config_class,
          self.model))
    recorded = getattr(type(self.model), 'model_name', None)
    if recorded is None or (self.model_name and
                            self.model_name != recorded):
      raise ValueError(f'model={type(self.model).__name__} is not the config '
                       f'of --model={self.model_name or "?"}.')
    object.__setattr__(self, 'model_name', recorded)
    # Recorded with every value, so that hparams.json says what ran.
    object.__setattr__(self, 'method_settings',
                       self.method.settings(self.method_settings))
    self.method.validate(self)
    if (not self.experiment_name or os.sep in self.experiment_name or
        self.experiment_name in (os.curdir, os.pardir)):
      raise ValueError(
          f'--experiment_name={self.experiment_name}: expected the name of a '
          f'directory inside --root_output_dir (non-empty, no {os.sep!r}, not '
          f'{os.curdir!r} or {os.pardir!r}).')
    if self.clients_per_round < 1:
      raise ValueError('--clients_per_round must be >= 1.')
    if self.loop.select_by and self.loop.select_by not in (
        self.selection_metrics):
      raise ValueError(
          f'--select_by={self.loop.select_by}: expected a validation metric '
          f'of this run, one of {", ".join(self.selection_metrics)}.')
    if self.pipeline.exclude_heldout and not self.data.implicit:
      raise ValueError('--negative_protocol=published samples implicit '
                       "feedback's training negatives; it needs "
                       '--feedback=implicit.')
    if self.eval_clients < 0:
      raise ValueError('--eval_clients must be >= 0.')
    if self.execution not in EXECUTIONS:
      raise ValueError(f'--execution={self.execution}: expected one of '
                       f'{", ".join(EXECUTIONS)}.')
    if self.cohort_size < 0:
      raise ValueError(f'--cohort_size={self.cohort_size}: expected >= 0 '
                       '(0: automatic).')
    if self.execution == 'cohort':
      reason = self.cohort_unsupported
      if reason:
        raise ValueError(f'--execution=cohort: {reason}; use '
                         '--execution=per_client or auto.')
    if self.silos.enabled:
      self._check_silos()

  def _check_silos(self) -> None:
    """One line for what cross-silo rounds cannot run (data/silos.py)."""
    if self.execution == 'per_client':
      raise ValueError('--partition=silo trains each silo as one cohort of '
                       'its users; drop --execution=per_client.')
    reason = self.cohort_unsupported
    if reason:
      raise ValueError(f'--partition=silo: {reason} (a silo trains as a '
                       'cohort of its users).')
    if self.dp.enabled and self.silos.weighting != 'ratings':
      raise ValueError(
          '--silo_weighting applies without DP; under --dp every record '
          'counts once (each user under --dp_unit=user, each silo under '
          '--dp_unit=silo).')
    if not self.dp.enabled and self.silos.dp_unit != 'user':
      raise ValueError('--dp_unit=silo needs --dp=fixed or adaptive.')
    if (self.silos.sparsify != 'none' and
        self.aggregation.compression.value != 'none'):
      raise ValueError(
          f'--sparsify={self.silos.sparsify} with --compression: choose one '
          '(a sparsified upload is not quantized yet).')
    if self.dp.enabled and self.silos.sparsify == 'topk':
      raise ValueError(
          '--sparsify=topk with --dp: the rows a silo sends would be chosen '
          'by its users\' ratings, and their ids, sent in the clear, would '
          'reveal which items they rated; use --sparsify=none under DP.')
    if (self.dp.enabled and self.silos.sparsify == 'randomk' and
        self.silos.error_feedback):
      raise ValueError(
          '--sparsify=randomk with --dp needs --noerror_feedback: error '
          'feedback would carry a record\'s clipped update into later '
          'releases, past the clip each release is accounted for.')
    if (self.sampling != sampling_lib.SamplingScheme.UNIFORM and
        self.dp.enabled and self.silos.dp_unit == 'silo'):
      raise ValueError('--dp_unit=silo: every silo takes part in every round '
                       '(sampling its users amplifies no silo-level '
                       'guarantee); drop --client_sampling=poisson.')

  @property
  def selection_metrics(self) -> list[str]:
    """The validation metrics `--select_by` may name."""
    if not self.data.implicit:
      return list(rating_metrics.METRIC_NAMES)
    return [f'{p.value}/{name}@{k}' for p in self.ranking.protocols
            for name in ranking_lib.USER_METRICS for k in self.ranking.ks]

  @property
  def cohort_unsupported(self) -> Optional[str]:
    """Why this run cannot train in cohorts (None: it can)."""
    if self.method.kind != registry.Kind.PROCESS:
      return f'{self.method.label} trains no learning process'
    return self.method.cohort_unsupported(self)

  @property
  def in_cohorts(self) -> bool:
    """Whether the run trains in cohorts (`execution`, resolved).

    A stateful method always trains with the cohort client work; per
    client, each cohort is one user (`users_per_cohort`).
    """
    return self.execution == 'cohort' or (
        self.execution == 'auto' and not self.cohort_unsupported) or (
            self.method.keeps_client_state)

  @property
  def users_per_cohort(self) -> int:
    """--cohort_size, or 1 for a stateful method run per client."""
    if self.method.keeps_client_state and self.execution == 'per_client':
      return 1
    return self.cohort_size

  @property
  def method(self) -> registry.Method:
    return registry.get(self.algorithm)

  @property
  def output_dir(self) -> str:
    return os.path.join(self.root_output_dir, self.experiment_name)

  @property
  def weighted(self) -> bool:
    """Clients weighted by examples: never under DP (one user, one vote)."""
    return not (self.uniform_weighting or self.dp.enabled)


def default_config(root_output_dir: str, experiment_name: str,
                   feedback: corpus_lib.Feedback = corpus_lib.Feedback.EXPLICIT,
                   **overrides) -> 'ExperimentConfig':
  """A run's default settings for `feedback` (defaults.py), with `overrides`.

  The server learning rate is the method's default (`overrides`'
  `algorithm`, else FedRecon). train.py with no flags runs exactly this
  (tests/train_test.py).
  """
  chosen = defaults.BY_FEEDBACK[feedback.value]
  implicit = feedback == corpus_lib.Feedback.IMPLICIT
  synthetic_config = dataclasses.replace(
      synthetic_lib.SyntheticConfig(),
      selection_affinity=chosen['synthetic_selection_affinity'],
      max_ratings_per_user=chosen['synthetic_max_ratings'])
  settings = dict(
      root_output_dir=root_output_dir, experiment_name=experiment_name,
      data=corpus_lib.DataConfig(feedback=feedback,
                                 synthetic_config=synthetic_config),
      model=mf.MFConfig(l2=chosen['l2']),
      optimizers=OptimizerConfig(
          client=chosen['client_optimizer'],
          client_learning_rate=chosen['client_learning_rate'],
          reconstruction=chosen['reconstruction_optimizer'],
          reconstruction_learning_rate=chosen[
              'reconstruction_learning_rate'],
          server_learning_rate=registry.default_server_learning_rate(
              overrides.get('algorithm', 'fedrecon'), implicit)),
      loop=loop_lib.LoopConfig(
          total_rounds=chosen['rounds'], eval_every=defaults.EVAL_EVERY,
          checkpoint_every=defaults.CHECKPOINT_EVERY),
      clients_per_round=chosen['clients_per_round'])
  settings.update(overrides)
  return ExperimentConfig(**settings)


def load_config(experiment_dir: str) -> 'ExperimentConfig':
  """The configuration of the run written to `experiment_dir`.

  Raises:
    ValueError: no readable hparams.json there (one line naming the path).
  """
  path = os.path.join(experiment_dir, 'hparams.json')
  try:
    with open(path) as f:
      config = json.load(f)['config']
    return json_io.from_jsonable(ExperimentConfig, config)
  except FileNotFoundError:
    raise ValueError(f'{path}: no such file; is {experiment_dir} an '
                     'experiment directory written by train.py?') from None
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: not a hparams.json written by train.py '
                     f'({e}).') from None


# Settings a rerun may change without invalidating the run's checkpoints:
# the number of rounds, the progress bar, and where the run and the client
# store are (the directory that holds hparams.json is the run, however its
# root is spelled: relative or absolute, through a symlink, or moved), and the
# users per cohort. (--execution is not: under uniform weighting the
# aggregator's state differs between per_client and cohort.)
_RESUMABLE_CHANGES = ('loop/total_rounds', 'loop/progress', 'root_output_dir',
                      'experiment_name', 'cache_dir', 'cohort_size')


def _flatten(value) -> dict[str, Any]:
  return dict(tff.program.structure_utils.flatten_with_name(value))


def check_same_settings(hparams_path: str, config: 'ExperimentConfig',
                        split: Optional[splits_lib.Split] = None) -> None:
  """Refuses to resume an output directory written with other settings.

  Raises:
    ValueError: naming the settings that differ (only the number of rounds and
      the progress bar may change between a run and its resumption), or the
      data (with `split`: the corpus or split content changed), or
      `--rounds` below the rounds already trained.
  """
  if not os.path.exists(hparams_path):
    return
  if split is not None:
    check_same_data(os.path.dirname(hparams_path), split)
  trained = loop_lib.trained_rounds(
      os.path.join(os.path.dirname(hparams_path), 'checkpoints'))
  if trained > config.loop.total_rounds:
    raise ValueError(
        f'--rounds={config.loop.total_rounds} is below the {trained} rounds '
        f'{os.path.dirname(hparams_path)} has already trained; give '
        f'--rounds={trained} or more, or another --experiment_name.')
  recorded = _read_hparams(hparams_path)['config']
  try:
    # Settings added since the run was written take their defaults, which is
    # what that run used.
    recorded = to_jsonable(json_io.from_jsonable(ExperimentConfig, recorded))
  except (TypeError, ValueError, KeyError):
    pass  # Not parseable any more: compare as recorded.
  before = _flatten(json.loads(json.dumps(recorded)))
  now = _flatten(json.loads(json.dumps(to_jsonable(config))))
  # A decaying server learning rate spans --rounds: more rounds, other rates.
  resumable = tuple(
      k for k in _RESUMABLE_CHANGES
      if k != 'loop/total_rounds' or not config.optimizers.scheduled)
  changed = sorted(k for k in set(before) | set(now)
                   if before.get(k) != now.get(k) and k not in resumable)
  if changed:
    raise ValueError(
        f'{os.path.dirname(hparams_path)} holds a run with other settings '
        f'({", ".join(changed)}); rerun it with its own settings, or choose '
        'another --experiment_name for these.')


def _read_hparams(path: str) -> dict[str, Any]:
  """A run's hparams.json.

  Raises:
    ValueError: unreadable or not written by train.py (one line).
  """
  try:
    with open(path) as f:
      hparams = json.load(f)
    hparams['config']  # pylint: disable=pointless-statement
    return hparams
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: unreadable ({e}): not a run directory '
                     'written by train.py, or a damaged one (it is left as '
                     'it is).') from None


def data_hash(split: splits_lib.Split) -> str:
  """The content hash of the corpus and split a run trains on."""
  return client_store.split_hash(split)


def check_same_data(experiment_dir: str, split: splits_lib.Split) -> None:
  """Refuses a run directory whose recorded data differs from `split`'s.

  Raises:
    ValueError: the corpus or its split changed since the run was written
      (one line). Runs written before the hash was recorded pass.
  """
  path = os.path.join(experiment_dir, 'hparams.json')
  if not os.path.exists(path):
    return
  recorded = _read_hparams(path).get('data_hash')
  now = data_hash(split)
  if recorded is not None and recorded != now:
    raise ValueError(
        f'{experiment_dir} was trained on other data: the corpus or its split '
        f'changed since (content hash {recorded[:12]}, now {now[:12]}); '
        'restore the corpus it was trained on, or train a new run '
        '(train.py --experiment_name=...).')


@contextlib.contextmanager
def _run_directory(output_dir: str):
  """Creates (if new) and locks the run directory for this process.

  A second run into the same directory is refused while the first holds it.
  A run that fails (a user mistake, a bug, memory exhausted) before its first
  checkpoint, or diverges, leaves no directory it created, so that the
  corrected command starts afresh.

  Raises:
    ValueError: another process holds the directory, or it cannot be
      written (one line).
  """
  try:
    os.makedirs(os.path.dirname(os.path.abspath(output_dir)), exist_ok=True)
    try:
      os.mkdir(output_dir)
      created = True
    except FileExistsError:
      created = False
    fd = os.open(output_dir, os.O_RDONLY)
  except OSError as e:
    raise ValueError(f'{output_dir}: cannot create the run directory '
                     f'({e.strerror}); choose a writable --root_output_dir.'
                     ) from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise ValueError(
          f'{output_dir} is in use by another run right now; wait for it to '
          'finish or choose another --experiment_name.') from None
    if not os.access(output_dir, os.W_OK):
      raise ValueError(f'{output_dir}: the run directory is not writable; '
                       'choose another --root_output_dir.')
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      # Any failure: a mistake, a diverged model, a bug, memory exhausted.
      checkpoints = os.path.join(output_dir, 'checkpoints')
      if created and (isinstance(e, loop_lib.TrainingDiverged) or
                      not loop_lib.trained_rounds(checkpoints)):
        shutil.rmtree(output_dir, ignore_errors=True)
      raise
  finally:
    os.close(fd)


def _prefixed(metrics: collections.OrderedDict,
              prefix: str) -> collections.OrderedDict:
  return collections.OrderedDict((f'{prefix}/{k}', v)
                                 for k, v in metrics.items())


def build_process(config: ExperimentConfig, data: corpus_lib.Corpus,
                   store_path: str, model_config: builder.ModelConfig,
                   noise_multiplier: Optional[float] = None,
                   silo_of: Optional[np.ndarray] = None):
  """The training process, with the configured model-update aggregator.

  `silo_of` (`silo_assignment`; `config.silos.enabled`): each dense user id's
  silo; every round each silo's users train as one cohort.
  """
  in_cohorts = config.in_cohorts
  # In cohorts the users are weighted inside each cohort, and the cohorts by
  # their users' summed weight; adaptive zeroing acts on each user there.
  # Under DP each user is clipped there too, and the server only noises.
  zeroing_per_user = in_cohorts and config.aggregation.zeroing
  clip_per_user = in_cohorts and config.dp.enabled
  records_per_round = config.clients_per_round
  users_per_record = (cohorts_lib.max_users(config.users_per_cohort)
                      if in_cohorts else 1)
  silo_records = None
  if silo_of is not None:
    # A silo's record sums all of its users' clipped updates (user-level
    # DP), or is the silo's own clipped update (silo-level DP).
    silo_records = cohort_work.SiloRecords(
        uniform=config.silos.weighting == 'uniform',
        clip_silo=config.dp.enabled and config.silos.dp_unit == 'silo',
        sparsify=sparse_uploads.SparsifyConfig.of(config.silos,
                                                  dp=config.dp.enabled),
        residual_dir=os.path.join(config.output_dir,
                                  sparse_uploads.DIRNAME),
        seed=config.seed)
    if silo_records.clip_silo:
      records_per_round, users_per_record = config.silos.num_silos, 1
    else:
      users_per_record = int(np.bincount(silo_of).max())
  aggregator = aggregation_lib.build_aggregator(
      config.dp, dataclasses.replace(config.aggregation, zeroing=False)
      if zeroing_per_user else config.aggregation, noise_multiplier,
      records_per_round, weighted=config.weighted or in_cohorts,
      preclipped=clip_per_user, users_per_record=users_per_record)
  clip_query = (aggregation_lib.dp_query(
      config.dp, noise_multiplier, records_per_round)
                if clip_per_user else None)
  return config.method.build_process(registry.ProcessInputs(
      model_config=model_config, num_items=data.num_items,
      num_users=data.num_users, optimizers=config.optimizers.create(),
      recon=config.recon, pipeline=config.pipeline, store_path=store_path,
      aggregator=aggregator, uniform_weighting=not config.weighted,
      implicit=data.implicit, settings=config.method_settings,
      in_cohorts=in_cohorts, cohort_size=config.users_per_cohort,
      optimizer_settings=config.optimizers, zeroing_per_user=zeroing_per_user,
      clip_query=clip_query,
      client_state_dir=os.path.join(config.output_dir, CLIENT_STATES_DIRNAME),
      seed=config.seed, silo_of=silo_of, silo_records=silo_records))


def fitted_to_silos(config: ExperimentConfig, data: corpus_lib.Corpus,
                    num_training_users: int
                    ) -> tuple[ExperimentConfig, Optional[np.ndarray]]:
  """`config` as a cross-silo run trains it, and each dense user id's silo
  (`silo_assignment`); without --partition=silo, `config` and None.

  Every silo takes part in every round, with every one of its users
  (uniform sampling: `clients_per_round` becomes all training users), or
  under --client_sampling=poisson each user with probability
  clients_per_round / users (a silo none of whose users is drawn sends
  nothing that round).
  """
  silo_of = silo_assignment(config, data)
  if silo_of is None:
    return config, None
  if config.sampling == sampling_lib.SamplingScheme.POISSON:
    return config, silo_of
  return dataclasses.replace(
      config, clients_per_round=num_training_users), silo_of


def silo_assignment(config: ExperimentConfig,
                    data: corpus_lib.Corpus) -> Optional[np.ndarray]:
  """Each dense user id's silo under --partition=silo (else None).

  Raises:
    ValueError / ratings_lib.DataError: no user file for a field key, no
      such field, fewer users or values than silos (one line).
  """
  if not config.silos.enabled:
    return None
  values = None
  if config.silos.needs_user_info:
    info = data.user_info(config.data)
    values = silos_lib.user_values(info.fields, config.silos.key,
                                   info.source)
  return silos_lib.assign(data.num_users, config.silos, config.seed, values)


def resolve_privacy(config: ExperimentConfig, num_training_users: int,
                    log=print) -> Optional[accounting.RoundAccountant]:
  """The run's accountant under DP (noise calibrated if a target is given).

  Raises:
    ValueError: impossible settings (one line).
  """
  if not config.dp.enabled:
    return None
  dp = config.dp
  # The protected unit: a user, or under --dp_unit=silo a whole silo (every
  # silo in every round). delta stays below 1 / users either way.
  units, per_round = num_training_users, config.clients_per_round
  if config.silos.enabled and config.silos.dp_unit == 'silo':
    units = per_round = config.silos.num_silos
  if dp.prior_noise_multiplier is not None:
    withheld = from_keras.user_prior_withheld(config) or (
        None if config.method.kind == registry.Kind.PROCESS else
        'the method trains no model')
    if withheld:
      raise ValueError(f'--dp_prior_noise_multiplier: this run releases no '
                       f'user prior ({withheld}); drop the flag.')
  setting = accounting.PrivacySetting(
      num_users=units, clients_per_round=per_round, sampling=config.sampling,
      delta=(dp.target_delta if dp.target_delta is not None else
             accounting.default_delta(num_training_users)),
      accountant=dp.accountant,
      release_noise_multiplier=dp.prior_noise_multiplier)
  if dp.noise_multiplier is not None:
    noise = dp.noise_multiplier
    if not noise > 0:  # Clipping alone is for tests of the aggregator.
      raise ValueError(f'--dp_noise_multiplier={noise:g} gives no privacy '
                       '(epsilon is infinite): give a multiplier > 0, or '
                       'train without --dp.')
  else:
    noise = setting.calibrate(dp.target_epsilon, config.loop.total_rounds)
  if dp.mechanism == aggregation_lib.Mechanism.ADAPTIVE:
    aggregation_lib.check_adaptive_noise(noise, per_round)
  first_round = setting.epsilon(noise, 1)
  if dp.stop_at_epsilon is not None and first_round > dp.stop_at_epsilon:
    raise ValueError(
        f'--stop_at_epsilon={dp.stop_at_epsilon:g} is below the epsilon of '
        f'one round ({first_round:.4g} at noise multiplier {noise:.4g}): no '
        'round could be trained; raise it, or add noise.')
  accountant = accounting.RoundAccountant(setting, noise,
                                          dp.stop_at_epsilon)
  planned = setting.epsilon(noise, config.loop.total_rounds)
  log(f'DP ({dp.mechanism.value} clipping): noise multiplier {noise:.4f}'
      + (f' (calibrated for epsilon {dp.target_epsilon:g})'
         if dp.noise_multiplier is None else '')
      + f', delta {setting.delta:.3g}, q {setting.sampling_probability:.4f}, '
      f'epsilon {planned:.4g} after {config.loop.total_rounds} rounds '
      + (f'and the user prior\'s release (noise multiplier '
         f'{dp.prior_noise_multiplier:g}) '
         if dp.prior_noise_multiplier is not None else '')
      + f'({dp.accountant.value.upper()}). '
      + ('Each silo is one record (silo-level DP).'
         if units != num_training_users else
         'Clients are weighted uniformly under DP.'))
  return accountant


def _run_federated(config: ExperimentConfig, data: corpus_lib.Corpus,
                   split: splits_lib.Split, store_path: str,
                   model_config: builder.ModelConfig,
                   accountant: Optional[accounting.RoundAccountant],
                   tff_runtime: runtime.Runtime,
                   silo_of: Optional[np.ndarray] = None):
  """Trains the federated algorithm on the running `tff_runtime`.

  Returns:
    Its test metrics by name (the algorithm's, and FedAvg's fine-tuned ones
    with `config.finetune`), the trained model as a Keras model, the round
    whose model they are (the last, or the best on validation with
    `config.loop.select_by`), that model's global weights, and a stateful
    method's users' states of that round (else None).
  """
  process = build_process(
      config, data, store_path, model_config,
      accountant.noise_multiplier if accountant is not None else None,
      silo_of)
  update_shapes = [
      w.shape for w in process.get_model_weights(process.initialize()).trainable]
  static_metrics = {'bytes_per_client': float(
      aggregation_lib.bytes_per_client(update_shapes, config.dp,
                                       config.aggregation, config.weighted))}
  sampler = sampling_lib.ClientSampler(
      client_store.get_client_ids(store_path, client_store.TRAIN),
      config.clients_per_round, config.sampling, config.seed)
  counts = client_store.get_num_examples(store_path, client_store.TRAIN)
  cap = config.pipeline.max_examples_per_user or np.iinfo(np.int64).max
  if data.implicit:
    evaluator = evaluators.RankingEvaluator(config, data, split, model_config)
    # Negatives are drawn per round: the ids tell each dataset its round.
    sample = lambda r: client_store.round_client_ids(sampler.sample(r), r)
  else:
    evaluator = evaluators.RatingEvaluator(config, data, split, model_config)
    sample = sampler.sample

  def count_examples(clients):
    return sum(min(counts[c.split(client_store.ROUND_SEPARATOR)[0]], cap)
               for c in clients)

  # A stateful method's users are scored with the states on their devices.
  states = getattr(process, 'client_states', None)

  def evaluate_val(model_weights, round_num):
    del round_num  # The same validation clients every time.
    if not len(split.val.query):  # pylint: disable=g-explicit-length-test
      return collections.OrderedDict()  # No validation split (e.g. 0%).
    return _prefixed(
        evaluator.evaluate(model_weights, 'val', config.eval_clients,
                           client_states=states and states.view()), 'val')

  out = config.output_dir
  checkpoint_dir = os.path.join(out, 'checkpoints')
  state_manager = tff.program.FileProgramStateManager(
      checkpoint_dir, keep_total=2, keep_first=False)
  release_managers = [
      tff.program.CSVFileReleaseManager(os.path.join(out, 'metrics.csv'),
                                        key_fieldname='round'),
      tff.program.TensorBoardReleaseManager(os.path.join(out, 'tensorboard')),
  ]
  prepare_round = None
  if config.optimizers.scheduled:
    prepare_round = loop_lib.server_learning_rate_setter(
        process, lambda r: config.optimizers.server_learning_rate_at(
            r, config.loop.total_rounds))

  # Kept with every checkpoint: the users' states and the silos' residuals.
  stores = [s for s in (states, getattr(getattr(process, 'uploads', None),
                                        'store', None)) if s is not None]
  _, _, selection = loop_lib.run_training_loop(
      process, sample, count_examples, evaluate_val, config.loop,
      state_manager, release_managers, accountant, static_metrics,
      checkpoint_dir, prepare_round, tff_runtime,
      client_states_lib.StoreGroup(stores) if stores else None,
      None if silo_of is None else lambda clients: len(
          {int(silo_of[int(c.split(client_store.ROUND_SEPARATOR)[0])])
           for c in clients}))
  weights = selection.weights
  if states is not None:
    # The users as their devices keep them (of the selected round).
    states = states.view(selected=bool(config.loop.select_by))
    from research.fedrec.algorithms import stateful  # pylint: disable=g-import-not-at-top
    keras_model = stateful.table_model(model_config, data.num_items,
                                       data.num_users, weights, states)
  else:
    keras_model = from_keras.keras_model_of(
        model_config, data.num_items,
        None if not config.method.global_user_table else data.num_users,
        weights)
  results = collections.OrderedDict(
      [(config.algorithm, evaluator.evaluate(weights, 'test',
                                             client_states=states))])
  if config.finetune:
    results[f'{config.algorithm}_finetuned'] = (
        evaluator.evaluate_finetuned(weights, 'test'))
  return results, keras_model, selection.round, weights, states


def _run_popularity(config: ExperimentConfig, data: corpus_lib.Corpus,
                    store_path: str, noise_multiplier: Optional[float]):
  """Federated item counts of all training clients (one round)."""
  clients = client_store.get_client_ids(store_path, client_store.TRAIN)
  aggregator = aggregation_lib.build_aggregator(
      config.dp, config.aggregation, noise_multiplier, len(clients),
      weighted=False)
  counts = popularity_lib.build_counts(data.num_items, store_path, aggregator)
  return np.asarray(counts(clients), np.float64)


def _set_aside_damaged_metrics(output_dir: str, warn) -> None:
  """Moves a metrics.csv without its header (e.g. 0 bytes) out of the way.

  TFF's CSV release manager cannot append to it; the rounds it held are
  not in the checkpoints, so resuming starts a new metrics.csv.
  """
  path = os.path.join(output_dir, 'metrics.csv')
  try:
    with open(path, newline='') as f:
      header = next(csv.reader(f), [])
  except FileNotFoundError:
    return
  except (OSError, UnicodeDecodeError, csv.Error):
    header = []
  if 'round' in header:
    return
  aside = os.path.join(output_dir, 'damaged_metrics.csv')
  os.replace(path, aside)
  warn(f'{path}: damaged (no header row); set aside as damaged_metrics.csv. '
       'The resumed rounds start a new metrics.csv (earlier rounds\' metrics '
       'are not in the checkpoints).')


def _run_centralized(config: ExperimentConfig, data: corpus_lib.Corpus,
                     split: splits_lib.Split, model_config: builder.ModelConfig,
                     ranking_evaluator: Optional[evaluators.RankingEvaluator]):
  """The centralized model's test metrics, the model, and what it chose on
  validation (its epoch and that epoch's validation metrics; None without a
  validation split)."""
  has_val = len(split.val.query) > 0  # pylint: disable=g-explicit-length-test
  if not data.implicit:
    fitted = centralized_lib.train(split, data.num_users, data.num_items,
                                   model_config, config.centralized)
    test = evaluators.rating_metrics_of(fitted.model, split.test)
    val = (evaluators.rating_metrics_of(fitted.model, split.val)
           if has_val else None)
  else:
    per_epoch = []  # Each epoch's validation metrics.

    def validate(model):
      if not has_val:
        return None
      per_epoch.append(ranking_evaluator.evaluate_keras(model, 'val'))
      return per_epoch[-1][_selection_metric(config)]

    fitted = centralized_lib.train_implicit(
        split, data.num_users, data.num_items, model_config,
        config.centralized, config.pipeline.num_negatives, validate,
        config.pipeline.exclude_heldout, config.pipeline.unavailable_items)
    test = ranking_evaluator.evaluate_keras(fitted.model, 'test')
    val = per_epoch[fitted.epoch - 1] if per_epoch else None
  validation = None if val is None else collections.OrderedDict(
      epoch=fitted.epoch, metrics=val)
  return test, fitted.model, validation


@dataclasses.dataclass
class _Run:
  """What a run works on, loaded and checked before anything is written."""

  config: ExperimentConfig
  data: corpus_lib.Corpus
  split: splits_lib.Split
  model_config: builder.ModelConfig
  accountant: Optional[accounting.RoundAccountant]
  store_path: Optional[str]  # The client store, if the method needs one.
  ranking_evaluator: Optional[evaluators.RankingEvaluator]  # Implicit only.
  # The round whose model gave the test metrics (`--select_by`; else None).
  selected_round: Optional[int] = None
  silo_of: Optional[np.ndarray] = None  # --partition=silo: each user's silo.
  weights: Any = None  # The federated model reported (a learning process's).
  client_states: Any = None  # Its users' states (a stateful method's).
  centralized_model: Any = None  # The centralized baseline, if trained.
  # Its epoch and validation metrics (with a validation split).
  centralized_validation: Any = None

  @property
  def kind(self) -> registry.Kind:
    return self.config.method.kind


def run_experiment(config: ExperimentConfig,
                   flag_values: Optional[dict[str, Any]] = None,
                   log=print,
                   workers: runtime.Workers = runtime.Workers(),
                   warn=client_store.log_to_stderr
                   ) -> collections.OrderedDict:
  """Runs the experiment and writes its outputs; returns the summary.

  Args:
    config: The run's settings.
    flag_values: The command-line flags that produced `config`, recorded in
      hparams.json.
    log: Where progress messages go.
    warn: Where notices of recovered damage go (default stderr).
    workers: Where TFF runs the rounds (results do not depend on it beyond
      float32 rounding, so it is not a setting of the run).

  Returns:
    The summary also written to summary.json.

  Raises:
    ratings_lib.DataError / ValueError: bad data or settings (one clear line).
  """
  started = time.time()
  run = _prepare(config, log, warn)
  with contextlib.ExitStack() as run_directory:
    with runtime.local_runtime(config.aggregation.secure_aggregation,
                               workers) as tff_runtime:
      # Only settings that passed every check (and reachable workers) leave a
      # run directory; it stays locked until the summary is written.
      run_directory.enter_context(_run_directory(config.output_dir))
      write_json_atomically(
          os.path.join(config.output_dir, 'hparams.json'),
          collections.OrderedDict(flags=flag_values or {}, config=config,
                                  data_hash=data_hash(run.split)))
      results, trained = _train_method(run, tff_runtime, warn)
      results.update(_popularity_floor(run))
    baseline, trained = _centralized_baseline(run, log, trained)
    results.update(baseline)
    # Before the export, which reloads Keras models in a graph of its own.
    silo_rows = _per_silo(run, log)
    if trained is not None:
      with phases.phase('exporting the model'):
        from_keras.export_model(config, run.data, run.split, trained,
                                run.model_config, os.path.join(
                                    config.output_dir, EXPORT_DIRNAME))
    summary = _summary(run, results, time.time() - started)
    if silo_rows:
      summary['silos'] = silo_rows
      summary['silo_summary'] = silo_summary(summary)
      _plot_silos(run, summary)
    write_json_atomically(os.path.join(config.output_dir, 'summary.json'),
                          summary)
    _plot_learning_curves(run, summary)
  return summary


def _prepare(config: ExperimentConfig, log, warn) -> _Run:
  """Loads and splits the corpus, checks every setting, builds the store."""
  tf.keras.utils.set_random_seed(config.seed)
  with phases.phase('loading the corpus'):
    data = corpus_lib.load_corpus(config.data)
    split = splits_lib.split(data.ratings, config.split)
  if not len(split.test.query):  # pylint: disable=g-explicit-length-test
    raise ValueError('The test split is empty: raise --test_fraction or '
                     '--min_ratings_per_user.')
  if config.loop.select_by and not len(split.val.query):  # pylint: disable=g-explicit-length-test
    raise ValueError(f'--select_by={config.loop.select_by} needs a '
                     'validation split; it is empty (raise --val_fraction).')
  check_same_settings(os.path.join(config.output_dir, 'hparams.json'), config,
                      split)
  config = fitted_to_split(config, split)
  model_config = model_config_of(config, split, data)
  log(f'{data.name}: {data.num_users} users, {data.num_items} items, '
      f'{len(data.ratings)} {"interactions" if data.implicit else "ratings"};'
      f' split {config.split.kind.value}: {len(split.train)} train, '
      f'{len(split.val.query)} val, {len(split.test.query)} test.')
  kind = config.method.kind
  training_users = np.unique(split.train.users)
  num_training_users = int(training_users.size)
  silo_of = None
  if kind == registry.Kind.PROCESS:
    # Validates the sampling settings before anything is written.
    config, silo_of = fitted_to_silos(config, data, num_training_users)
    if silo_of is not None:
      sizes = np.bincount(silo_of[training_users],
                          minlength=config.silos.num_silos)
      if not sizes.all():
        raise ValueError(
            f'--partition=silo: silo {int(np.argmin(sizes))} has no training '
            f'user (--silo_key={config.silos.key}); lower --num_silos.')
      poisson = config.sampling == sampling_lib.SamplingScheme.POISSON
      log(f'{config.silos.num_silos} silos by {config.silos.key}, each '
          f'every round as one cohort: {", ".join(map(str, sizes))} training '
          'users' + (f', each drawn with probability '
                     f'{config.clients_per_round / num_training_users:.4g} a '
                     'round.' if poisson else
                     ' (--clients_per_round is not used).'))
    sampling_lib.ClientSampler(training_users.astype(str).tolist(),
                               config.clients_per_round, config.sampling,
                               config.seed)
    log('Users simulated one per TFF client (per_client), each keeping its '
        'local state on its device.' if config.users_per_cohort == 1 else
        'Users simulated in cohorts (many per TFF client).' if
        config.in_cohorts else
        'Users simulated one per TFF client (per_client'
        + ('' if config.execution == 'per_client' else
           f'; not in cohorts: {config.cohort_unsupported}') + ').')
  if kind == registry.Kind.COUNTS:
    # One round in which every training client takes part.
    accountant = resolve_privacy(dataclasses.replace(
        config, clients_per_round=num_training_users,
        loop=dataclasses.replace(config.loop, total_rounds=1)),
                                 num_training_users, log)
    if accountant is not None:
      accountant.compose(1)
  else:
    accountant = resolve_privacy(config, num_training_users, log)
  store_path = None
  if kind != registry.Kind.CENTRAL or data.implicit:
    with phases.phase('building the client store'):
      store_path = client_store.create_client_store(
          split, config.cache_dir or os.path.join(config.root_output_dir,
                                                  'cache'), log=warn)
  ranking_evaluator = None
  if data.implicit:
    ranking_evaluator = evaluators.RankingEvaluator(config, data, split,
                                                    model_config)
    for split_name in ('val', 'test'):  # Bad settings fail before training.
      if len(getattr(split, split_name).query):  # pylint: disable=g-explicit-length-test
        ranking_lib.check_task(ranking_evaluator.partition(split_name).task,
                               config.ranking)
  return _Run(config, data, split, model_config, accountant, store_path,
              ranking_evaluator,
              silo_of=silo_of)


def _train_method(run: _Run, tff_runtime: runtime.Runtime, warn):
  """(test metrics, trained Keras model or None) of a learning process."""
  if run.kind != registry.Kind.PROCESS:
    return collections.OrderedDict(), None
  config = run.config
  _set_aside_damaged_metrics(config.output_dir, warn)
  with phases.phase(f'training ({config.algorithm})'):
    (results, keras_model, selected_round, run.weights,
     run.client_states) = _run_federated(
        config, run.data, run.split, run.store_path, run.model_config,
        run.accountant, tff_runtime, run.silo_of)
  if config.loop.select_by:
    run.selected_round = selected_round
  return results, keras_model


def _popularity_floor(run: _Run) -> collections.OrderedDict:
  """Implicit feedback: the popularity ranking every model must beat.

  With DP only when popularity is the run's method.
  """
  if not run.data.implicit:
    return collections.OrderedDict()
  config = run.config
  dp_noise = (run.accountant.noise_multiplier if run.accountant is not None
              and run.kind == registry.Kind.COUNTS else None)
  if run.kind != registry.Kind.COUNTS and not (
      config.aggregation.secure_aggregation) and (
          config.aggregation.compression == aggregation_lib.Compression.NONE):
    # Beside another method, without DP, the federated round's exact sum
    # gives each item's count of training users over the number of users,
    # which ranks as the counts themselves (tested): counted here, without
    # a TFF round of every user.
    return collections.OrderedDict(
        popularity=run.ranking_evaluator.evaluate_popularity(
            np.bincount(run.split.train.items,
                        minlength=run.data.num_items).astype(np.float64),
            'test'))
  with phases.phase('counting item popularity'):
    counts = _run_popularity(
        config if dp_noise is not None else dataclasses.replace(
            config, dp=aggregation_lib.DPConfig()),
        run.data, run.store_path, dp_noise)
  return collections.OrderedDict(
      popularity=run.ranking_evaluator.evaluate_popularity(counts, 'test'))


def _centralized_baseline(run: _Run, log, trained):
  """(its test metrics, the model to export) after the centralized baseline.

  The baseline trains when it is the method, or beside a learning process
  unless --nocentralized_baseline; as the method, it is the model exported.
  """
  config = run.config
  if not (run.kind == registry.Kind.CENTRAL or
          (config.run_centralized_baseline and
           run.kind == registry.Kind.PROCESS)):
    return collections.OrderedDict(), trained
  log('Training the centralized baseline ...')
  with phases.phase('training the centralized baseline'):
    metrics, model, run.centralized_validation = _run_centralized(
        config, run.data, run.split, run.model_config, run.ranking_evaluator)
  run.centralized_model = model
  if run.centralized_validation is not None:
    name = (_selection_metric(config) if run.data.implicit else 'rmse')
    log(f'Centralized baseline: epoch {run.centralized_validation["epoch"]} '
        f'kept, the best on validation {name} ('
        f'{run.centralized_validation["metrics"][name]:.4f}).')
  return (collections.OrderedDict(centralized=metrics),
          model if run.kind == registry.Kind.CENTRAL else trained)


def _summary(run: _Run, results: collections.OrderedDict,
             wall_seconds: float) -> collections.OrderedDict:
  """The run's summary.json."""
  config, data, split = run.config, run.data, run.split
  return collections.OrderedDict(
      experiment=config.experiment_name,
      dataset=data.name,
      algorithm=config.algorithm,
      seed=config.seed,
      num_users=data.num_users,
      num_items=data.num_items,
      num_ratings=len(data.ratings),
      test_ratings=len(split.test.query),
      feedback=config.data.feedback.value,
      model=config.model_name,
      test_metrics=results,
      # With --select_by: the round (best on validation) of the federated
      # model's test metrics; the centralized baseline picks its own epoch.
      selected_round=run.selected_round,
      # The centralized baseline's epoch (best on validation) and that
      # epoch's validation metrics, to choose its settings by.
      centralized_validation=run.centralized_validation,
      noise_floor_test_rmse=data.noise_floor_rmse(split.test.query),
      privacy=_privacy_summary(config, run.accountant),
      wall_seconds=wall_seconds,
  )


def _per_silo(run: _Run, log) -> list[collections.OrderedDict]:
  """Cross-silo runs: each silo's test users under the federated model, the
  centralized model of the pooled data and the silo's local-only model (the
  same model trained centrally on the silo's own data alone)."""
  if run.silo_of is None or run.weights is None:
    return []
  config, data = run.config, run.data
  rows, evaluated = [], []
  scores = collections.defaultdict(dict)  # Silo -> model -> its metrics.
  with phases.phase('evaluating each silo'):
    for k in range(config.silos.num_silos):
      split = splits_lib.of_users(run.split, run.silo_of == k)
      rows.append(collections.OrderedDict(
          silo=k, training_users=int(np.unique(split.train.users).size),
          training_ratings=len(split.train),
          test_users=int(split.test.users.size),
          test_ratings=len(split.test.query)))
      if not len(split.test.query):  # pylint: disable=g-explicit-length-test
        continue
      model_config = model_config_of(config, split, data)
      evaluator = (evaluators.RankingEvaluator if data.implicit else
                   evaluators.RatingEvaluator)(config, data, split,
                                               model_config)
      evaluated.append((k, split, model_config, evaluator))
    # The Keras models first: scoring a stateful method's users builds a
    # Keras model in a graph of its own, which invalidates earlier ones.
    for k, split, model_config, evaluator in evaluated:
      if run.centralized_model is None:
        break
      scores[k]['centralized'] = (
          evaluator.evaluate_keras(run.centralized_model, 'test')
          if data.implicit else evaluators.rating_metrics_of(
              run.centralized_model, split.test))
      log(f'Training silo {k}\'s local-only model ...')
      scores[k]['local_only'], _, _ = _run_centralized(
          config, data, split, model_config,
          evaluator if data.implicit else None)
    for k, _, _, evaluator in evaluated:
      scores[k][config.algorithm] = evaluator.evaluate(
          run.weights, 'test', client_states=run.client_states)
  for row in rows:
    row.update((m, scores[row['silo']][m])
               for m in silo_models(config.algorithm)
               if m in scores[row['silo']])
  return rows


def silo_models(algorithm: str) -> tuple[str, ...]:
  """The models a silo's row compares, in the order shown."""
  return ('local_only', algorithm, 'centralized')


def silo_metric(summary) -> str:
  """The metric the per-silo table and plot show."""
  return ('sampled/ndcg@10' if summary.get('feedback') == 'implicit' else
          'rmse')


def silo_summary(summary) -> collections.OrderedDict:
  """The per-silo comparison in a few numbers (for tables): each model's
  metric over all silos' test ratings pooled (`local_only`: each user scored
  by its own silo's model), and the federated model's gain over each silo's
  local-only model (positive: federated better), least and mean, and how
  many silos it beats."""
  metric = silo_metric(summary)
  rows = [r for r in summary['silos'] if summary['algorithm'] in r]
  result = collections.OrderedDict(metric=metric)
  weights = np.array([r['test_ratings'] for r in rows], np.float64)
  for model in silo_models(summary['algorithm']):
    if rows and all(model in r for r in rows):
      values = np.array([r[model][metric] for r in rows])
      # RMSE pools as the root of the rating-weighted mean square; ranking
      # metrics are user means, so they pool by test users.
      if metric == 'rmse':
        pooled = float(np.sqrt(np.sum(weights * values**2) / weights.sum()))
      else:
        users = np.array([r['test_users'] for r in rows], np.float64)
        pooled = float(np.sum(users * values) / users.sum())
      result[f'{model}_{metric}'] = pooled
  if rows and all('local_only' in r for r in rows):
    sign = -1.0 if metric == 'rmse' else 1.0
    gains = [sign * (r[summary['algorithm']][metric] - r['local_only'][metric])
             for r in rows]
    result.update(min_gain=float(min(gains)), mean_gain=float(np.mean(gains)),
                  silos_beaten=int(sum(g > 0 for g in gains)),
                  silos=len(gains))
  return result


def _plot_silos(run: _Run, summary) -> None:
  metric = silo_metric(summary)
  rows = summary['silos']
  models = [m for m in silo_models(run.config.algorithm)
            if any(m in r for r in rows)]
  plots.plot_grouped_bars(
      [f'silo {r["silo"]}\n{r["test_users"]} users' for r in rows],
      {m: [r[m].get(metric, float('nan')) if m in r else float('nan')
           for r in rows] for m in models},
      f'test {metric}', f'{run.config.experiment_name}: each silo\'s test '
      f'users ({run.config.silos.key} silos)',
      os.path.join(run.config.output_dir, 'silos.png'))


def format_silos(summary) -> str:
  """The per-silo table of a cross-silo run's summary ('' otherwise)."""
  rows = summary.get('silos')
  if not rows:
    return ''
  metric = silo_metric(summary)
  models = [m for m in silo_models(summary['algorithm'])
            if any(m in r for r in rows)]
  table = [('silo', 'training users', 'test ratings') + tuple(
      f'{m} {metric}' for m in models)]
  for row in rows:
    table.append((str(row['silo']), str(row['training_users']),
                  str(row['test_ratings'])) + tuple(
                      f'{row[m][metric]:.4f}' if m in row else '-'
                      for m in models))
  return text_table.format_rows(table)


def _plot_learning_curves(run: _Run, summary) -> None:
  """learning_curves.png beside metrics.csv, if the run trained rounds."""
  output_dir = run.config.output_dir
  metrics_csv = os.path.join(output_dir, 'metrics.csv')
  if os.path.exists(metrics_csv):
    plots.plot_learning_curves(
        metrics_csv, os.path.join(output_dir, 'learning_curves.png'),
        reference_lines=_reference_lines(summary),
        **(dict(curves=plots.NDCG_CURVES, ylabel='NDCG@10')
           if run.data.implicit else {}))


def fitted_to_split(config: ExperimentConfig,
                    split: splits_lib.Split) -> ExperimentConfig:
  """`config` with what its split implies (no flag sets it): under implicit
  feedback and item_cold_start, the cold items are never training negatives
  (`PipelineConfig.unavailable_items`; they do not exist yet)."""
  if not config.data.implicit or not len(split.test.cold_items):  # pylint: disable=g-explicit-length-test
    return config
  return dataclasses.replace(config, pipeline=dataclasses.replace(
      config.pipeline, unavailable_items=tuple(
          int(i) for i in split.test.cold_items)))


def model_config_of(config: ExperimentConfig, split: splits_lib.Split,
                    data: corpus_lib.Corpus) -> builder.ModelConfig:
  """The model's config fitted to the training data (`Model.prepared`).

  Given the training mean rating (e.g. MF's g starts there), or 0 under
  implicit feedback (logit 0: every training label is 1), and the corpus's
  item side information for a model that reads item features.
  """
  mean = 0.0 if config.data.implicit else float(np.mean(split.train.ratings))

  genome = 'genome' in getattr(config.model, 'item_features', ())
  return builder.prepared(config.model, mean,
                          lambda: data.item_info(config.data, genome))


def _selection_metric(config: ExperimentConfig) -> str:
  """The validation metric that picks the centralized baseline's epoch."""
  protocol = (ranking_lib.Protocol.SAMPLED
              if ranking_lib.Protocol.SAMPLED in config.ranking.protocols else
              config.ranking.protocols[0])
  k = 10 if 10 in config.ranking.ks else max(config.ranking.ks)
  return f'{protocol.value}/ndcg@{k}'


def _privacy_summary(config: ExperimentConfig,
                     accountant: Optional[accounting.RoundAccountant]):
  """The privacy block of summary.json, with its plain-language statement."""
  if accountant is None:
    return collections.OrderedDict(
        mechanism='none',
        statement=statement.privacy_statement(
            config.method.privacy_note(dp=False), 'none'))
  setting = accountant.setting
  unit = ('user' if not config.silos.enabled else
          'silo' if config.silos.dp_unit == 'silo' else 'user_in_silos')
  return collections.OrderedDict(
      mechanism=config.dp.mechanism.value,
      unit=unit.split('_')[0],
      noise_multiplier=accountant.noise_multiplier,
      prior_noise_multiplier=config.dp.prior_noise_multiplier,
      target_epsilon=config.dp.target_epsilon,
      epsilon=accountant.epsilon,
      delta=setting.delta,
      rounds=accountant.rounds,
      sampling=setting.sampling.value,
      sampling_probability=setting.sampling_probability,
      accountant=setting.accountant.value,
      statement=statement.privacy_statement(
          config.method.privacy_note(dp=True) + _sparsify_note(config) +
          _prior_note(config),
          config.dp.mechanism.value,
          accountant.epsilon, setting.delta, accountant.rounds,
          setting.sampling.value, setting.accountant.value, unit))


def _prior_note(config: ExperimentConfig) -> str:
  """What --dp_prior_noise_multiplier adds to the privacy statement."""
  dp = config.dp
  if dp.prior_noise_multiplier is None:
    return ''
  return (' At the end of training the run releases its user prior (the '
          'mean training user and the demographics map that serve a new '
          'user with no rating): sums over the training users of their '
          f'vectors and biases, each clipped to L2 norm {dp.prior_clip:g}, '
          'and of their demographics, with Gaussian noise of multiplier '
          f'{dp.prior_noise_multiplier:g} x the sensitivity; epsilon '
          'includes it. The demographic vocabulary (the values of the '
          'corpus\'s user file) is treated as public.')


def _sparsify_note(config: ExperimentConfig) -> str:
  """What --sparsify adds to a DP run's privacy statement."""
  if config.silos.sparsify == 'none':
    return ''
  return (f' Each silo sends a {config.silos.sparsify_fraction:g} share of '
          'each item table\'s rows, the same rows for every silo, drawn from '
          'public randomness and taken from its clipped record (the bound '
          'is unchanged); the server keeps only those rows of the noised '
          'aggregate.')


# Columns of the ranking summary table (implicit feedback).
SUMMARY_RANKING_METRICS = ('full/hr@10', 'full/ndcg@10', 'sampled/hr@10',
                           'sampled/ndcg@10')


def _reference_lines(summary) -> dict[str, float]:
  if summary.get('feedback') == 'implicit':
    return {f'{name} test NDCG@10 (full)': metrics['full/ndcg@10']
            for name, metrics in summary['test_metrics'].items()
            if name != summary['algorithm'] and 'full/ndcg@10' in metrics}
  lines = {}
  algorithm = summary['algorithm']
  if algorithm in summary['test_metrics']:  # (Once if it is centralized.)
    lines[f'{algorithm} test RMSE'] = summary['test_metrics'][algorithm]['rmse']
  if 'centralized' in summary['test_metrics']:
    lines['centralized test RMSE'] = summary['test_metrics']['centralized'][
        'rmse']
  if summary['noise_floor_test_rmse'] is not None:
    lines['noise floor (true model)'] = summary['noise_floor_test_rmse']
  return lines


def format_summary(summary) -> str:
  """A side-by-side table of the held-out test metrics."""
  if summary.get('feedback') == 'implicit':
    # item_cold_start: sampled HR@10 / NDCG@10 on warm and on cold items too.
    names = [m for m in SUMMARY_RANKING_METRICS + tuple(
        f'{s}/sampled/{m}@10' for s in ranking_lib.ITEM_SLICES
        for m in ('hr', 'ndcg'))
             if all(m in v for v in summary['test_metrics'].values())]
    rows = [('model',) + tuple(n.replace('_items/', ' ').replace(
        '/', ' ').upper().replace('FULL', 'full').replace(
            'SAMPLED', 'sampled').replace('WARM', 'warm').replace(
                'COLD', 'cold') for n in names)]
    for name, metrics in summary['test_metrics'].items():
      rows.append((name,) + tuple(f'{metrics[n]:.4f}' for n in names))
    return text_table.format_rows(rows)
  # item_cold_start: RMSE on warm and on cold items beside the overall one.
  sliced = all('cold_items/rmse' in v
               for v in summary['test_metrics'].values())
  rows = [('model', 'test RMSE', 'MAE', 'rating acc.') + (
      ('warm items RMSE', 'cold items RMSE') if sliced else ())]
  for name, metrics in summary['test_metrics'].items():
    row = (name, f'{metrics["rmse"]:.4f}', f'{metrics["mae"]:.4f}',
           f'{metrics["rating_accuracy"]:.4f}')
    if sliced:
      row += (f'{metrics["warm_items/rmse"]:.4f}',
              f'{metrics["cold_items/rmse"]:.4f}')
    rows.append(row)
  if summary['noise_floor_test_rmse'] is not None:
    rows.append(('noise floor (true model)',
                 f'{summary["noise_floor_test_rmse"]:.4f}', '', '') + (
                     ('', '') if sliced else ()))
  return text_table.format_rows(rows)
