"""Top-K ranking evaluation that does not leak: two protocols, vectorized.

Each evaluated user u has *known* items (the interactions on the user's client
before scoring: training items, or the support items of an unseen user), one or
more *relevant* items (the held-out test interactions) and *interacted* items
(everything u interacted with in any split). A model gives a score to every
item for u; the protocols rank a candidate set:

* `full`: every item except the known ones (training items are masked; other
  held-out items stay in the list, where they count as hits).
* `sampled`: the relevant items plus `eval_negatives` negatives drawn without
  replacement from the items u never interacted with in any split (the NCF
  protocol with 99 negatives; 999 also common). The negatives are a pure
  function of (seed, user, item), so they are the same for every model, run and
  batch size.

Ties in score are broken at random, by a key that is also a pure function of
(seed, user, item): a model that gives all items the same score ranks the
relevant item uniformly, not first or last. Scores are mapped to order-
preserving integers and combined with the tie-break key into one uint64 sort
key, so ranking is exact (no epsilon jitter) and runs as batched NumPy sorts.

Under the item_cold_start split the relevant items are also sliced by item:
*warm* items have training interactions, *cold* items none (new items). The
`warm_items/` and `cold_items/` metrics rank, for each user with a relevant
item of the slice, that slice's relevant items against the same candidates
as the overall metrics (every non-known item, or the same sampled
negatives) with the user's relevant items of the other slice left out: they
neither count as hits nor push the slice's items down. Averaged over the
users who have a relevant item in the slice. `cold_items/cold_only/` ranks a
user's relevant cold items against the cold items alone (every cold item the
user does not know), as cold-start papers do: a model whose scores of new
items are offset from those of trained ones (an untrained bias stays 0 while
trained ones drift) is compared on new items by how it orders them, not by
the offset.

Metrics at each K in `ks`, averaged over users (He et al. 2017; Krichene and
Rendle 2020 for why sampled metrics need the full ones beside them):

    HR@K        1 if any relevant item is in the top K
    Recall@K    relevant items in the top K / relevant items
    Precision@K relevant items in the top K / K
    NDCG@K      DCG of the top K / DCG of an ideal top K (binary relevance)
    MRR@K       1 / (rank of the first relevant item), 0 beyond K
    MAP@K       average precision at the relevant items' ranks, over min(|R|, K)

and, over all users' top-K lists: item coverage (share of items recommended to
anyone), average popularity of recommended items (training interactions per
item) and the Gini index of how often items are recommended (0: all equally,
-> 1: a few items for everyone).
"""

import collections
import dataclasses
import enum
from typing import Callable, Sequence

import numpy as np
from scipy import sparse

from research.fedrec.evaluation import slices as slices_lib


class Protocol(enum.Enum):
  FULL = 'full'
  SAMPLED = 'sampled'


USER_METRICS = ('hr', 'ndcg', 'recall', 'precision', 'mrr', 'map')
LIST_METRICS = ('coverage', 'avg_popularity', 'gini')
DEFAULT_KS = (5, 10, 20)
ITEM_SLICES = ('warm_items', 'cold_items')
COLD_ONLY = 'cold_only'  # cold_items/cold_only/<metric>@K: see the doc.


@dataclasses.dataclass(frozen=True)
class RankingConfig:
  """What to compute; the seed fixes sampled negatives and tie-breaks."""

  ks: tuple[int, ...] = DEFAULT_KS
  eval_negatives: int = 99
  protocols: tuple[Protocol, ...] = (Protocol.FULL, Protocol.SAMPLED)
  seed: int = 0
  users_per_batch: int = 512

  def __post_init__(self):
    if not self.ks or min(self.ks) < 1:
      raise ValueError('--ks must be positive cut-offs, e.g. 5,10,20.')
    if self.eval_negatives < 1:
      raise ValueError('--eval_negatives must be >= 1.')
    if not self.protocols:
      raise ValueError('At least one ranking protocol is needed.')


