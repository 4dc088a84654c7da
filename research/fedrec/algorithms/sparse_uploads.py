"""Sparsified silo uploads: top-k or random-k item rows, with error feedback.

In a cross-silo round (data/silos.py) every silo's update changes nearly
every item row (its many users rated most items between them), so sending
only the changed rows (`cohort_work.sparse_upload_bytes`) saves nothing.
`--sparsify` makes each silo send a share of each item table's rows
(`--sparsify_fraction`, k = ceil(fraction x rows), at least 1):

* `topk`: the k rows of largest L2 norm;
* `randomk`: k rows drawn uniformly, from the run's seed, the silo and the
  round (the same flags draw the same rows);

each as its values (float32) and row id (int32), or the table whole where
that is smaller; tensors that are not item
tables (the global bias, dense layers) are sent whole. With error feedback
(`--error_feedback`, the default) the silo keeps what it did not send, the
residual, and adds it to its next round's update before choosing (Stich et
al. 2018, "Sparsified SGD with memory"; Karimireddy et al. 2019, "Error
feedback fixes SignSGD"), so every coordinate of every update reaches the
server eventually; without it, unsent rows are dropped.

The residual is the silo's own (it is computed from its users' ratings):
it lives on the silos' side of the simulation, in a `ClientStates` store
keyed by silo, snapshotted with every checkpoint so that a resumed run is
the uninterrupted one bit for bit, and never in the server state, the
aggregates or the released metrics.

The server averages the sent updates as it averages dense ones (each silo
weighted by its ratings, or uniformly): rows a silo did not send count as
zero in its update. Choosing rows is done after the silo's client work, on
its weighted mean update (`cohort_work.combine`), by a TFF computation
placed at the clients (`cohort_work.compose`'s `next_with_uploads`).

Under DP (`SparsifyConfig.public`) only random-k without error feedback
runs: top-k picks rows by the silo's data, whose ids sent in the clear would
reveal which items its users rated, and error feedback would carry a
record's clipped update into later releases, past the clip each release is
accounted for. The rows are then drawn from public randomness (the run's
seed and the round, the same rows for every silo) and chosen after the clip:
a record's sent rows are a part of its clipped update, so its norm stays
within the clip and the accounting is unchanged; the server, which draws
the same rows, keeps only them of the noised aggregate (post-processing),
and sends no ids.
"""

import collections
import dataclasses
import math
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import client_states as client_states_lib
from research.fedrec.data import silos

DIRNAME = 'silo_residuals'  # In a run directory.
RESIDUAL_PREFIX = 'residual/'
ROUNDS = 'rounds'  # Rounds run so far (randomk's draws, per round).
UPLOADS = 'uploads'  # The round's measurement (`LearningProcessOutput`).
SENT_BYTES = 'sent_bytes'


@dataclasses.dataclass(frozen=True)
class SparsifyConfig:
  """`--sparsify`, `--sparsify_fraction`, `--error_feedback` (validated in
  `silos.SiloConfig`)."""

  kind: str = 'none'
  fraction: float = 0.1
  error_feedback: bool = True
  # Under DP (random-k only, without error feedback): every silo sends the
  # same rows, drawn from the run's seed and the round (public randomness),
  # and the server keeps only those rows of the noised aggregate.
  public: bool = False

  @classmethod
  def of(cls, config: silos.SiloConfig,
         dp: bool = False) -> 'SparsifyConfig':
    return cls(config.sparsify, config.sparsify_fraction,
               config.error_feedback, public=dp)

  @property
  def enabled(self) -> bool:
    return self.kind != 'none'

  def rows_sent(self, rows: int) -> int:
    """k of a table of `rows` rows."""
    return max(1, min(rows, math.ceil(self.fraction * rows - 1e-9)))


def select(config: SparsifyConfig, update: Sequence[tf.Tensor],
           residual: Sequence[tf.Tensor], is_table: Sequence[bool],
           key: tf.Tensor):
  """One silo's sent update, its new residual and the bytes it sends.

  Args:
    config: What to send.
    update: The silo's update, one tensor per global weight.
    residual: Its residual, one tensor per item table (`is_table`).
    is_table: Which of `update`'s tensors are item tables ([rows, ...]).
    key: int64 [2], the stateless seed of randomk's draw.

  Returns:
    `(sent, residual, sent_bytes)`: `sent` shaped as `update` (unsent rows
    zero), the new residual (zeros without error feedback), and the bytes.
  """
  sent, kept = [], []
  sent_bytes = tf.constant(0.0)
  residual = iter(residual)
  for tensor, table in zip(update, is_table):
    if not table:
      sent.append(tensor)
      sent_bytes += float(tensor.shape.num_elements()) * 4.0
      continue
    total = tensor + next(residual) if config.error_feedback else tensor
    rows = int(tensor.shape[0])
    k = config.rows_sent(rows)
    if config.kind == 'topk':
      score = tf.norm(tf.reshape(total, [rows, -1]), axis=1)
      out = total * _row_mask(score, k, tensor.shape.rank)
    else:
      out = random_rows(total, k, key)
    sent.append(out)
    kept.append(total - out if config.error_feedback else
                tf.zeros_like(total))
    row_size = tensor.shape[1:].num_elements()
    # Rows and their ids (public rows: the server draws the same ids), or
    # the table whole where that is smaller.
    id_bytes = 0 if config.public else 4
    sent_bytes += float(min(k * (4 * row_size + id_bytes),
                            rows * row_size * 4))
  return sent, kept, sent_bytes


def _row_mask(score, k: int, rank: int):
  """1.0 on the `k` rows of highest `score`, 0.0 elsewhere, shaped to
  broadcast over a table of `rank`."""
  rows = tf.shape(score)[0]
  chosen = tf.math.top_k(score, k=k, sorted=False).indices
  mask = tf.scatter_nd(chosen[:, None], tf.ones([k]), [rows])
  return tf.reshape(mask, tf.concat([[rows], tf.ones([rank - 1], tf.int32)],
                                    0))


