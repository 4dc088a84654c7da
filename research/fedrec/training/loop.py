"""The federated training loop: rounds, checkpoints, metrics and progress.

Program logic in the style of `tff.program`: the learning state and round
number are saved with a `tff.program.FileProgramStateManager` every
`checkpoint_every` rounds, and each round's metrics are released to
`tff.program` release managers (a CSV keyed by round, TensorBoard). A run that
finds a checkpoint resumes after it; since client sampling depends only on
(seed, round) and everything else is in the saved state, the resumed run ends
with exactly the metrics of an uninterrupted one, and the CSV release manager
drops any rows the killed run wrote after its last checkpoint.
"""

import asyncio
import collections
import dataclasses
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow_federated as tff
import tqdm

from research.fedrec.algorithms import cohort_work
from research.fedrec.algorithms import sparse_uploads
from research.fedrec.privacy import accounting
from research.fedrec.training import runtime


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  total_rounds: int
  eval_every: int = 0  # 0: evaluate only after the last round.
  checkpoint_every: int = 10
  progress: bool = True
  # A validation metric (a key `evaluate` reports without its `val/`, e.g.
  # `sampled/hr@10`): the run's result is the model of the evaluated round
  # where it was best (the first such round on ties), as PFedRec reports test
  # metrics at the round of best validation HR@10. '': the last round's model.
  select_by: str = ''

  def __post_init__(self):
    if self.total_rounds < 1:
      raise ValueError('--rounds must be >= 1.')
    if self.eval_every < 0 or self.checkpoint_every < 1:
      raise ValueError('--eval_every must be >= 0 and --checkpoint_every >= 1.')

  @property
  def select_key(self) -> str:
    return f'val/{self.select_by}'


# Validation metrics where lower is better; every other one (ranking metrics)
# is better higher.
LOWER_IS_BETTER = ('rmse', 'mse', 'mae', 'loss', 'bce')


def better(metric: str, value: float, best: float) -> bool:
  """Whether `value` of `metric` beats `best` (NaN never does)."""
  if not math.isfinite(value):
    return False
  if not math.isfinite(best):
    return True
  if metric.split('/')[-1].split('@')[0] in LOWER_IS_BETTER:
    return value < best
  return value > best


@dataclasses.dataclass
class Selection:
  """The model the run reports (`LoopConfig.select_by`)."""

  weights: Any  # tff.learning.models.ModelWeights
  round: int  # 0: no evaluated round yet.
  value: float  # Its validation metric (NaN before the first evaluation).


def checkpoint_structure(process, config: LoopConfig,
                         with_privacy: bool) -> collections.OrderedDict:
  """What a checkpoint holds: state, round, rounds accounted, selection."""
  initial_state = process.initialize()
  structure = collections.OrderedDict(state=initial_state, round=0)
  if with_privacy:
    structure['privacy_rounds'] = 0
  if config.select_by:
    structure['selected'] = collections.OrderedDict(
        weights=process.get_model_weights(initial_state), round=0,
        value=np.float64('nan'))
  return structure


def selection_of(saved, process, config: LoopConfig) -> Selection:
  """The selected model of a checkpoint (the last round's if no `select_by`)."""
  if not config.select_by:
    return Selection(process.get_model_weights(saved['state']),
                     int(saved['round']), float('nan'))
  selected = saved['selected']
  return Selection(selected['weights'], int(selected['round']),
                   float(selected['value']))


def _run(coroutine):
  return asyncio.run(coroutine)


DAMAGED_PREFIX = 'damaged_'


class TrainingDiverged(ValueError):
  """The training loss became non-finite, or no client update was ever used."""


