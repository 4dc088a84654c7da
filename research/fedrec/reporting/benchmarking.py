"""The measurements behind `research/fedrec/benchmark.py` (see its docstring).

Library code without flags, so tests can import it next to other binaries.
"""

import collections
import dataclasses
import math
import os
import platform
import sys
import threading
import time
from typing import Optional

from research.fedrec.utils import json_io
from research.fedrec.utils import text_table

# Targets of the speed issue, checked on the full run.
TARGET_RATIO = 0.5  # FedRecon at the middle count vs centralized ratings/s.
TARGET_RSS_GROWTH = 0.05  # From round 10 to the last of the long run.
TARGET_FIRST_ROUND_SECONDS = 30.0
MEMORY_BUDGET_BYTES = 24 * 2**30
# Targets of the cohort-execution issue (algorithms/cohorts.py).
COHORT_CLIENTS = 100  # Users per round of the side-by-side comparison.
TARGET_COHORT_SPEEDUP = 80.0  # FedRecon, per_client over cohort s/round.
TARGET_COHORT_SPEEDUP_FEDAVG = 50.0  # FedAvg, likewise.
TARGET_COHORT_ALL_USERS_SECONDS = 1.0  # One round of every training user.
TARGET_COHORT_ALL_USERS_RSS_GB = 2.0
TARGET_COHORT_VS_CENTRALIZED = 2.0  # Ratings/s over centralized Keras fit.
_COHORT_ALL_USERS_ROUNDS = 3  # The first is warm-up (tracing).
_GROWTH_FROM_ROUND = 10


@dataclasses.dataclass(frozen=True)
class Scale:
  num_users: int
  num_items: int
  num_ratings: int
  client_counts: tuple[int, int, int]  # Small, middle (long run), large.
  rounds: int
  timing_rounds: int


FULL = Scale(6040, 3706, 1_000_209, (50, 100, 1000), rounds=500,
             timing_rounds=20)
QUICK = Scale(604, 371, 100_020, (10, 20, 50), rounds=12, timing_rounds=3)


def _tree_rss() -> int:
  """Resident bytes of this process and its children (the TFF workers)."""
  import psutil  # pylint: disable=g-import-not-at-top
  me = psutil.Process()
  total = me.memory_info().rss
  for child in me.children(recursive=True):
    try:
      total += child.memory_info().rss
    except psutil.Error:
      continue
  return total


class PeakMemory:
  """Samples the process tree's RSS in the background; keeps the maximum."""

  def __init__(self, interval: float = 0.05):
    self._interval = interval
    self._peak = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.is_set():
      self._peak = max(self._peak, _tree_rss())
      self._stop.wait(self._interval)

  def reset(self) -> None:
    self._peak = _tree_rss()

  @property
  def peak(self) -> int:
    return max(self._peak, _tree_rss())

  def close(self) -> None:
    self._stop.set()
    self._thread.join()


@dataclasses.dataclass
class Work:
  """What one round asks of its clients, counted from their dataset sizes."""

  ratings: int  # Ratings seen by gradient steps (all passes).
  client_ratings: int  # Each client's training ratings once.
  steps: int  # Gradient steps (batches), all passes.


def round_work(counts: dict[str, int], clients, passes: int, batch_size: int,
               repeat_then_batch: bool) -> Work:
  """The ratings and steps of one round.

  FedRecon batches each pass separately (reconstruction, then training);
  FedAvg repeats a client's data for its epochs, then batches.
  """
  sizes = [counts[c] for c in clients]
  if repeat_then_batch:
    steps = sum(math.ceil(n * passes / batch_size) for n in sizes)
  else:
    steps = passes * sum(math.ceil(n / batch_size) for n in sizes)
  return Work(ratings=passes * sum(sizes), client_ratings=sum(sizes),
              steps=steps)


def _median(values):
  ordered = sorted(values)
  middle = len(ordered) // 2
  if len(ordered) % 2:
    return ordered[middle]
  return (ordered[middle - 1] + ordered[middle]) / 2