@dataclasses.dataclass(frozen=True)
class RankingTask:
  """Who is ranked against what. Rows are evaluated users, columns items."""

  users: np.ndarray  # [U] dense user ids, sorted.
  known: sparse.csr_matrix  # [U, I] bool: masked in full ranking.
  relevant: sparse.csr_matrix  # [U, I] bool: held-out positives.
  interacted: sparse.csr_matrix  # [U, I] bool: every split.
  popularity: np.ndarray  # [I] training interactions per item.
  # Items without training interactions (the item_cold_start split), sorted:
  # relevant items are also sliced by warm / cold item. Empty: no slices.
  cold_items: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(0, np.int64))
  # `evaluate`'s arrays of each batch of users, kept for the next model.
  memo: dict = dataclasses.field(default_factory=dict, compare=False,
                                 repr=False)

  @property
  def num_items(self) -> int:
    return self.known.shape[1]

  def subset(self, rows: np.ndarray) -> 'RankingTask':
    """The task restricted to some of its users."""
    return RankingTask(self.users[rows], self.known[rows], self.relevant[rows],
                       self.interacted[rows], self.popularity, self.cold_items)

  def item_masks(self) -> list[tuple[str, np.ndarray]]:
    """(slice name, [I] bool mask of its items): warm and cold items, or
    nothing without cold items."""
    if not len(self.cold_items):  # pylint: disable=g-explicit-length-test
      return []
    cold = np.zeros(self.num_items, bool)
    cold[self.cold_items] = True
    return [(ITEM_SLICES[0], ~cold), (ITEM_SLICES[1], cold)]

  @property
  def activity(self) -> np.ndarray:
    """Known interactions per user (the slicing variable)."""
    return np.asarray(self.known.sum(axis=1)).ravel()


def interaction_matrix(users: np.ndarray, row_users: np.ndarray,
                       items: np.ndarray, num_items: int) -> sparse.csr_matrix:
  """[len(users), num_items] bool: the (user, item) pairs of `users`' rows.

  `users` is sorted; pairs of other users are left out.
  """
  keep = np.isin(row_users, users)
  rows = np.searchsorted(users, row_users[keep])
  matrix = sparse.csr_matrix(
      (np.ones(len(rows), bool), (rows, items[keep])),
      shape=(len(users), num_items))
  matrix.sum_duplicates()
  return matrix.astype(bool)


def build_task(known_users: np.ndarray, known_items: np.ndarray,
               relevant_users: np.ndarray, relevant_items: np.ndarray,
               all_users: np.ndarray, all_items: np.ndarray,
               train_items: np.ndarray, num_items: int,
               cold_items=()) -> RankingTask:
  """A task for the users with at least one relevant item.

  Args:
    known_users, known_items: Interactions available before scoring.
    relevant_users, relevant_items: Held-out interactions to find.
    all_users, all_items: Every interaction of the corpus (all splits).
    train_items: Items of the training interactions (for popularity).
    num_items: Size of the item vocabulary.
    cold_items: Items without training interactions (item_cold_start): the
      relevant items are also sliced by warm and cold item.
  """
  users = np.unique(relevant_users)

  def rows_of(u, i):
    return interaction_matrix(users, u, i, num_items)

  return RankingTask(
      users=users, known=rows_of(known_users, known_items),
      relevant=rows_of(relevant_users, relevant_items),
      interacted=rows_of(all_users, all_items),
      popularity=np.bincount(train_items, minlength=num_items).astype(
          np.float64),
      cold_items=np.unique(np.asarray(cold_items, np.int64)))


# Hash-based randomness: splitmix64 of (seed, salt, user, item).
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  with np.errstate(over='ignore'):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_keys(seed: int, salt: int, users: np.ndarray,
              num_items: int) -> np.ndarray:
  """uint64 [len(users), num_items] pseudo-random keys of (seed, user, item)."""
  base = _splitmix64(np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFF))
  with np.errstate(over='ignore'):
    user_part = _splitmix64(base ^ np.asarray(users, np.uint64))
    return _splitmix64(user_part[:, None] ^ (
        np.arange(num_items, dtype=np.uint64)[None, :] *
        np.uint64(0x9E3779B97F4A7C15)))