def load_latest(state_manager: tff.program.FileProgramStateManager, structure,
                where: str = 'checkpoints', log=print,
                set_aside_damaged: bool = False):
  """The newest readable checkpoint as `(value, version)`, or `(None, 0)`.

  A checkpoint that cannot be read (a file missing, truncated or overwritten,
  say by a kill during its write) is skipped for the next older one, with one
  line through `log`; with `set_aside_damaged` its folder is renamed to
  `damaged_program_state_N`, so that training can write round N again.

  Raises:
    ValueError: checkpoints exist but none matches the training state of
      these settings (e.g. written by an older fedrec whose server state had
      another aggregator), or none can be read (one line).
  """
  versions = _run(state_manager.get_versions()) or []
  mismatched, damaged = [], []

  def set_aside(version: int, reason: str) -> None:
    damaged.append(version)
    folder = os.path.join(where, f'program_state_{version}')
    older = [v for v in versions if v < version]
    then = (f'trying program_state_{older[-1]}' if older else
            'no older checkpoint')
    if set_aside_damaged:
      aside = os.path.join(where, f'{DAMAGED_PREFIX}program_state_{version}')
      shutil.rmtree(aside, ignore_errors=True)  # Damaged once before.
      os.replace(folder, aside)
      log(f'{folder}: damaged checkpoint ({reason}); set aside as '
          f'{DAMAGED_PREFIX}program_state_{version}, {then}.')
    else:
      log(f'{folder}: damaged checkpoint ({reason}); {then}.')

  for version in reversed(versions):
    try:
      value = _run(state_manager.load(version, structure))
    except ValueError:
      mismatched.append(version)
      continue
    except Exception as e:  # pylint: disable=broad-except
      # TF raises OSError, OpError, IndexError, DecodeError, ... by the damage.
      set_aside(version, ' '.join(str(e).split())[:120] or type(e).__name__)
      continue
    foreign = _foreign(value, structure, version)
    if foreign is None:
      return value, version
    set_aside(version, foreign)
  if mismatched:
    raise ValueError(
        f'{where}: the latest checkpoint does not match the training state of '
        'this version and these settings (written by an older fedrec?); '
        'train it anew with train.py under another --experiment_name (this '
        'run is left as it is).')
  if damaged and not set_aside_damaged:
    raise ValueError(f'{where}: no readable checkpoint (all '
                     f'{len(damaged)} are damaged); rerun train.py with the '
                     'same flags to retrain from round 0.')
  if damaged:
    log(f'{where}: no readable checkpoint left; training starts again from '
        'round 0.')
  return None, 0


def _foreign(value, structure, version: int) -> Optional[str]:
  """Why a loaded checkpoint is not this run's round `version`, or None.

  A checkpoint copied in from another run (other shapes), or renamed to
  another round, loads without error; the folder's name is the round.
  """
  loaded = tff.program.structure_utils.flatten(value)
  expected = tff.program.structure_utils.flatten(structure)
  shapes = [np.shape(v) for v in loaded]
  if shapes != [np.shape(v) for v in expected]:
    return ("its tensors' shapes are not this run's: copied from another "
            'run?')
  if 'round' in value and int(value['round']) != version:
    return (f"it records round {int(value['round'])} in a folder of round "
            f'{version}')
  return None


def trained_rounds(checkpoint_dir: str) -> int:
  """The newest checkpointed round in `checkpoint_dir` (0 if none)."""
  if not os.path.isdir(checkpoint_dir):
    return 0
  rounds = [int(name[len('program_state_'):])
            for name in os.listdir(checkpoint_dir)
            if name.startswith('program_state_') and
            name[len('program_state_'):].isdigit()]
  return max(rounds, default=0)


def flatten_metrics(metrics: Any, prefix: str = '') -> collections.OrderedDict:
  """`{'a': {'b': 1}}` -> `{'a/b': 1.0}`, keeping only numeric leaves."""
  flat = collections.OrderedDict()
  for name, value in tff.program.structure_utils.flatten_with_name(metrics):
    array = np.asarray(value)
    if array.shape == () and array.dtype.kind in 'biuf':
      flat[prefix + name] = float(array)
  return flat


