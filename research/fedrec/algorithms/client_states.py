"""The simulated devices' own storage: each user's local state between visits.

A stateful method (algorithms/stateful.py: FedMF, PFedRec) keeps parameters
on each user's device from one round to the next: a user embedding, a local
score head, a personalized copy of the item embeddings. In a deployment each
device holds its own; the simulation holds every user's in one place, on the
device side of the simulation, never in the server state, the aggregates,
the released metrics or the server's checkpoint:

* `ClientStates` keeps one array per state tensor, shaped [users, ...], as a
  NumPy file mapped into memory (`numpy.lib.format.open_memmap`): a round
  reads and writes the rows of its users only, and the operating system pages
  the rest in and out, so memory stays bounded however many users and however
  large their states (6,040 users of ML-1M with a personal item table each
  are a 2.9 GB file, not 2.9 GB of RAM).
* `save(round)` snapshots every array (and the copy of the round selected on
  validation, `select`) beside the server's checkpoint of that round, written
  to a temporary folder and renamed into place, so that a killed run resumes
  from the newest checkpoint with its users' states exactly as they were
  (`restore`), and the resumed run equals the uninterrupted one bit for bit.
  Files that never change once written (the selected copy, snapshots) are
  shared as hard links instead of copied: a snapshot holds its selected
  copy as a link to the live one, and its current states too when they are
  the selected copy (a round that improved on validation). Only the live
  states are written in place, so only they need a copy of their own:
  `disk_bytes` tells what a run's states take.
* Nothing is forced to the disk (no msync): what a map writes is in the
  operating system's page cache at once, where every later read, copy and
  hard link of the file sees it, and a killed process loses none of it; like
  the server's checkpoints, surviving a machine crash is left to the
  operating system. (Forcing it took 0.85-1.3 s per `select` of PFedRec's
  200 MB of ML-100K states on 2 cores; the selected copy is now a copy of
  the live files in the kernel, 0.08-0.26 s.)

Nothing here imports TensorFlow.
"""

import os
import shutil
from typing import Mapping, Optional, Sequence

import numpy as np

DIRNAME = 'client_states'  # In a run directory.
CURRENT = 'current'
SELECTED = 'selected'
_ROUND_PREFIX = 'round_'
_TMP_SUFFIX = '.tmp'
# Snapshots kept: the server keeps its 2 newest checkpoints; one more covers
# a kill between a snapshot and its checkpoint.
KEEP_SNAPSHOTS = 3


# The personal view of an item table `name` on a device (dual
# personalization: algorithms/stateful.py).
PERSONAL_PREFIX = 'personal/'
VISITED = 'visited'  # 1.0 once a user has trained (its personal view is set).


def _file_name(name: str) -> str:
  """The file of state tensor `name` ('personal/item_embedding' ->
  'personal.item_embedding.npy')."""
  return name.replace('/', '.') + '.npy'