def summarize_run(name: str, clients_per_round: int, workers: int,
                  seconds: list[float], works: list[Work],
                  rss_after: list[int], peak_rss: int,
                  first_round_seconds: Optional[float] = None) -> dict:
  """One row of the report from per-round timings (the first is warm-up)."""
  timed = slice(1, None) if len(seconds) > 1 else slice(None)
  timed_seconds = sum(seconds[timed])
  row = collections.OrderedDict(
      name=name,
      clients_per_round=clients_per_round,
      workers=workers,
      rounds=len(seconds),
      median_round_seconds=_median(seconds[timed]),
      ratings_per_second=sum(w.ratings for w in works[timed]) / timed_seconds,
      client_ratings_per_second=(
          sum(w.client_ratings for w in works[timed]) / timed_seconds),
      clients_per_second=(
          clients_per_round * len(seconds[timed]) / timed_seconds),
      steps_per_round=_median([w.steps for w in works[timed]]),
      time_to_first_round_seconds=first_round_seconds,
      peak_rss_bytes=peak_rss,
      rss_growth=None,
  )
  if len(rss_after) > _GROWTH_FROM_ROUND:
    start = rss_after[_GROWTH_FROM_ROUND - 1]
    row['rss_round_10_bytes'] = start
    row['rss_last_round_bytes'] = rss_after[-1]
    row['rss_growth'] = (rss_after[-1] - start) / start
  return row


def format_table(rows, centralized_rate: float, cores: int) -> str:
  header = ['run', 'clients', 'workers', 'rounds', 's/round', 'ratings/s',
            'x central', 'client ratings/s', 'clients/s', 'first round s',
            'peak RSS GB', 'RSS growth']
  lines = [header]

  def cell(row, key, spec):
    value = row.get(key)
    return '-' if value is None else format(value, spec)

  for row in rows:
    growth = row.get('rss_growth')
    lines.append([
        row['name'], cell(row, 'clients_per_round', 'd'),
        cell(row, 'workers', 'd'), cell(row, 'rounds', 'd'),
        cell(row, 'median_round_seconds', '.2f'),
        cell(row, 'ratings_per_second', ',.0f'),
        f'{row["ratings_per_second"] / centralized_rate:.2f}',
        cell(row, 'client_ratings_per_second', ',.0f'),
        cell(row, 'clients_per_second', '.1f'),
        cell(row, 'time_to_first_round_seconds', '.1f'),
        f'{row["peak_rss_bytes"] / 2**30:.2f}',
        f'{100 * growth:+.1f}%' if growth is not None else '-',
    ])
  return (text_table.format_rows(lines) +
          f'\n({cores} cores; ratings/s: ratings through gradient steps per '
          'second; first round: tracing included)')


def check_targets(report: dict) -> list[dict]:
  """The speed issue's targets, each with its measured value and verdict."""
  runs = {row['name']: row for row in report['runs']}
  middle = report['scale']['client_counts'][1]
  long_run = runs[f'fedrecon_{middle}']
  all_users = runs['fedrecon_all']
  checks = [
      ('fedrecon_ratio_to_centralized', long_run['ratio_to_centralized'],
       f'>= {TARGET_RATIO}', long_run['ratio_to_centralized'] >= TARGET_RATIO),
      ('rss_growth_round_10_to_last', long_run['rss_growth'],
       f'< {TARGET_RSS_GROWTH}', long_run['rss_growth'] < TARGET_RSS_GROWTH),
      ('time_to_first_round_seconds', long_run['time_to_first_round_seconds'],
       f'< {TARGET_FIRST_ROUND_SECONDS:g}',
       long_run['time_to_first_round_seconds'] < TARGET_FIRST_ROUND_SECONDS),
      ('all_users_round_peak_rss_bytes', all_users['peak_rss_bytes'],
       f'< {MEMORY_BUDGET_BYTES}',
       all_users['peak_rss_bytes'] < MEMORY_BUDGET_BYTES),
  ]
  cohort = report
  checks += [
      ('cohort_speedup_fedrecon_100', cohort['cohort_speedup_fedrecon_100'],
       f'>= {TARGET_COHORT_SPEEDUP:g}',
       cohort['cohort_speedup_fedrecon_100'] >= TARGET_COHORT_SPEEDUP),
      ('cohort_speedup_fedavg_100', cohort['cohort_speedup_fedavg_100'],
       f'>= {TARGET_COHORT_SPEEDUP_FEDAVG:g}',
       cohort['cohort_speedup_fedavg_100'] >= TARGET_COHORT_SPEEDUP_FEDAVG),
      ('cohort_all_users_round_seconds',
       cohort['cohort_all_users_round_seconds'],
       f'<= {TARGET_COHORT_ALL_USERS_SECONDS:g}',
       cohort['cohort_all_users_round_seconds'] <=
       TARGET_COHORT_ALL_USERS_SECONDS),
      ('cohort_all_users_peak_rss_gb', cohort['cohort_all_users_peak_rss_gb'],
       f'<= {TARGET_COHORT_ALL_USERS_RSS_GB:g}',
       cohort['cohort_all_users_peak_rss_gb'] <=
       TARGET_COHORT_ALL_USERS_RSS_GB),
      ('cohort_fedrecon_100_vs_centralized',
       cohort['cohort_fedrecon_100_vs_centralized'],
       f'>= {TARGET_COHORT_VS_CENTRALIZED:g}',
       cohort['cohort_fedrecon_100_vs_centralized'] >=
       TARGET_COHORT_VS_CENTRALIZED),
  ]
  return [collections.OrderedDict(name=n, value=v, target=t, met=bool(m))
          for n, v, t, m in checks]