def _train_metrics(output, records: int) -> collections.OrderedDict:
  """Client-work training metrics and the aggregator's measurements.

  A cohort client work's row-sparse upload bytes (summed over its `records`
  uploads: users, or silos) become `bytes_per_round_row_sparse` and
  `bytes_per_client_row_sparse`; the silos' sparsified uploads (--sparsify)
  `bytes_per_round_sparsified` and `bytes_per_client_sparsified`.
  """
  train = collections.OrderedDict(output.metrics['client_work']['train'])
  upload = train.pop(cohort_work.UPLOAD_BYTES, None)
  metrics = flatten_metrics(train, 'train/')
  metrics.update(flatten_metrics(output.metrics.get('aggregator', {}),
                                 'aggregator/'))
  if upload is not None:
    metrics['bytes_per_round_row_sparse'] = float(upload)
    metrics['bytes_per_client_row_sparse'] = float(upload) / max(records, 1)
  uploads = output.metrics.get(sparse_uploads.UPLOADS)
  if uploads is not None:  # --sparsify: what the silos sent.
    sent = float(uploads[sparse_uploads.SENT_BYTES])
    metrics['bytes_per_round_sparsified'] = sent
    metrics['bytes_per_client_sparsified'] = sent / max(records, 1)
  return metrics


def server_learning_rate_setter(
    process: tff.learning.templates.LearningProcess,
    learning_rate_of_round: Callable[[int], float]):
  """A `prepare_round` that sets the server optimizer's learning rate.

  The rate lives in the server optimizer's state (`tff.learning.optimizers`
  keep their hyperparameters there), so it is written with the process's
  `set_hparams` before each round, saved in checkpoints with the rest of the
  state, and reported as `server_learning_rate`.
  """
  def prepare_round(state, round_num):
    rate = float(learning_rate_of_round(round_num))
    hparams = process.get_hparams(state)
    hparams['finalizer']['learning_rate'] = np.float32(rate)
    return (process.set_hparams(state, hparams),
            collections.OrderedDict(server_learning_rate=rate))
  return prepare_round