def check_task(task: RankingTask, config: RankingConfig) -> None:
  """Raises ValueError (one line) if a user cannot get enough negatives."""
  if Protocol.SAMPLED not in config.protocols or not len(task.users):
    return
  available = task.num_items - np.asarray(task.interacted.sum(axis=1)).ravel()
  if available.min() < config.eval_negatives:
    user = task.users[np.argmin(available)]
    raise ValueError(
        f'--eval_negatives={config.eval_negatives}: user {user} has only '
        f'{available.min()} items never interacted with; lower it.')


def sampled_negatives(task: RankingTask, rows: np.ndarray, count: int,
                      seed: int) -> np.ndarray:
  """[len(rows), count] negatives per user, without replacement.

  Uniform over the items the user never interacted with: the `count` smallest
  hash keys among them.

  Raises:
    ValueError: a user has fewer than `count` such items.
  """
  keys = hash_keys(seed, 1, task.users[rows], task.num_items)
  interacted = task.interacted[rows].toarray()
  if (task.num_items - interacted.sum(axis=1) < count).any():
    raise ValueError(f'A user has fewer than {count} items never interacted '
                     'with (see check_task).')
  keys[interacted] = _MASK64
  chosen = np.argpartition(keys, count - 1, axis=1)[:, :count]
  return np.sort(chosen, axis=1)


def _order_keys(scores: np.ndarray) -> np.ndarray:
  """float32 scores -> uint32 keys in the same order (-inf lowest)."""
  bits = np.ascontiguousarray(scores, np.float32).view(np.uint32)
  negative = (bits >> np.uint32(31)).astype(bool)
  return np.where(negative, ~bits, bits | np.uint32(0x80000000))


# Above this many (row, wanted item, item) comparisons per batch, `_ranks`
# sorts whole rows instead of counting.
_COUNTING_LIMIT = 1 << 25


def _ranks(scores: np.ndarray, candidates: np.ndarray, tie_keys: np.ndarray,
           max_k: int, wanted: np.ndarray):
  """Positions (0 = best) of the `wanted` items among their row's candidates.

  The order is strict: by score, equal scores by the larger tie key, then by
  the smaller item id. A wanted item's position is the number of candidates
  before it in that order (counted, or read off a sort of the row when
  many items are wanted); the top `max_k` are selected without sorting the
  row.

  Returns:
    `(positions [b, I], top [b, max_k])`: `positions` is meaningful only at
    `wanted` (a wanted non-candidate comes after every candidate); `top`
    holds item ids, -1 where a row has fewer candidates.
  """
  keys = (_order_keys(scores).astype(np.uint64) << np.uint64(32)) | (
      tie_keys >> np.uint64(32))
  # Candidates all have keys >= 1, so non-candidates (0) come last.
  keys = np.where(candidates, np.maximum(keys, 1), 0)
  rows, width = keys.shape
  num_wanted = wanted.sum(axis=1)
  most = int(num_wanted.max(initial=0))
  if rows * most * width > _COUNTING_LIMIT:
    order = np.argsort(~keys, axis=1, kind='stable')
    positions = np.empty_like(order)
    np.put_along_axis(positions, order,
                      np.arange(width)[None, :].repeat(rows, 0), axis=1)
  else:
    positions = np.zeros(keys.shape, np.int64)
    user, item, slot = _entries(wanted)
    at = np.zeros((rows, max(most, 1)), np.int64)  # Padding: item 0.
    at[user, slot] = item
    key = np.take_along_axis(keys, at, axis=1)[:, :, None]
    before = (keys[:, None, :] > key).sum(axis=2) + (
        (keys[:, None, :] == key) &
        (np.arange(width)[None, None, :] < at[:, :, None])).sum(axis=2)
    positions[user, item] = before[user, slot]
  top = np.full((rows, max_k), -1, np.int64)
  take = min(max_k, width)
  if take == width:
    chosen = np.broadcast_to(np.arange(width), keys.shape)
  else:
    # The take-th largest key; items above it are all in, those equal to it
    # fill the rest by item id.
    threshold = np.partition(keys, width - take, axis=1)[
        :, width - take:width - take + 1]
    above = keys > threshold
    tied = keys == threshold
    room = take - above.sum(axis=1, keepdims=True)
    selected = above | (tied & (np.cumsum(tied, axis=1) <= room))
    chosen = np.nonzero(selected)[1].reshape(rows, take)
  chosen_keys = np.take_along_axis(keys, chosen, axis=1)
  order = np.take_along_axis(
      chosen, np.argsort(~chosen_keys, axis=1, kind='stable'), axis=1)
  num_candidates = candidates.sum(axis=1)
  top[:, :take] = np.where(
      np.arange(take)[None, :] < num_candidates[:, None], order, -1)
  return positions, top