def cohort_summary(runs: dict, centralized_rate: float) -> dict:
  """The cohort-execution keys from the side-by-side runs (by name)."""
  per_client = runs[f'fedrecon_{COHORT_CLIENTS}_per_client']
  cohort = runs[f'fedrecon_{COHORT_CLIENTS}_cohort']
  all_users = runs['fedrecon_all_cohort']
  neumf = runs['fedrecon_neumf_implicit_all_cohort']
  fedavg = [runs[f'fedavg_{COHORT_CLIENTS}_{execution}']['median_round_seconds']
            for execution in ('per_client', 'cohort')]
  return collections.OrderedDict(
      cohort_speedup_fedrecon_100=(per_client['median_round_seconds'] /
                                   cohort['median_round_seconds']),
      cohort_speedup_fedavg_100=fedavg[0] / fedavg[1],
      cohort_all_users_round_seconds=all_users['median_round_seconds'],
      cohort_all_users_peak_rss_gb=all_users['peak_rss_bytes'] / 2**30,
      cohort_fedrecon_100_vs_centralized=(cohort['ratings_per_second'] /
                                          centralized_rate),
      cohort_time_to_first_round_seconds=cohort[
          'time_to_first_round_seconds'],
      cohort_all_users_time_to_first_round_seconds=all_users[
          'time_to_first_round_seconds'],
      cohort_neumf_implicit_all_users_round_seconds=neumf[
          'median_round_seconds'],
      cohort_neumf_implicit_time_to_first_round_seconds=neumf[
          'time_to_first_round_seconds'])