def run_training_loop(
    process: tff.learning.templates.LearningProcess,
    sample_clients: Callable[[int], Sequence[str]],
    count_examples: Callable[[Sequence[str]], int],
    evaluate: Callable[[Any, int], collections.OrderedDict],
    config: LoopConfig,
    state_manager: tff.program.ProgramStateManager,
    release_managers: Sequence[tff.program.ReleaseManager],
    accountant: Optional[accounting.RoundAccountant] = None,
    static_metrics: Optional[dict[str, float]] = None,
    checkpoint_dir: str = 'checkpoints',
    prepare_round: Optional[Callable[[Any, int], tuple[
        Any, collections.OrderedDict]]] = None,
    tff_runtime: Optional[runtime.Runtime] = None,
    client_states=None,
    records_of: Optional[Callable[[Sequence[str]], int]] = None,
) -> tuple[Any, collections.OrderedDict]:
  """Runs (or resumes) `config.total_rounds` rounds of `process`.

  Args:
    process: A learning process whose `next` takes `(state, client_ids)`.
    sample_clients: Round number (1-based) -> the client ids of that round.
    count_examples: Client ids -> number of training examples they hold.
    evaluate: `(model_weights, round_num)` -> metrics (prefixed `val/...`).
    config: Rounds and cadences.
    state_manager: Saves and loads `{state, round}` checkpoints.
    release_managers: Receive each round's metrics, keyed by round.
    accountant: Under DP: composes each round's event, reports epsilon, and
      stops training before a round that would exceed its budget. Its state
      (rounds composed) is saved in and restored from the checkpoints.
    static_metrics: Values reported every round (e.g. bytes per client).
    checkpoint_dir: Where the checkpoints are, for error messages.
    prepare_round: `(state, round_num)` -> the state to run that round from
      and metrics to report with it (e.g. a scheduled server learning rate
      set into the state's hyperparameters). It depends only on its
      arguments, so a resumed run prepares its rounds as the first run did.
    tff_runtime: The running TFF runtime, told of every finished round (it
      restarts its workers now and then); None: not told.
    client_states: A stateful method's users' local states
      (`algorithms/client_states.ClientStates`): snapshotted with every
      checkpoint (before it) and restored with it, and copied when the
      selected round changes; None: the users keep no state.
    records_of: A round's client ids -> the uploads they make (default:
      one per client; cross-silo rounds: one per silo), for the bytes per
      client and per round.

  Returns:
    The final learning state, the metrics of the last round, and the selected
    model (`config.select_by`; without it, the last round's).
  """
  structure = checkpoint_structure(process, config, accountant is not None)
  saved, _ = load_latest(state_manager, structure, checkpoint_dir,
                         log=lambda m: tqdm.tqdm.write(m, file=sys.stderr),
                         set_aside_damaged=True)
  resumed = saved is not None
  saved = saved or structure
  state, start_round = saved['state'], int(saved['round'])
  if client_states is not None:
    if start_round:
      client_states.restore(start_round)
    else:
      client_states.reset()
  selection = selection_of(saved, process, config)
  trained = start_round
  if accountant is not None:
    accountant.restore(int(saved['privacy_rounds']))

  def checkpoint(round_num):
    if client_states is not None:  # Every checkpoint has its users' states.
      client_states.save(round_num)
    value = collections.OrderedDict(state=state, round=round_num)
    if accountant is not None:
      value['privacy_rounds'] = accountant.rounds
    if config.select_by:
      value['selected'] = collections.OrderedDict(
          weights=selection.weights, round=selection.round,
          value=np.float64(selection.value))
    _run(state_manager.save(value, round_num))

  metrics = collections.OrderedDict()
  shown = collections.OrderedDict()  # Keeps the last validation RMSE shown.
  never_used = True  # Every client update of every round so far was zeroed.
  bar = tqdm.tqdm(total=config.total_rounds, initial=start_round,
                  desc='rounds', unit='round', dynamic_ncols=True,
                  disable=not config.progress)
  if resumed:
    bar.write(f'Resuming after round {start_round} from the checkpoint.')
  upcoming = None  # This round's users, sampled ahead for `prefetch`.
  try:
    for round_num in range(start_round + 1, config.total_rounds + 1):
      if accountant is not None and accountant.would_exceed_budget():
        bar.write(f'Stopping before round {round_num}: it would take epsilon '
                  f'past --stop_at_epsilon={accountant.stop_at_epsilon:g} '
                  f'(now {accountant.epsilon:.4g}).')
        if round_num - 1 > start_round and (
            (round_num - 1) % config.checkpoint_every):
          checkpoint(round_num - 1)
        break
      clients = upcoming or list(sample_clients(round_num))
      upcoming = None
      prepared = collections.OrderedDict()
      if prepare_round is not None:
        state, prepared = prepare_round(state, round_num)
      if hasattr(process, 'prefetch') and round_num < config.total_rounds:
        # Cohorts: the next round's users are packed while this one runs.
        upcoming = list(sample_clients(round_num + 1))
        process.prefetch(upcoming)
      started = time.perf_counter()
      output = process.next(state, clients)
      state = output.state
      seconds = time.perf_counter() - started
      if tff_runtime is not None:
        tff_runtime.round_done()  # Restarts the TFF worker now and then.
      examples = count_examples(clients)
      metrics = collections.OrderedDict(
          clients=len(clients), round_seconds=seconds,
          examples_per_second=examples / seconds if seconds > 0 else 0.0)
      records = records_of(clients) if records_of else len(clients)
      metrics.update(_train_metrics(output, records))
      if 'bytes_per_client' in (static_metrics or {}):
        metrics['bytes_per_round'] = (static_metrics['bytes_per_client'] *
                                      records)
      never_used = never_used and _all_zeroed(metrics)
      _check_diverged(metrics, round_num, never_used,
                      round_num - start_round >= 3 or
                      round_num == config.total_rounds)
      metrics.update(prepared)
      metrics.update(static_metrics or {})
      if accountant is not None:
        accountant.compose()
        metrics['privacy/epsilon'] = accountant.epsilon
      last = round_num == config.total_rounds
      if last or (config.eval_every and round_num % config.eval_every == 0):
        weights = process.get_model_weights(state)
        evaluated = evaluate(weights, round_num)
        _check_evaluation(evaluated, round_num)
        metrics.update(evaluated)
        if config.select_by:
          value = _selection_value(evaluated, config)
          if better(config.select_by, value, selection.value):
            selection = Selection(weights, round_num, value)
            if client_states is not None:
              client_states.select(round_num)
          metrics['selected_round'] = selection.round
      for manager in release_managers:
        _run(manager.release(metrics, key=round_num))
      if last or round_num % config.checkpoint_every == 0:
        checkpoint(round_num)
      trained = round_num
      shown.update(_postfix(metrics))
      bar.set_postfix(shown, refresh=False)
      bar.update(1)
  finally:
    bar.close()
  if not config.select_by:
    selection = Selection(process.get_model_weights(state), trained,
                          float('nan'))
  return state, metrics, selection