def _entries(mask: np.ndarray):
  """`(row, column, k)` of each True of `mask`: the k-th of its row."""
  counts = mask.sum(axis=1)
  row, column = np.nonzero(mask)
  return row, column, np.arange(len(row)) - np.repeat(
      np.cumsum(counts) - counts, counts)


def _sorted_at(positions: np.ndarray, mask: np.ndarray, width: int
               ) -> np.ndarray:
  """Each row's `positions` at `mask`, ascending, inf after: [b, width]."""
  counts = mask.sum(axis=1)
  user, item, slot = _entries(mask)
  out = np.full((len(mask), max(width, int(counts.max(initial=0)))), np.inf)
  out[user, slot] = positions[user, item]
  return np.sort(out, axis=1)[:, :width]


def _user_metrics(relevant_ranks: np.ndarray, num_relevant: np.ndarray,
                  ks: Sequence[int]) -> dict[str, np.ndarray]:
  """Per-user metrics from sorted relevant ranks ([b, t], inf-padded)."""
  out = {}
  discounts = 1.0 / np.log2(np.arange(max(ks)) + 2.0)
  ideal = np.concatenate([[0.0], np.cumsum(discounts)])
  counts = np.arange(1, relevant_ranks.shape[1] + 1)[None, :]
  for k in ks:
    hits = relevant_ranks < k
    num_hits = hits.sum(axis=1)
    safe = np.where(hits, relevant_ranks, 0).astype(np.int64)
    dcg = np.where(hits, discounts[np.minimum(safe, max(ks) - 1)], 0.0).sum(1)
    first = relevant_ranks[:, 0]
    out[f'hr@{k}'] = (num_hits > 0).astype(np.float64)
    out[f'ndcg@{k}'] = dcg / ideal[np.minimum(num_relevant, k)]
    out[f'recall@{k}'] = num_hits / num_relevant
    out[f'precision@{k}'] = num_hits / k
    out[f'mrr@{k}'] = np.where(first < k, 1.0 / (np.where(
        np.isfinite(first), first, 0) + 1.0), 0.0)
    out[f'map@{k}'] = np.where(hits, counts / (safe + 1.0), 0.0).sum(1) / (
        np.minimum(num_relevant, k))
  return out