class ClientStates:
  """Every user's local state tensors, stored on the simulated devices' side.

  Attributes:
    directory: where the arrays and their snapshots are.
    names: the state tensors' names, in order.
  """

  def __init__(self, directory: str, specs: Mapping[str, tuple],
               num_users: int, seed: int,
               stddev: Optional[Mapping[str, float]] = None):
    """A store of `num_users` users' states `specs` (name -> one user's shape).

    Nothing is written until `reset` (a run starting afresh: every user at
    its initial state, `initial_value`) or `restore` (a resumed run).
    """
    self.directory = directory
    self.names = tuple(specs)
    self._shapes = {n: (num_users,) + tuple(s) for n, s in specs.items()}
    self._seed = seed
    self._stddev = dict(stddev or {})
    self._arrays = None
    self._selected_round = 0
    # The live states equal the selected copy (`select`, nothing written
    # since): a snapshot then links to the copy instead of copying them.
    self._selected_is_current = False

  def initial_value(self, name: str) -> np.ndarray:
    """Every user's first value of `name`: normal(0, stddev) drawn from the
    run's seed (same flags, same states), or zeros without a stddev."""
    scale = float(self._stddev.get(name, 0.0))
    if not scale > 0:
      return np.zeros(self._shapes[name], np.float32)
    rng = np.random.default_rng([self._seed, self.names.index(name), 2023])
    return rng.normal(0.0, scale, self._shapes[name]).astype(np.float32)

  def reset(self) -> None:
    """Every user back at its initial state; snapshots dropped."""
    shutil.rmtree(self.directory, ignore_errors=True)
    os.makedirs(self.directory)
    self._arrays = self._write(CURRENT, {})
    self._selected_round = 0
    self._selected_is_current = False

  def _write(self, folder: str, arrays: Mapping[str, np.ndarray]):
    """Writes `arrays` (missing names: their initial values) as
    `folder`/<name>.npy, atomically; maps them for reading and writing."""
    final = os.path.join(self.directory, folder)
    tmp = final + _TMP_SUFFIX
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in self.names:
      mapped = np.lib.format.open_memmap(
          os.path.join(tmp, _file_name(name)), mode='w+', dtype=np.float32,
          shape=self._shapes[name])
      if name in arrays:
        mapped[...] = arrays[name]
      elif self._stddev.get(name, 0.0) > 0:  # Zeros need no writing.
        mapped[...] = self.initial_value(name)
      del mapped
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return self._open(folder, 'r+')

  def _open(self, folder: str, mode: str = 'r') -> dict[str, np.ndarray]:
    return {name: np.load(os.path.join(self.directory, folder,
                                       _file_name(name)), mmap_mode=mode)
            for name in self.names}

  @property
  def num_users(self) -> int:
    return int(self._shapes[self.names[0]][0])

  def shape(self, name: str) -> tuple:
    """One user's shape of state tensor `name`."""
    return tuple(self._shapes[name][1:])

  def gather(self, users: Sequence[int],
             names: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """The states `names` (default: all) of `users` (dense user ids),
    stacked: name -> [K, ...]."""
    index = np.asarray(users, np.int64)
    return {name: np.array(self._arrays[name][index])
            for name in (self.names if names is None else names)}

  def scatter(self, users: Sequence[int],
              values: Mapping[str, np.ndarray]) -> None:
    """Writes back the states of `users` (name -> [K, ...]); others kept."""
    index = np.asarray(users, np.int64)
    if len(np.unique(index)) != len(index):
      raise ValueError('a user appears twice in one write of client states.')
    self._selected_is_current = False
    for name, value in values.items():
      self._arrays[name][index] = value

  def view(self, selected: bool = False) -> dict[str, np.ndarray]:
    """Every user's states (read-only maps): now, or of the selected round."""
    if selected and self._selected_round:
      return self._open(SELECTED)
    return {name: np.asarray(a) for name, a in self._arrays.items()}

  def select(self, round_num: int) -> None:
    """Keeps a copy of the states now as the selected round's (`view`)."""
    final = os.path.join(self.directory, SELECTED)
    tmp = final + _TMP_SUFFIX
    shutil.rmtree(tmp, ignore_errors=True)
    # The live files as they are (a copy inside the kernel, no maps).
    shutil.copytree(os.path.join(self.directory, CURRENT), tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    self._selected_round = round_num
    self._selected_is_current = True

  @property
  def selected_round(self) -> int:
    return self._selected_round

  def save(self, round_num: int) -> None:
    """Snapshots the states (and the selected copy) as of `round_num`.

    Written before the server's checkpoint of the round, so that every
    checkpoint has its snapshot; older snapshots beyond `KEEP_SNAPSHOTS`
    are dropped.
    """
    folder = f'{_ROUND_PREFIX}{round_num}'
    final = os.path.join(self.directory, folder)
    tmp = final + _TMP_SUFFIX
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    selected = os.path.join(self.directory, SELECTED)
    if self._selected_is_current:
      _link_tree(selected, os.path.join(tmp, CURRENT))
    else:
      shutil.copytree(os.path.join(self.directory, CURRENT),
                      os.path.join(tmp, CURRENT))
    if self._selected_round:
      _link_tree(selected, os.path.join(tmp, SELECTED))
    with open(os.path.join(tmp, 'selected_round'), 'w') as f:
      f.write(f'{self._selected_round}\n')
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in self.saved_rounds()[:-KEEP_SNAPSHOTS]:
      shutil.rmtree(os.path.join(self.directory, f'{_ROUND_PREFIX}{old}'))

  def saved_rounds(self) -> list[int]:
    """The rounds with a snapshot, oldest first."""
    return sorted(
        int(name[len(_ROUND_PREFIX):]) for name in os.listdir(self.directory)
        if name.startswith(_ROUND_PREFIX) and
        name[len(_ROUND_PREFIX):].isdigit())

  def _checked_snapshot(self, round_num: int) -> tuple[str, int]:
    """(folder, selected round) of the snapshot of `round_num`, checked.

    Raises:
      ValueError: no readable snapshot of that round, or one of another
        run's shapes (one line).
    """
    snapshot = os.path.join(self.directory, f'{_ROUND_PREFIX}{round_num}')
    if not os.path.isdir(snapshot):
      raise ValueError(
          f'{self.directory}: the users\' local states of round {round_num} '
          'are missing (the checkpoint cannot be resumed without them); '
          'train it anew under another --experiment_name.')
    try:
      with open(os.path.join(snapshot, 'selected_round')) as f:
        selected_round = int(f.read())
      for folder in (CURRENT, SELECTED) if selected_round else (CURRENT,):
        for name in self.names:
          shape = np.load(os.path.join(snapshot, folder, _file_name(name)),
                          mmap_mode='r').shape
          if shape != self._shapes[name]:
            raise ValueError(
                f'{snapshot}: the users\' local state {name} has shape '
                f'{shape}, this run\'s is {self._shapes[name]} (another '
                'run\'s states?).')
    except (OSError, ValueError) as e:
      if 'local state' in str(e):
        raise
      raise ValueError(
          f'{snapshot}: the users\' local states of round {round_num} cannot '
          f'be read ({type(e).__name__}); train it anew under another '
          '--experiment_name.') from None
    return snapshot, selected_round

  def snapshot(self, round_num: int,
               selected: bool = False) -> dict[str, np.ndarray]:
    """Read-only maps of the states saved with round `round_num` (with
    `selected`: of the round selected then, if any): for evaluating a
    finished run without touching it."""
    snapshot, selected_round = self._checked_snapshot(round_num)
    folder = SELECTED if selected and selected_round else CURRENT
    return {name: np.load(os.path.join(snapshot, folder, _file_name(name)),
                          mmap_mode='r') for name in self.names}

  def restore(self, round_num: int) -> None:
    """The states as `save(round_num)` left them.

    Raises:
      ValueError: no readable snapshot of that round, or one of another
        run's shapes (one line).
    """
    snapshot, selected_round = self._checked_snapshot(round_num)
    folders = [CURRENT, SELECTED] if selected_round else [CURRENT]
    self._arrays = None
    for folder in (CURRENT, SELECTED):
      final = os.path.join(self.directory, folder)
      tmp = final + _TMP_SUFFIX
      shutil.rmtree(tmp, ignore_errors=True)
      if folder in folders:
        # The live states are written in place: a copy of their own. The
        # selected copy never is: a link.
        (shutil.copytree if folder == CURRENT else _link_tree)(
            os.path.join(snapshot, folder), tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
      else:
        shutil.rmtree(final, ignore_errors=True)
    self._arrays = self._open(CURRENT, 'r+')
    self._selected_round = selected_round
    self._selected_is_current = False

  def disk_bytes(self) -> int:
    """Bytes the states take on disk: every file counted once however many
    links it has (the live states, the selected copy, the snapshots)."""
    seen, total = set(), 0
    for root, _, files in os.walk(self.directory):
      for name in files:
        stat = os.stat(os.path.join(root, name))
        if (stat.st_dev, stat.st_ino) not in seen:
          seen.add((stat.st_dev, stat.st_ino))
          total += stat.st_size
    return total


class StoreGroup:
  """Several `ClientStates` saved, restored and selected together (what the
  training loop keeps with its checkpoints)."""

  def __init__(self, stores: Sequence[ClientStates]):
    self.stores = list(stores)

  def reset(self) -> None:
    for store in self.stores:
      store.reset()

  def restore(self, round_num: int) -> None:
    for store in self.stores:
      store.restore(round_num)

  def save(self, round_num: int) -> None:
    for store in self.stores:
      store.save(round_num)

  def select(self, round_num: int) -> None:
    for store in self.stores:
      store.select(round_num)


def _link_tree(source: str, target: str) -> None:
  """`target` as a folder of hard links to `source`'s files (files that are
  never written again), or of copies where the file system has no links."""
  os.makedirs(target)
  for name in sorted(os.listdir(source)):
    try:
      os.link(os.path.join(source, name), os.path.join(target, name))
    except OSError:
      shutil.copy2(os.path.join(source, name), os.path.join(target, name))


def read_folder(folder: str) -> dict[str, np.ndarray]:
  """Read-only maps of the states in `folder` (e.g. a run's
  `client_states/selected`), by state name; what a device holds, read
  without TensorFlow (recommend.py).

  Raises:
    ValueError: no state file in `folder` (one line).
  """
  files = sorted(f for f in os.listdir(folder) if f.endswith('.npy')) if (
      os.path.isdir(folder)) else []
  if not files:
    raise ValueError(f'{folder}: no users\' local states here.')
  return {f[:-len('.npy')].replace('.', '/'): np.load(
      os.path.join(folder, f), mmap_mode='r') for f in files}


def mf_scores(use_biases: bool, values: Mapping[str, np.ndarray], states,
              users: np.ndarray, items: np.ndarray) -> np.ndarray:
  """MF scores [n, m] of each of `users` [n] for its `items` [n, m], with
  its own state: the logit under implicit feedback, the predicted rating
  under explicit. `values`: the global weights by name (`item_embedding`,
  with `use_biases` also `item_bias`, `global_bias`); `states`: the users'
  states by name (`ClientStates.view`, `snapshot` or `read_folder`). The
  item side is the user's personal view (`PERSONAL_PREFIX`; a user never
  visited sees the global table), else the global table."""
  users = np.asarray(users, np.int64)
  side = {}
  for name in ('item_embedding', 'item_bias'):
    if name not in values:
      continue
    rows = values[name][items]  # [n, m, ...]
    if PERSONAL_PREFIX + name in states:
      visited = np.asarray(states[VISITED])[users] > 0
      rows[visited] = np.asarray(states[PERSONAL_PREFIX + name][
          users[visited][:, None], items[visited]])
    side[name] = rows
  user = np.asarray(states['user_embedding'])[users]
  scores = np.einsum('nd,nmd->nm', user, side['item_embedding'])
  if use_biases:
    scores += (np.asarray(states['user_bias'])[users][:, :1] +
               side['item_bias'][..., 0] +
               np.asarray(values['global_bias']).reshape(-1)[0])
  return scores.astype(np.float32)