def random_rows(table, k: int, key):
  """`table` with all but `k` rows drawn uniformly from `key` zeroed."""
  rows = int(table.shape[0])
  return table * _row_mask(tf.random.stateless_uniform([rows], seed=key), k,
                           table.shape.rank)


def keep_public_rows(config: SparsifyConfig, update: Sequence[tf.Tensor],
                     is_table: Sequence[bool], key) -> list:
  """The server's noised aggregate with only the round's public rows of each
  item table kept (`config.public`: the rows every silo sent; the noise on
  the others would move rows no silo sent)."""
  return [random_rows(u, config.rows_sent(int(u.shape[0])), key) if table
          else u for u, table in zip(update, is_table)]


class Sparsifier:
  """The TFF computation of `select` over a learning process's updates."""

  def __init__(self, config: SparsifyConfig, update_type,
               is_table: Sequence[bool]):
    self.config = config
    self.is_table = list(is_table)
    members = list(update_type)
    # Under adaptive DP clipping a record is (clipped sum, unclipped count).
    nested = isinstance(members[0], tff.StructType)
    tensors_type = members[0] if nested else update_type
    self.residual_type = tff.StructWithPythonType(
        [m for m, table in zip(tensors_type, self.is_table) if table], list)
    self.key_type = tff.TensorType(np.int64, [2])

    @tff.tensorflow.computation(update_type, self.residual_type,
                                self.key_type)
    def run(update, residual, key):
      tensors = list(update[0] if nested else update)
      sent, kept, sent_bytes = select(config, tensors, list(residual),
                                      self.is_table, key)
      if nested:
        sent = update._replace(**{update._fields[0]: sent})
      return sent, kept, sent_bytes
    self.computation = run

    @tff.tensorflow.computation(tensors_type, self.key_type)
    def keep_public(update, key):
      return keep_public_rows(config, list(update), self.is_table, key)
    self.keep_public = keep_public


def residual_specs(table_shapes: Sequence[tuple]) -> dict:
  """A silo's stored state: one residual per item table (in order), and
  the rounds run so far (the same in every silo)."""
  specs = collections.OrderedDict(
      (f'{RESIDUAL_PREFIX}{i}', tuple(shape))
      for i, shape in enumerate(table_shapes))
  specs[ROUNDS] = ()
  return specs


class SiloUploads:
  """The silos' side of sparsified uploads: residuals in and out of a round.

  `store` (a `ClientStates` keyed by silo, `residual_specs`) is what the
  training loop snapshots with its checkpoints (`store`).
  """

  def __init__(self, sparsifier: Sparsifier, store, silo_of: np.ndarray,
               seed: int):
    self.sparsifier = sparsifier
    self.store = store
    self._silo_of = np.asarray(silo_of)
    self._seed = int(seed)
    self._names = [n for n in store.names if n != ROUNDS]

  def _silos(self, cohorts) -> list[int]:
    silos = []
    for cohort in cohorts:
      of = np.unique(self._silo_of[np.asarray(cohort['users'])])
      if len(of) != 1:
        raise ValueError('a sparsified upload needs each cohort to be one '
                         'silo\'s users.')
      silos.append(int(of[0]))
    return silos

  def _key(self, silo: int, round_index: int) -> np.ndarray:
    """randomk's seed: per silo, or (public rows) the same for all."""
    if self.sparsifier.config.public:
      return np.array([self._seed, round_index], np.int64)
    return np.array([self._seed, silo * 2**32 + round_index], np.int64)

  def inputs(self, cohorts) -> tuple[list, list]:
    """Each cohort's (silo's) residuals and randomk key."""
    silos = self._silos(cohorts)
    stored = self.store.gather(silos)
    residuals = [[stored[n][i] for n in self._names]
                 for i in range(len(silos))]
    keys = [self._key(silo, self.rounds()) for silo in silos]
    return residuals, keys

  def run(self, process, state, datasets, cohorts):
    """A round of `process` (`next_with_uploads`) on `datasets`, the packed
    `cohorts`: `(output, the cohorts' own outputs)`, the silos' new
    residuals written back."""
    residuals, keys = self.inputs(cohorts)
    server_key = self._key(-1, self.rounds())
    output, client_outputs, residuals = process.next_with_uploads(
        state, datasets, residuals, keys, server_key)
    self.write_back(cohorts, residuals)
    return output, client_outputs

  def rounds(self) -> int:
    """Rounds run so far (every silo's count: each round counts for all,
    those that sent nothing too)."""
    return int(self.store.gather([0], [ROUNDS])[ROUNDS][0])

  def write_back(self, cohorts, residuals) -> None:
    silos = self._silos(cohorts)
    if residuals:
      self.store.scatter(silos, {
          n: np.stack([np.asarray(r[i]) for r in residuals])
          for i, n in enumerate(self._names)})
    every = list(range(self.store.num_users))
    self.store.scatter(every, {ROUNDS: np.full(len(every), self.rounds() + 1,
                                               np.float32)})


def build(process, silo_of, num_silos: int, directory: str,
          seed: int) -> SiloUploads:
  """`SiloUploads` of `process` (built by `cohort_work.compose` with a
  `SparsifyConfig`: its `sparsifier`), each silo's residual stored in
  `directory`."""
  sparsifier = process.sparsifier
  shapes = [tuple(t.shape) for t in sparsifier.residual_type]
  store = client_states_lib.ClientStates(directory, residual_specs(shapes),
                                         num_silos, seed)
  return SiloUploads(sparsifier, store, silo_of, seed)