def _selection_value(evaluated, config: LoopConfig) -> float:
  """The selection metric of an evaluation (one-line error if missing)."""
  if config.select_key not in evaluated:
    names = sorted(k[len('val/'):] for k in evaluated if k.startswith('val/'))
    raise ValueError(f'--select_by={config.select_by}: not a validation '
                     f'metric of this run (it reports {", ".join(names)}).')
  return float(evaluated[config.select_key])


def _all_zeroed(metrics: collections.OrderedDict) -> bool:
  zeroed = [v for k, v in metrics.items() if k.endswith('zeroed_count')]
  return bool(zeroed) and metrics['clients'] > 0 and all(
      v >= metrics['clients'] for v in zeroed)


def _check_diverged(metrics: collections.OrderedDict, round_num: int,
                    never_used: bool, enough_rounds: bool) -> None:
  """Raises `TrainingDiverged` for a non-finite loss or a run that is stuck.

  Stuck: adaptive zeroing replaced every client update of every round so far
  (for at least 3 rounds, or the whole run), so the model never changed.
  """
  loss = metrics.get('train/loss')
  if loss is not None and not math.isfinite(loss):
    raise TrainingDiverged(
        f'round {round_num}: the training loss is {loss} (the model '
        'diverged); lower --client_learning_rate / --server_learning_rate.')
  if never_used and enough_rounds:
    raise TrainingDiverged(
        f'round {round_num}: every client update of every round so far was '
        'zeroed as too large or non-finite, so the model never changed; '
        'lower --client_learning_rate / --server_learning_rate.')


def _check_evaluation(metrics: collections.OrderedDict,
                      round_num: int) -> None:
  """Raises `TrainingDiverged` for a validation metric beyond float32.

  A round's training loss is computed before its update: a server step that
  blows the model up (even in the last round) shows first here.
  """
  largest = float(np.finfo(np.float32).max)  # What the metric files hold.
  for name, value in metrics.items():
    try:
      finite = abs(float(value)) <= largest
    except (OverflowError, TypeError, ValueError):
      finite = False
    if not finite:
      raise TrainingDiverged(
          f'round {round_num}: the {name} is {value} after the round\'s update '
          '(the model diverged); lower --server_learning_rate / '
          '--client_learning_rate.')


def _postfix(metrics: collections.OrderedDict) -> collections.OrderedDict:
  postfix = collections.OrderedDict()
  for key in ('train/rmse', 'val/rmse'):
    if key in metrics:
      postfix[key.replace('/', '_')] = f'{metrics[key]:.4f}'
  if 'privacy/epsilon' in metrics:
    postfix['eps'] = f'{metrics["privacy/epsilon"]:.3g}'
  postfix['ex/s'] = f'{metrics["examples_per_second"]:.0f}'
  return postfix