def _gini(counts: np.ndarray) -> float:
  values = np.sort(counts.astype(np.float64))
  n = values.size
  total = values.sum()
  if total == 0:
    return 0.0
  return float(((2 * np.arange(1, n + 1) - n - 1) * values).sum() /
               (n * total))


ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class RankingResult:
  """Overall metrics per protocol (flat names) and per-user metrics."""

  overall: collections.OrderedDict  # '<protocol>/<metric>@K' -> value.
  per_user: dict[str, np.ndarray]  # Same names -> [U] values.
  users: np.ndarray
  activity: np.ndarray
  # Item slices (`ITEM_SLICES`, with cold items only): slice -> the same
  # names -> [U] values, NaN for a user without a relevant item of the slice.
  item_per_user: dict[str, dict[str, np.ndarray]] = dataclasses.field(
      default_factory=dict)

  def sliced(self, edges: Sequence[int] = slices_lib.DEFAULT_ACTIVITY_EDGES
            ) -> list[collections.OrderedDict]:
    """User-averaged metrics overall and per activity bucket."""
    edges = slices_lib.validate_edges(edges)
    bucket = np.searchsorted(np.asarray(edges), self.activity, side='right')
    rows = []
    masks = [('all', 'all', np.ones(len(self.users), bool))] + [
        ('activity', name, bucket == b)
        for b, name in enumerate(slices_lib.bucket_names(edges))]
    for kind, name, mask in masks:
      row = collections.OrderedDict(slice_kind=kind, slice=name,
                                    users=int(mask.sum()))
      for metric, values in self.per_user.items():
        row[metric] = float(values[mask].mean()) if mask.any() else float('nan')
      rows.append(row)
    for name, per_user in self.item_per_user.items():
      row = collections.OrderedDict(
          slice_kind='item', slice=name[:-len('_items')],
          users=int(np.isfinite(next(iter(per_user.values()))).sum()))
      row.update((metric, _mean_of_finite(values))
                 for metric, values in per_user.items())
      rows.append(row)
    return rows


def _mean_of_finite(values: np.ndarray) -> float:
  """The mean over the users a slice has (NaN: none)."""
  values = values[np.isfinite(values)]
  return float(values.mean()) if values.size else float('nan')


# What `evaluate` keeps of a task's batches (its candidates, tie keys) for
# the task's next evaluation, at most.
BATCH_MEMO_BYTES = 256 << 20


def _batch_arrays(task: RankingTask, rows: np.ndarray,
                  config: RankingConfig):
  """`(relevant, tie keys, {protocol or 'cold': candidates})` of a batch of
  users: the same for every model, so kept in the task (up to
  `BATCH_MEMO_BYTES`) for its next evaluation."""
  key = (int(rows[0]), len(rows), config.seed, config.eval_negatives,
         config.protocols)
  if key in task.memo:
    return task.memo[key]
  relevant = task.relevant[rows].toarray()
  tie_keys = hash_keys(config.seed, 2, task.users[rows], task.num_items)
  known = task.known[rows].toarray()
  candidates = {}
  for protocol in config.protocols:
    if protocol == Protocol.FULL:
      candidates[protocol] = ~known
    else:
      sampled = relevant.copy()
      negatives = sampled_negatives(task, rows, config.eval_negatives,
                                    config.seed)
      np.put_along_axis(sampled, negatives, True, axis=1)
      candidates[protocol] = sampled
  item_masks = task.item_masks()
  if item_masks:
    candidates['cold'] = ~known & item_masks[1][1][None, :]
  arrays = (relevant, tie_keys, candidates)
  size = relevant.nbytes + tie_keys.nbytes + sum(
      c.nbytes for c in candidates.values())
  held = task.memo.setdefault('_bytes', 0)
  if held + size <= BATCH_MEMO_BYTES:
    task.memo[key] = arrays
    task.memo['_bytes'] = held + size
  return arrays