class _Benchmark:
  """Holds the corpus, store and processes shared by the runs."""

  def __init__(self, scale: Scale, seed: int, cache_dir: str, progress: bool):
    import numpy as np  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import client_store  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import corpus  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import splits  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import synthetic  # pylint: disable=g-import-not-at-top
    from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top

    self.scale = scale
    self.seed = seed
    self.cache_dir = cache_dir
    self.tff_runtime = None  # The running training/runtime.Runtime.
    self.progress = progress
    self.synthetic_config = synthetic.SyntheticConfig(
        num_users=scale.num_users, num_items=scale.num_items,
        num_ratings=scale.num_ratings, min_ratings_per_user=20, seed=seed)
    self.data = corpus.load_corpus(corpus.DataConfig(
        synthetic_config=self.synthetic_config))
    self.split = splits.split(self.data.ratings,
                              splits.SplitConfig(seed=seed))
    self.store = client_store.create_client_store(self.split, cache_dir)
    self.client_ids = client_store.get_client_ids(self.store,
                                                  client_store.TRAIN)
    self.counts = client_store.get_num_examples(self.store,
                                                client_store.TRAIN)
    # train.py's defaults (defaults.py), with one local epoch of each kind:
    # the workload every benchmark since 2026-11 has timed.
    default = experiment.default_config(cache_dir, 'benchmark', seed=seed)
    self.config = dataclasses.replace(
        default,
        pipeline=dataclasses.replace(default.pipeline, local_epochs=1),
        recon=dataclasses.replace(default.recon, post_recon_epochs=1))
    self.model_config = experiment.model_config_of(self.config, self.split,
                                                   self.data)
    per_user = np.array(sorted(self.counts.values()))
    self.corpus_summary = collections.OrderedDict(
        users=self.data.num_users, items=self.data.num_items,
        ratings=len(self.data.ratings), training_clients=len(self.client_ids),
        training_ratings=int(per_user.sum()),
        training_ratings_per_client_median=float(np.median(per_user)),
        training_ratings_per_client_max=int(per_user.max()))

  def process(self, algorithm: str, clients_per_round: int,
              dp: bool = False, execution: str = 'per_client'):
    """(process, seconds to build it): exactly train.py's process.

    train.py's defaults with `--execution=<execution>`: one user per TFF
    client unless asked (the per-client timings every benchmark since 2026-11
    has reported), or cohorts for the side-by-side comparison.
    """
    from research.fedrec.privacy import aggregation  # pylint: disable=g-import-not-at-top
    from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
    config = dataclasses.replace(
        self.config, algorithm=algorithm,
        clients_per_round=clients_per_round,
        dp=(aggregation.DPConfig(mechanism=aggregation.Mechanism.ADAPTIVE,
                                 noise_multiplier=1.0)
            if dp else aggregation.DPConfig()))
    config = dataclasses.replace(config, execution=execution)
    started = time.perf_counter()
    process = experiment.build_process(config, self.data, self.store,
                                       self.model_config,
                                       1.0 if dp else None)
    return process, time.perf_counter() - started, config

  def implicit_neumf(self):
    """FedRecon of NeuMF under implicit feedback, every user, in cohorts.

    train.py's implicit defaults (client and reconstruction Adam, batch 16,
    4 negatives per positive, one reconstruction and two training epochs),
    `--model=neumf`, on this corpus read as interactions.

    Returns:
      (process, seconds to build it, config, training client ids, each
      client's training examples per pass: positives and their negatives).
    """
    from research.fedrec.data import client_store  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import corpus  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import splits  # pylint: disable=g-import-not-at-top
    from research.fedrec.models import ncf  # pylint: disable=g-import-not-at-top
    from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
    implicit = corpus.Feedback.IMPLICIT
    data = corpus.load_corpus(corpus.DataConfig(
        feedback=implicit, synthetic_config=self.synthetic_config))
    config = experiment.default_config(
        self.cache_dir, 'benchmark_implicit', feedback=implicit,
        seed=self.seed, model=ncf.NeuMFConfig(seed=self.seed),
        execution='cohort')
    split = splits.split(data.ratings, config.split)
    store = client_store.create_client_store(split, self.cache_dir)
    client_ids = client_store.get_client_ids(store, client_store.TRAIN)
    examples = 1 + config.pipeline.num_negatives
    counts = {c: n * examples for c, n in client_store.get_num_examples(
        store, client_store.TRAIN).items()}
    config = dataclasses.replace(config, clients_per_round=len(client_ids))
    started = time.perf_counter()
    process = experiment.build_process(
        config, data, store, experiment.model_config_of(config, split, data))
    return (process, time.perf_counter() - started, config, client_ids,
            counts)

  def planned_steps(self, clients_per_round: int, rounds: range) -> int:
    """FedRecon's gradient steps over `rounds` (known before running them)."""
    from research.fedrec.algorithms import sampling  # pylint: disable=g-import-not-at-top
    sampler = sampling.ClientSampler(self.client_ids, clients_per_round,
                                     seed=self.seed)
    passes = (self.config.recon.recon_epochs +
              self.config.recon.post_recon_epochs)
    return sum(round_work(self.counts, sampler.sample(r), passes,
                          self.config.pipeline.batch_size, False).steps
               for r in rounds)

  def run(self, name: str, process, config, rounds: int, memory: PeakMemory,
          workers: int = 1, build_seconds: Optional[float] = None,
          all_clients: bool = False, profile: Optional[dict] = None,
          clients: Optional[tuple[list[str], dict[str, int]]] = None
          ) -> dict:
    """Times `rounds` rounds of `process` (fresh state) and summarizes them.

    `clients`: (ids, examples per pass) of another store's training clients
    than the explicit corpus's, every one in every round, their ids
    carrying the round (implicit feedback: negatives drawn per round).
    """
    import tqdm  # pylint: disable=g-import-not-at-top
    from research.fedrec.algorithms import sampling  # pylint: disable=g-import-not-at-top
    from research.fedrec.data import client_store  # pylint: disable=g-import-not-at-top
    clients_given = clients is not None
    client_ids, counts = clients or (self.client_ids, self.counts)
    reconstructs = config.method.reconstructs_users
    passes = (config.recon.recon_epochs + config.recon.post_recon_epochs
              if reconstructs else config.pipeline.local_epochs)
    sampler = sampling.ClientSampler(client_ids, config.clients_per_round,
                                     seed=self.seed)
    memory.reset()
    started = time.perf_counter()
    state = process.initialize()
    init_seconds = time.perf_counter() - started
    seconds, works, rss_after = [], [], []
    restarts = 0
    bar = tqdm.tqdm(total=rounds, desc=name, unit='round', leave=False,
                    dynamic_ncols=True, disable=not self.progress)
    try:
      for round_num in range(1, rounds + 1):
        clients = (list(client_ids) if all_clients or clients_given
                   else sampler.sample(round_num))
        ids = (client_store.round_client_ids(clients, round_num)
               if clients_given else clients)
        started = time.perf_counter()
        state = process.next(state, ids).state
        seconds.append(time.perf_counter() - started)
        works.append(round_work(counts, clients, passes,
                                config.pipeline.batch_size,
                                repeat_then_batch=not reconstructs))
        rss_after.append(_tree_rss())  # Before a restart of the worker.
        restarts += self.tff_runtime.round_done()
        bar.set_postfix(s=f'{seconds[-1]:.2f}',
                        rss_gb=f'{rss_after[-1] / 2**30:.2f}', refresh=False)
        bar.update(1)
    finally:
      bar.close()
    first = (None if build_seconds is None else
             build_seconds + init_seconds + seconds[0])
    if profile is not None:
      profile.update(name=name, rounds=list(range(1, rounds + 1)),
                     seconds=seconds, steps=[w.steps for w in works],
                     rss_bytes=rss_after)
    row = summarize_run(name, len(clients), workers, seconds, works,
                        rss_after, memory.peak, first)
    row['worker_restarts'] = restarts
    return row

  def centralized(self, steps: int, memory: PeakMemory) -> dict:
    """Keras `fit` of the same MF for `steps` steps of the same batch size."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from research.fedrec.training import centralized  # pylint: disable=g-import-not-at-top
    memory.reset()
    batch_size = self.config.pipeline.batch_size
    config = centralized.CentralizedConfig(
        batch_size=batch_size, optimizer='sgd', learning_rate=0.2,
        seed=self.seed)
    tf.keras.utils.set_random_seed(self.seed)
    model = centralized.compile_model(self.model_config, self.data.num_items,
                                      self.data.num_users, config)
    table = self.split.train
    dataset = tf.data.Dataset.from_tensor_slices((
        collections.OrderedDict(user=table.users, item=table.items),
        table.ratings)).shuffle(len(table), seed=self.seed).repeat().batch(
            batch_size)
    warmup = 50
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=warmup, epochs=1, verbose=0)
    first = time.perf_counter() - started
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    return collections.OrderedDict(
        name='centralized', clients_per_round=None, workers=None, rounds=None,
        steps=steps, seconds=seconds,
        ratings_per_second=steps * batch_size / seconds,
        time_to_first_round_seconds=first, peak_rss_bytes=memory.peak,
        rss_growth=None)


def _machine() -> dict:
  import psutil  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  model = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          model = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  return collections.OrderedDict(
      cores=len(os.sched_getaffinity(0)), cpu=model,
      memory_bytes=psutil.virtual_memory().total,
      python=platform.python_version(), tensorflow=tf.__version__,
      tensorflow_federated=tff.__version__)


def run_benchmark(scale: Scale, seed: int, worker_counts: list[int],
                  output_dir: str, cache_dir: str, progress: bool,
                  log=print) -> dict:
  """Runs every measurement and writes benchmark.json / .png."""
  from research.fedrec.reporting import plots  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import runtime  # pylint: disable=g-import-not-at-top
  started = time.time()
  memory = PeakMemory()
  small, middle, large = scale.client_counts
  bench = _Benchmark(scale, seed, cache_dir, progress)
  log(f'Corpus: {bench.corpus_summary["users"]} users, '
      f'{bench.corpus_summary["items"]} items, '
      f'{bench.corpus_summary["ratings"]:,} ratings '
      f'({bench.corpus_summary["training_ratings"]:,} in training).')
  runs, profile = [], {}

  def add(row):
    runs.append(row)
    log(f'  {row["name"]}: {row["ratings_per_second"]:,.0f} ratings/s')

  try:
    # For as many steps as FedRecon's timed rounds 2..timing_rounds+1 of the
    # long run will take.
    central = bench.centralized(
        bench.planned_steps(middle, range(2, scale.timing_rounds + 2)),
        memory)
    log(f'  centralized: {central["ratings_per_second"]:,.0f} ratings/s')
    with runtime.local_runtime() as bench.tff_runtime:
      fedrecon, build, recon_config = bench.process('fedrecon', middle)
      add(bench.run(f'fedrecon_{middle}', fedrecon, recon_config,
                    scale.rounds, memory, build_seconds=build,
                    profile=profile))
      for count, rounds in ((small, scale.timing_rounds),
                            (large, min(scale.timing_rounds, 5))):
        add(bench.run(f'fedrecon_{count}', fedrecon, dataclasses.replace(
            recon_config, clients_per_round=count), rounds, memory))
      add(bench.run('fedrecon_all', fedrecon, dataclasses.replace(
          recon_config, clients_per_round=len(bench.client_ids)), 1, memory,
                    all_clients=True))
      fedavg, build, config = bench.process('fedavg', middle)
      for count, rounds in ((middle, scale.timing_rounds),
                            (small, scale.timing_rounds),
                            (large, min(scale.timing_rounds, 5))):
        add(bench.run(f'fedavg_{count}', fedavg,
                      dataclasses.replace(config, clients_per_round=count),
                      rounds, memory,
                      build_seconds=build if count == middle else None))
      dp, build, config = bench.process('fedrecon', middle, dp=True)
      add(bench.run(f'fedrecon_dp_{middle}', dp, config, scale.timing_rounds,
                    memory, build_seconds=build))
    # Cohort execution side by side with per_client: the same rounds of the
    # same users, then rounds of every user (after a warm-up one). On a fresh
    # worker: the per-client all-users round above leaves gigabytes allocated
    # in the old one, which would count in these runs' peak RSS.
    with runtime.local_runtime() as bench.tff_runtime:
      for algorithm in ('fedrecon', 'fedavg'):
        for execution in ('per_client', 'cohort'):
          process, build, config = bench.process(
              algorithm, COHORT_CLIENTS, execution=execution)
          add(bench.run(f'{algorithm}_{COHORT_CLIENTS}_{execution}', process,
                        config, scale.timing_rounds + 1, memory,
                        build_seconds=build))
      process, build, config = bench.process(
          'fedrecon', len(bench.client_ids), execution='cohort')
      add(bench.run('fedrecon_all_cohort', process, config,
                    _COHORT_ALL_USERS_ROUNDS, memory, build_seconds=build,
                    all_clients=True))
      process, build, config, client_ids, counts = bench.implicit_neumf()
      add(bench.run('fedrecon_neumf_implicit_all_cohort', process, config,
                    _COHORT_ALL_USERS_ROUNDS, memory, build_seconds=build,
                    clients=(client_ids, counts)))
    for count in worker_counts:
      with runtime.local_runtime(workers=runtime.Workers(
          num_workers=count)) as bench.tff_runtime:
        add(bench.run(f'fedrecon_{middle}_w{count}', fedrecon, recon_config,
                      scale.timing_rounds, memory, workers=count))
  finally:
    memory.close()
  for row in runs:
    row['ratio_to_centralized'] = (row['ratings_per_second'] /
                                   central['ratings_per_second'])
  central['ratio_to_centralized'] = 1.0
  report = collections.OrderedDict(
      date=time.strftime('%Y-%m-%d'),
      command=' '.join(['python -m research.fedrec.benchmark'] +
                       sys.argv[1:]),
      machine=_machine(),
      scale=dataclasses.asdict(scale),
      corpus=bench.corpus_summary,
      settings=collections.OrderedDict(
          model=bench.config.model_name,
          embedding_dim=bench.model_config.embedding_dim,
          l2=bench.model_config.l2, batch_size=bench.config.pipeline.batch_size,
          optimizers='client sgd 0.2, server sgd 1.0, reconstruction sgd 0.2',
          dp='adaptive clipping, noise multiplier 1.0', seed=seed),
      runs=[central] + runs,
      long_run_profile=profile,
      wall_seconds=time.time() - started)
  # Top-level keys: the cohort-execution issue's measurements.
  report.update(cohort_summary({row['name']: row for row in runs},
                               central['ratings_per_second']))
  report['targets'] = check_targets(report)
  os.makedirs(output_dir, exist_ok=True)
  json_io.write_json_atomically(os.path.join(output_dir, 'benchmark.json'),
                                report)
  plots.plot_round_profile(
      profile['rounds'], profile['seconds'],
      [b / 2**20 for b in profile['rss_bytes']],
      f'FedRecon, {middle} clients per round ({report["machine"]["cores"]} '
      'cores)', os.path.join(output_dir, 'benchmark.png'))
  return report