def evaluate(task: RankingTask, score_fn: ScoreFn,
             config: RankingConfig = RankingConfig()) -> RankingResult:
  """Ranks every evaluated user's candidates by `score_fn` and scores them.

  Args:
    task: The users and their known / relevant / interacted items.
    score_fn: Rows of `task` (int array) -> float scores [rows, num_items];
      higher is better. Called once per batch of users.
    config: Cut-offs, protocols, negatives and seed.

  Returns:
    The overall metrics and the per-user ones.
  """
  check_task(task, config)
  ks = tuple(sorted(set(config.ks)))
  max_k = max(ks)
  per_user = collections.defaultdict(list)
  item_masks = task.item_masks()
  item_per_user = {name: collections.defaultdict(list)
                   for name, _ in item_masks}
  cold_only = collections.defaultdict(list)
  recommended = {(p, k): np.zeros(task.num_items, np.int64)
                 for p in config.protocols for k in ks}
  popularity_sums = {(p, k): 0.0 for p in config.protocols for k in ks}
  list_counts = {(p, k): 0 for p in config.protocols for k in ks}
  num_users = len(task.users)
  for start in range(0, num_users, config.users_per_batch):
    rows = np.arange(start, min(num_users, start + config.users_per_batch))
    scores = np.asarray(score_fn(rows), np.float32)
    if scores.shape != (len(rows), task.num_items):
      raise ValueError(f'The score function returned shape {scores.shape}, '
                       f'expected {(len(rows), task.num_items)}.')
    if not np.isfinite(scores).all():
      raise ValueError('The model gave non-finite scores (diverged training?).')
    relevant, tie_keys, candidates_of = _batch_arrays(task, rows, config)
    num_relevant = relevant.sum(axis=1)
    for protocol in config.protocols:
      candidates = candidates_of[protocol]
      positions, top = _ranks(scores, candidates, tie_keys, max_k, relevant)
      ranks = _sorted_at(positions, relevant, max(1, num_relevant.max()))
      for name, values in _user_metrics(ranks, num_relevant, ks).items():
        per_user[f'{protocol.value}/{name}'].append(values)
      for slice_name, mask in item_masks:
        # The slice's relevant items among the same candidates, the user's
        # relevant items of the other slice left out: each moves up by the
        # number of those ranked above it (the order is strict, so this is
        # the rank a sort without them gives).
        mine = relevant & mask[None, :]
        num_mine = mine.sum(axis=1)
        width = max(1, num_mine.max())
        mine_ranks = _sorted_at(positions, mine, width)
        other = relevant & ~mask[None, :]
        others = _sorted_at(positions, other,
                            max(1, other.sum(axis=1).max()))
        slice_ranks = mine_ranks - (
            others[:, None, :] < mine_ranks[:, :, None]).sum(axis=2)
        for name, values in _user_metrics(
            slice_ranks, np.maximum(num_mine, 1), ks).items():
          item_per_user[slice_name][f'{protocol.value}/{name}'].append(
              np.where(num_mine > 0, values, np.nan))
      for k in ks:
        items = top[:, :k]
        items = items[items >= 0]
        np.add.at(recommended[protocol, k], items, 1)
        popularity_sums[protocol, k] += task.popularity[items].sum()
        list_counts[protocol, k] += items.size
    if item_masks:  # Cold items ranked among the cold items alone.
      cold = item_masks[1][1][None, :]
      mine = relevant & cold
      positions, _ = _ranks(scores, candidates_of['cold'], tie_keys, max_k,
                            mine)
      num_mine = mine.sum(axis=1)
      ranks = _sorted_at(positions, mine, max(1, num_mine.max()))
      for name, values in _user_metrics(ranks, np.maximum(num_mine, 1),
                                        ks).items():
        cold_only[name].append(np.where(num_mine > 0, values, np.nan))
  per_user = {k: np.concatenate(v) for k, v in per_user.items()}
  overall = collections.OrderedDict()
  for protocol in config.protocols:
    for metric in USER_METRICS:
      for k in ks:
        name = f'{protocol.value}/{metric}@{k}'
        overall[name] = float(per_user[name].mean())
    for k in ks:
      counts = recommended[protocol, k]
      overall[f'{protocol.value}/coverage@{k}'] = float(
          (counts > 0).mean())
      overall[f'{protocol.value}/avg_popularity@{k}'] = float(
          popularity_sums[protocol, k] / max(1, list_counts[protocol, k]))
      overall[f'{protocol.value}/gini@{k}'] = _gini(counts)
  ordered = collections.OrderedDict(
      (k, per_user[k]) for k in overall if k in per_user)
  by_item = {}
  for slice_name, lists in item_per_user.items():
    by_item[slice_name] = collections.OrderedDict(
        (k, np.concatenate(lists[k])) for k in ordered)
    for k, values in by_item[slice_name].items():
      overall[f'{slice_name}/{k}'] = _mean_of_finite(values)
  for name, values in cold_only.items():
    overall[f'{ITEM_SLICES[1]}/{COLD_ONLY}/{name}'] = _mean_of_finite(
        np.concatenate(values))
  return RankingResult(overall, ordered, task.users, task.activity, by_item)
