"""Reproduction of result tables: frozen row configurations, seeds, statistics.

A table is a JSON file in `research/fedrec/tables/` (see its README.md). Each
row names one or more runs of `research/fedrec/train.py` by their flags; a run
is repeated over seeds (`--seed=0..n-1`), and each metric of the row is
reported as mean, standard deviation and 95% confidence interval (Student t)
over the seeds, next to published reference values where the table has them.

`plan` lays out a table's runs, `execute` runs those not finished yet (a run
whose summary.json exists is skipped, so an interrupted reproduction resumes;
a run killed mid-way resumes from its own checkpoint), `collect` reads their
metrics and `write_outputs` writes `<output>/tables/NAME.{md,tex,csv,png}` plus
`NAME_runs.csv`, one line per run with its exact command and values.

With a records directory, every finished (or diverged) run also leaves a
record there, `<records>/NAME/EXPERIMENT.json`: its summary, the curves the
table reads from metrics.csv, its command, seed, git commit, date and the
content hash of the corpus and split it trained on. A few kilobytes, so the
records can be kept (committed) when the run directories cannot: a
reproduction longer than one machine's lifetime goes on elsewhere, and the
table is rebuilt from the records of runs made on other machines and commits.
A record counts only for the same corpus and split (`check_records`).

Library code without flags: `research/fedrec/reproduce.py` is the binary.
"""

import collections
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import shlex
import subprocess
import time
from typing import Callable, Optional

from research.fedrec.utils import json_io

TABLES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tables')
SCALES = ('smoke', 'paper')
SOURCES = ('test', 'val', 'privacy', 'summary')
# The binaries a table's runs may be of (a table's "binary").
BINARIES = ('train', 'bandit')
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(TABLES_DIR)))
REPRODUCE_COMMAND = 'python -m research.fedrec.reproduce'
RECORD_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Metric:
  name: str
  label: str
  source: str  # test: summary.json; val: metrics.csv's last value; privacy;
  # summary: summary.json's value at `key`, a dotted path (a.b.c).
  key: str
  run: str = 'main'  # Which of the row's runs it is read from.
  digits: int = 4


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  label: str
  runs: dict  # Run name -> train.py flags (over the table's `common`).
  result: Optional[str] = None  # test_metrics entry (default: algorithm).
  reference: dict = dataclasses.field(default_factory=dict)
  x: Optional[float] = None  # Privacy figure: the target epsilon.
  group: Optional[str] = None  # Privacy figure: the curve.
  curve: bool = True  # Learning-curve figure: draw this row's curve.


@dataclasses.dataclass(frozen=True)
class Table:
  name: str
  title: str
  about: str
  published_corpus: str
  synthetic: dict  # Scale -> synthetic corpus flags.
  common: dict  # Run name -> flags shared by every row.
  smoke: dict  # Flags that make every run tiny at --scale=smoke.
  metrics: tuple
  figure: dict
  rows: tuple
  reference_label: str = ''
  binary: str = 'train'  # Whose runs: train.py, or bandit.py.


def table_names() -> list[str]:
  return sorted(f[:-len('.json')] for f in os.listdir(TABLES_DIR)
                if f.endswith('.json'))


def load_table(name: str) -> Table:
  """The table `name` (research/fedrec/tables/<name>.json).

  Raises:
    ValueError: unknown table or malformed file (one line).
  """
  path = os.path.join(TABLES_DIR, f'{name}.json')
  if name not in table_names():
    raise ValueError(f'--table={name}: no such table (choose from '
                     f'{", ".join(table_names())}).')
  try:
    with open(path) as f:
      spec = json.load(f)
    metrics = tuple(Metric(**m) for m in spec.pop('metrics'))
    rows = tuple(Row(**r) for r in spec.pop('rows'))
    table = Table(name=name, metrics=metrics, rows=rows, **spec)
  except (json.JSONDecodeError, TypeError, KeyError) as e:
    raise ValueError(f'{path}: not a valid table file ({e}).') from None
  if table.binary not in BINARIES:
    raise ValueError(f'{path}: "binary" is {table.binary!r}; expected one of '
                     f'{", ".join(BINARIES)}.')
  run_names = set(table.common)
  for metric in table.metrics:
    if metric.source not in SOURCES or metric.run not in run_names:
      raise ValueError(f'{path}: metric {metric.name!r} has source '
                       f'{metric.source!r} / run {metric.run!r}; expected one '
                       f'of {SOURCES} / {sorted(run_names)}.')
  for row in table.rows:
    if set(row.runs) != run_names:
      raise ValueError(f'{path}: row {row.name!r} has runs {sorted(row.runs)}'
                       f', expected {sorted(run_names)}.')
  if len({row.name for row in table.rows}) != len(table.rows):
    raise ValueError(f'{path}: row names repeat.')
  if set(table.synthetic) != set(SCALES):
    raise ValueError(f'{path}: "synthetic" needs the scales {SCALES}.')
  return table


def flag_args(flags: dict) -> list[str]:
  """train.py arguments of a flag dict (True: --name; False: --noname)."""
  args = []
  for name, value in flags.items():
    if value is True:
      args.append(f'--{name}')
    elif value is False:
      args.append(f'--no{name}')
    else:
      args.append(f'--{name}={value}')
  return args


@dataclasses.dataclass(frozen=True)
class Run:
  """One train.py run: a row's run at one seed."""

  experiment: str  # Its experiment name (directory under `root`).
  root: str
  seed: int
  args: tuple  # Every argument of the binary.
  binary: str = 'train'  # research/fedrec/<binary>.py.
  records: Optional[str] = None  # Where its record goes (<records>/TABLE).

  @property
  def directory(self) -> str:
    return os.path.join(self.root, self.experiment)

  @property
  def record_path(self) -> Optional[str]:
    if self.records is None:
      return None
    return os.path.join(self.records, self.experiment + '.json')

  def record(self) -> Optional[dict]:
    """The run's record, if it has one.

    Raises:
      ValueError: the record is not one reproduce wrote (one line).
    """
    path = self.record_path
    if path is None or not os.path.exists(path):
      return None
    try:
      with open(path) as f:
        record = json.load(f)
      if (record['format'] != RECORD_FORMAT or
          record['experiment'] != self.experiment):
        raise ValueError('another format or experiment')
      record['summary'], record['curves']  # pylint: disable=pointless-statement
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ValueError(f'{path}: not a record of run {self.experiment} '
                       f'({e}); delete it to run the run again.') from None
    return record

  def has_run_here(self) -> bool:
    """Whether its run directory (or .diverged file) is on this machine."""
    return (os.path.exists(self.summary_path) or
            os.path.exists(self.diverged_path))

  def finished(self) -> bool:
    """Finished or diverged, here or where its record was written."""
    return self.has_run_here() or self.record() is not None

  def summary(self) -> dict:
    """summary.json of the finished run (here, else from its record)."""
    if os.path.exists(self.summary_path):
      with open(self.summary_path) as f:
        return json.load(f)
    return self.record()['summary']

  def series(self, column: str) -> list[tuple[int, float]]:
    """A metrics.csv column as (round, value) pairs ([] if it has none)."""
    csv_path = os.path.join(self.directory, 'metrics.csv')
    if os.path.exists(csv_path):
      from research.fedrec.reporting import plots  # pylint: disable=g-import-not-at-top
      return plots.read_metrics_csv(csv_path).get(column, [])
    record = self.record()
    if record is None:
      return []
    return [(int(r), float(v)) for r, v in record['curves'].get(column, [])]

  @property
  def summary_path(self) -> str:
    return os.path.join(self.directory, 'summary.json')

  @property
  def diverged_path(self) -> str:
    """Written when the run diverged (its directory is then removed)."""
    return os.path.join(self.root, self.experiment + '.diverged')

  def divergence(self) -> Optional[str]:
    """Why the run diverged (train.py's message), or None."""
    if os.path.exists(self.diverged_path):
      with open(self.diverged_path) as f:
        return f.read().strip()
    if os.path.exists(self.summary_path):
      return None
    record = self.record()
    return None if record is None else record.get('diverged')

  def write_record(self, columns: list[str], commit: str, date: str,
                   data_hash: Optional[Callable[['Run'], str]] = None
                   ) -> None:
    """Records the run finished (or diverged) here: see the module doc.

    The data hash is train.py's (hparams.json), else `data_hash(self)` (a
    diverged run has no directory left), else none (bandit.py's runs).
    """
    recorded_hash = None
    hparams = os.path.join(self.directory, 'hparams.json')
    if os.path.exists(hparams):
      with open(hparams) as f:
        recorded_hash = json.load(f).get('data_hash')
    elif data_hash is not None:
      recorded_hash = data_hash(self)
    diverged = self.divergence()
    curves = {}
    if diverged is None:
      for column in columns:
        series = self.series(column)
        if series:
          curves[column] = [[r, v] for r, v in series]
    os.makedirs(self.records, exist_ok=True)
    json_io.write_json_atomically(self.record_path, collections.OrderedDict(
        format=RECORD_FORMAT, experiment=self.experiment, seed=self.seed,
        command=self.command, commit=commit, date=date,
        data_hash=recorded_hash,
        diverged=diverged,
        summary=None if diverged is not None else self.summary(),
        curves=curves))

  @property
  def command(self) -> str:
    return ' '.join([f'python -m research.fedrec.{self.binary}'] +
                    [shlex.quote(a) for a in self.args])


@dataclasses.dataclass(frozen=True)
class Plan:
  """Every run of a table: (row, run name, seed) -> Run (shared if equal)."""

  table: Table
  scale: str
  seeds: tuple
  dataset: str
  data_dir: Optional[str]
  output_dir: str
  rows: tuple  # The rows to run and report.
  runs: dict
  records_dir: Optional[str] = None  # Each run's record under <it>/TABLE.

  @property
  def record_columns(self) -> list[str]:
    """The metrics.csv columns a record keeps: those the table reads."""
    columns = [m.key for m in self.table.metrics if m.source == 'val']
    if self.table.figure.get('kind') == 'curves':
      columns.append(self.table.figure['column'])
    return sorted(set(columns))

  @property
  def corpus(self) -> str:
    """The corpus the runs read, as a table's `published_corpus` names it.

    --dataset, or for RecBole atomic files their dataset's NAME (RecBole's
    ml-100k is MovieLens-100K: data/README.md), so that a table's published
    values are checked against runs on their own corpus whichever reader
    opened it.
    """
    if self.dataset == 'atomic' and self.data_dir:
      # Imported here: this module reads no data otherwise.
      from research.fedrec.data import atomic  # pylint: disable=g-import-not-at-top
      try:
        return atomic.dataset_name(self.data_dir)
      except (OSError, ValueError):  # Not there (yet): the run will say.
        pass
    return self.dataset

  def unique_runs(self) -> list[Run]:
    seen, unique = set(), []
    for run in self.runs.values():
      if run.experiment not in seen:
        seen.add(run.experiment)
        unique.append(run)
    return unique


def plan(table: Table, scale: str, seeds: int, dataset: str,
         data_dir: Optional[str], output_dir: str,
         row_names: Optional[list[str]] = None,
         records_dir: Optional[str] = None) -> Plan:
  """The runs of `table` at `scale` for seeds 0..seeds-1 (their records in
  `records_dir`/TABLE, if given).

  Raises:
    ValueError: bad scale, seeds or row names (one line).
  """
  if scale not in SCALES:
    raise ValueError(f'--scale={scale}: expected one of {", ".join(SCALES)}.')
  if seeds < 1:
    raise ValueError('--seeds must be >= 1.')
  rows = table.rows
  if row_names:
    known = {row.name: row for row in table.rows}
    unknown = [n for n in row_names if n not in known]
    if unknown:
      raise ValueError(f'--rows: {", ".join(unknown)} not in table '
                       f'{table.name} (rows: {", ".join(known)}).')
    rows = tuple(row for row in table.rows if row.name in row_names)
  if dataset == 'synthetic':
    data_flags = dict(table.synthetic[scale])
  else:
    data_flags = dict(dataset=dataset, data_dir=data_dir)
  root = os.path.join(output_dir, 'tables', table.name, 'runs')
  cache = os.path.join(output_dir, 'tables', 'cache')
  records = records_dir and os.path.join(records_dir, table.name)
  runs, prefixes = {}, {}
  for row in table.rows:  # All rows: names must not depend on --rows.
    for run_name in table.common:
      flags = dict(table.common[run_name])
      flags.update(row.runs[run_name])
      if scale == 'smoke':
        flags.update(table.smoke)
      flags.update(data_flags)
      # Equal flags are one run, named after the first row that asks for it.
      digest = hashlib.sha1(json.dumps(flags, sort_keys=True).encode()
                            ).hexdigest()[:8]
      prefix = prefixes.setdefault(digest, f'{row.name}-{run_name}-{digest}')
      if row not in rows:
        continue
      for seed in range(seeds):
        experiment = f'{prefix}-seed{seed}'
        args = flag_args(flags) + [
            f'--seed={seed}', f'--root_output_dir={root}',
            f'--experiment_name={experiment}']
        if table.binary == 'train':  # bandit.py caches nothing.
          args.append(f'--cache_dir={cache}')
        runs[(row.name, run_name, seed)] = Run(experiment, root, seed,
                                               tuple(args), table.binary,
                                               records)
  return Plan(table, scale, tuple(range(seeds)), dataset, data_dir,
              output_dir, rows, runs, records_dir)


def _settings_of(run: Run) -> str:
  """The part of a run's name its seeds share (the row, run and settings)."""
  return run.experiment.rsplit('-seed', 1)[0]


def format_duration(seconds: float) -> str:
  """'45 s', '12 min', '3 h 05 min'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  minutes = int(round(seconds / 60))
  if minutes < 60:
    return f'{minutes} min'
  return f'{minutes // 60} h {minutes % 60:02d} min'


def time_left(pending: list[Run], durations: dict[str, list[float]]
              ) -> Optional[float]:
  """Seconds the `pending` runs should take: each its settings' mean
  duration so far, or the mean of every run timed so far (None before any
  run is timed)."""
  timed = [d for values in durations.values() for d in values]
  if not timed:
    return None
  overall = sum(timed) / len(timed)
  total = 0.0
  for run in pending:
    values = durations.get(_settings_of(run))
    total += sum(values) / len(values) if values else overall
  return total


def check_records(the_plan: Plan,
                  data_hash: Optional[Callable[[Run], str]]) -> None:
  """Refuses records of runs on other data, before anything runs.

  `data_hash(run)` is the content hash of the corpus and split `run` would
  train on here (train.py's hparams.json `data_hash`); a record without one
  (bandit.py's runs) or a plan without `data_hash` is not checked.

  Raises:
    ValueError: a record of another corpus or split (one line).
  """
  if data_hash is None:
    return
  for run in the_plan.unique_runs():
    if run.has_run_here():
      continue  # Its own directory is checked by train.py.
    record = run.record()
    if record is None or record.get('data_hash') is None:
      continue
    here = data_hash(run)
    if record['data_hash'] != here:
      raise ValueError(
          f'{run.record_path}: recorded on other data (content hash '
          f'{record["data_hash"][:12]}, here {here[:12]}): the corpus or its '
          'split differs; give the corpus it was made on, or another '
          '--records_dir.')


def execute(the_plan: Plan, run_fn: Callable[[Run], Optional[str]],
            log=print, clock=time.monotonic,
            data_hash: Optional[Callable[[Run], str]] = None) -> None:
  """Runs every run not finished or diverged yet, in table order.

  `run_fn` returns None, or why the run diverged (its loss became
  non-finite): a result of the row's settings on this corpus, recorded
  (`Run.diverged_path`) and reported in the table, not an error that stops
  the other runs. Delete the `.diverged` file to try the run again. After
  each run, how many are left and about how long they should take (each at
  its settings' mean duration so far, `time_left`). With records
  (`Plan.records_dir`), a run recorded before is not run again (after
  `check_records(the_plan, data_hash)`), and every run finished here is
  recorded, including runs finished before the records were asked for.
  """
  check_records(the_plan, data_hash)
  runs = the_plan.unique_runs()
  durations = collections.defaultdict(list)
  record = lambda run: run.write_record(
      the_plan.record_columns, git_commit(), time.strftime('%Y-%m-%d'),
      data_hash)
  for number, run in enumerate(runs, 1):
    where = f'[{number}/{len(runs)}] {run.experiment}'
    if run.has_run_here():
      if os.path.exists(run.summary_path):
        log(f'{where}: done before, skipped.')
      else:
        log(f'{where}: diverged before ({run.divergence()}), skipped.')
      if run.records is not None and run.record() is None:
        record(run)  # At the current commit: the run's own is not known.
        log(f'{where}: recorded in {run.record_path}.')
      continue
    if run.finished():
      made = run.record()
      log(f'{where}: recorded before (git {made["commit"]}, {made["date"]}'
          f'{", diverged" if made["diverged"] else ""}), skipped.')
      continue
    log(f'{where}: {run.command}')
    started = clock()
    diverged = run_fn(run)
    took = clock() - started
    durations[_settings_of(run)].append(took)
    if diverged:
      os.makedirs(run.root, exist_ok=True)
      json_io.write_text_atomically(run.diverged_path, diverged + '\n')
      log(f'{where}: diverged after {took:.0f} s: {diverged}')
    else:
      log(f'{where}: finished in {took:.0f} s.')
    if run.records is not None:
      record(run)
    pending = [r for r in runs[number:] if not r.finished()]
    if pending:
      log(f'{len(pending)} run{"s" * (len(pending) > 1)} left: about '
          f'{format_duration(time_left(pending, durations))} more, at the '
          'durations so far.')


def metric_value(metric: Metric, row: Row, run: Run) -> Optional[float]:
  """The metric of one finished run (None where the run has no such value,
  or diverged)."""
  if run.divergence() is not None:
    return None
  summary = run.summary()
  if metric.source == 'test':
    result = summary['test_metrics'].get(row.result or summary['algorithm'])
    value = None if result is None else result.get(metric.key)
  elif metric.source == 'val':
    series = run.series(metric.key)
    value = series[-1][1] if series else None
  elif metric.source == 'privacy':
    value = summary['privacy'].get(metric.key)
  else:
    value = summary
    for part in metric.key.split('.'):
      value = value.get(part) if isinstance(value, dict) else None
  return None if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class Stats:
  n: int
  mean: float
  std: float  # Sample standard deviation (nan for one seed).
  ci95: float  # Half-width of the 95% confidence interval of the mean.

  @classmethod
  def of(cls, values: list[float]) -> Optional['Stats']:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from scipy import stats  # pylint: disable=g-import-not-at-top
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
      return None
    n = len(values)
    mean = float(np.mean(values))
    if n == 1:
      return cls(1, mean, math.nan, math.nan)
    std = float(np.std(values, ddof=1))
    return cls(n, mean, std,
               float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)))

  def contains(self, value: float) -> bool:
    return (not math.isnan(self.ci95) and
            self.mean - self.ci95 <= value <= self.mean + self.ci95)


def git_commit() -> str:
  """HEAD of this checkout, '+ uncommitted changes' when it has any."""
  # Under `bazel run` this file is in the runfiles; Bazel names the checkout.
  repo = os.environ.get('BUILD_WORKSPACE_DIRECTORY', _REPO_DIR)

  def git(*args):
    return subprocess.run(['git', '-C', repo] + list(args),
                          capture_output=True, text=True, check=True).stdout
  try:
    commit = git('rev-parse', '--short=12', 'HEAD').strip()
    dirty = git('status', '--porcelain', '--untracked-files=no').strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown (not a git checkout)'
  return commit + (' + uncommitted changes' if dirty else '')


def reproduce_command(the_plan: Plan, row: Optional[Row] = None) -> str:
  args = [f'--table={the_plan.table.name}', f'--scale={the_plan.scale}',
          f'--seeds={len(the_plan.seeds)}']
  if the_plan.dataset != 'synthetic':
    args += [f'--dataset={the_plan.dataset}', f'--data_dir={the_plan.data_dir}']
  if the_plan.output_dir != 'runs':
    args.append(f'--output_dir={the_plan.output_dir}')
  if the_plan.records_dir:
    args.append(f'--records_dir={the_plan.records_dir}')
  if row is not None:
    args.append(f'--rows={row.name}')
  return ' '.join([REPRODUCE_COMMAND] + [shlex.quote(a) for a in args])


@dataclasses.dataclass(frozen=True)
class Report:
  """What the outputs are written from."""

  plan: Plan
  date: str
  commit: str
  stats: dict  # (row name, metric name) -> Stats or None
  values: dict  # (row name, metric name) -> per-seed values
  diverged: dict  # (row name, metric name) -> seeds whose run diverged
  # The git commits and dates of the runs' records (with records only).
  recorded: tuple = ()


def _recorded(the_plan: Plan) -> tuple:
  """(commit, dates) of the reported runs' records, oldest first."""
  if the_plan.records_dir is None:
    return ()
  dates = collections.defaultdict(set)
  for run in the_plan.unique_runs():
    record = run.record()
    if record is not None:
      dates[record['commit']].add(record['date'])
  return tuple(sorted(((c, tuple(sorted(d))) for c, d in dates.items()),
                      key=lambda item: (item[1][0], item[0])))


def collect(the_plan: Plan) -> Report:
  """Reads every run's metrics (all runs must have finished)."""
  stats, values, diverged = {}, {}, {}
  for row in the_plan.rows:
    for metric in the_plan.table.metrics:
      runs = [the_plan.runs[(row.name, metric.run, seed)]
              for seed in the_plan.seeds]
      per_seed = [metric_value(metric, row, run) for run in runs]
      values[(row.name, metric.name)] = per_seed
      stats[(row.name, metric.name)] = Stats.of(per_seed)
      diverged[(row.name, metric.name)] = [
          run.seed for run in runs if run.divergence() is not None]
  return Report(the_plan, time.strftime('%Y-%m-%d'), git_commit(), stats,
                values, diverged, _recorded(the_plan))


def _corpus(the_plan: Plan) -> str:
  if the_plan.dataset != 'synthetic':
    return f'{the_plan.dataset} from {the_plan.data_dir}'
  shape = the_plan.table.synthetic[the_plan.scale]
  if not shape:
    return 'the built-in synthetic corpus (default shape)'
  return ('the built-in synthetic corpus (' + ', '.join(
      f'{k.replace("synthetic_", "")} {v:,}' for k, v in shape.items()) + ')')


def _seeds(the_plan: Plan) -> str:
  count = len(the_plan.seeds)
  return f'{count} seed{"s" if count != 1 else ""}'


def _reference_metrics(table: Table) -> list[Metric]:
  return [m for m in table.metrics
          if any(m.name in row.reference for row in table.rows)]


def _fmt(value: Optional[float], digits: int) -> str:
  return '' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def _cell(stat: Optional[Stats], digits: int, plus_minus: str,
          diverged: int = 0, seeds: int = 0) -> str:
  """A metric's cell; `diverged` of the row's `seeds` runs diverged."""
  if stat is None:
    return 'diverged' if diverged else '-'
  if stat.n == 1:
    text = _fmt(stat.mean, digits)
  else:
    text = f'{stat.mean:.{digits}f}{plus_minus}{stat.ci95:.{digits}f}'
  if diverged:
    text += f' ({seeds - diverged} of {seeds} seeds; the others diverged)'
  return text


def _report_cell(report: Report, row: Row, metric: Metric,
                 plus_minus: str) -> str:
  key = (row.name, metric.name)
  return _cell(report.stats[key], metric.digits, plus_minus,
               len(report.diverged[key]), len(report.plan.seeds))


def _divergence_lines(report: Report) -> list[str]:
  """A paragraph naming every run of the table that diverged, and why."""
  runs = [run for run in report.plan.unique_runs()
          if run.divergence() is not None]
  if not runs:
    return []
  return ['', 'Diverged (the training loss became non-finite; their seeds are '
          'left out of their rows\' statistics):'] + [
              f'- `{run.experiment}`: {run.divergence()}' for run in runs]


def _reference_note(report: Report, row: Row, metric: Metric) -> str:
  """The published value, and whether our CI holds it (same corpus only)."""
  value = row.reference.get(metric.name)
  if value is None:
    return ''
  text = _fmt(value, metric.digits)
  stat = report.stats[(row.name, metric.name)]
  if report.plan.corpus != report.plan.table.published_corpus:
    return text
  if stat is None or math.isnan(stat.ci95):
    return text
  return text + (' (in our CI)' if stat.contains(value) else
                 ' (outside our CI)')


def markdown_grid(report: Report) -> str:
  """The table's Markdown grid alone (rows x metrics, references)."""
  the_plan, table = report.plan, report.plan.table
  refs = _reference_metrics(table)
  header = ['row'] + [m.label for m in table.metrics] + [
      f'{m.label}, ref.' for m in refs]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in the_plan.rows:
    cells = [row.label] + [
        _report_cell(report, row, m, ' ± ') for m in table.metrics] + [
            _reference_note(report, row, m) for m in refs]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def markdown(report: Report) -> str:
  """The table as Markdown, with its provenance and commands."""
  the_plan, table = report.plan, report.plan.table
  refs = _reference_metrics(table)
  lines = [
      f'# {table.title}', '',
      f'Regenerated {report.date} with `{reproduce_command(the_plan)}` '
      f'(scale {the_plan.scale}) on {_corpus(the_plan)}; seeds '
      f'{", ".join(map(str, the_plan.seeds))}; git {report.commit}.', '']
  if report.recorded:
    lines += [
        f'Built from the runs\' records in {the_plan.records_dir}/'
        f'{table.name}/; the runs were made at ' + '; '.join(
            f'git {commit} ({", ".join(dates)})'
            for commit, dates in report.recorded) + '.', '']
  lines += [table.about, '', markdown_grid(report)]
  lines += _divergence_lines(report)
  lines += ['', f'Mean ± half-width of the 95% confidence interval (Student '
            f't) over {_seeds(the_plan)}; the standard deviations '
            f'are in {table.name}.csv.']
  if refs:
    same = the_plan.corpus == table.published_corpus
    lines.append(
        f'"ref." columns: {table.reference_label}. ' +
        ('"in our CI" marks a reference value inside our 95% interval.'
         if same else
         f'They were measured on {table.published_corpus}; this run used '
         'another corpus, so they are context, not a check.'))
  lines += ['', f'Commands (a row runs each of its {table.binary}.py commands '
            'once per seed, with `--seed` set to the seed):', '']
  for row in the_plan.rows:
    lines.append(f'- **{row.label}**: `{reproduce_command(the_plan, row)}`')
    for run_name in table.common:
      run = the_plan.runs[(row.name, run_name, 0)]
      lines.append(f'  - {run_name}: `{run.command}`')
  return '\n'.join(lines) + '\n'


def _tex_escape(text: str) -> str:
  for char, escaped in (('\\', r'\textbackslash{}'), ('&', r'\&'),
                        ('%', r'\%'), ('#', r'\#'), ('_', r'\_'),
                        ('$', r'\$'), ('{', r'\{'), ('}', r'\}')):
    text = text.replace(char, escaped)
  return text


def latex(report: Report) -> str:
  """The table as a LaTeX (booktabs) table environment."""
  the_plan, table = report.plan, report.plan.table
  refs = _reference_metrics(table)
  columns = [m.label for m in table.metrics] + [
      f'{m.label} (ref.)' for m in refs]
  lines = [
      f'% {table.title}: regenerated {report.date}, git {report.commit}.',
      f'% {reproduce_command(the_plan)}',
      r'\begin{table}[t]', r'\centering',
      r'\caption{' + _tex_escape(
          f'{table.title}. Scale {the_plan.scale}, {_corpus(the_plan)}; mean '
          f'and 95% confidence half-width over {_seeds(the_plan)}.')
      + '}',
      r'\label{tab:' + table.name + '}',
      r'\begin{tabular}{l' + 'c' * len(columns) + '}', r'\toprule',
      ' & '.join(['Method'] + [_tex_escape(c) for c in columns]) + r' \\',
      r'\midrule']
  for row in the_plan.rows:
    cells = [_tex_escape(row.label)]
    for m in table.metrics:
      stat = report.stats[(row.name, m.name)]
      diverged = len(report.diverged[(row.name, m.name)])
      if stat is None:
        cells.append('diverged' if diverged else '--')
      else:  # A seed that diverged is marked with a dagger.
        cells.append('$' + _cell(stat, m.digits, r' \pm ') +
                     ('^\\dagger' if diverged else '') + '$')
    cells += [_fmt(row.reference.get(m.name), m.digits) or '--'
              for m in refs]
    lines.append(' & '.join(cells) + r' \\')
  lines += [r'\bottomrule', r'\end{tabular}', r'\end{table}']
  return '\n'.join(lines) + '\n'


def _csv_text(header: list[str], rows: list[list]) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(header)
  writer.writerows(rows)
  return out.getvalue()


def summary_csv(report: Report) -> str:
  """One line per row: per metric mean, std, 95% CI and reference."""
  the_plan, table = report.plan, report.plan.table
  refs = _reference_metrics(table)
  header = ['row', 'label', 'seeds', 'diverged_seeds']
  for m in table.metrics:
    header += [f'{m.name}_mean', f'{m.name}_std', f'{m.name}_ci95_low',
               f'{m.name}_ci95_high']
  header += [f'{m.name}_reference' for m in refs]
  header += ['scale', 'dataset', 'date', 'git_commit', 'command']
  lines = []
  for row in the_plan.rows:
    line = [row.name, row.label, len(the_plan.seeds), ' '.join(
        str(s) for s in sorted({seed for m in table.metrics
                                for seed in report.diverged[(row.name,
                                                             m.name)]}))]
    for m in table.metrics:
      stat = report.stats[(row.name, m.name)]
      if stat is None:
        line += ['', '', '', '']
      else:
        line += [_fmt(stat.mean, 10), _fmt(stat.std, 10),
                 _fmt(stat.mean - stat.ci95, 10),
                 _fmt(stat.mean + stat.ci95, 10)]
    line += [row.reference.get(m.name, '') for m in refs]
    line += [the_plan.scale, the_plan.dataset, report.date, report.commit,
             reproduce_command(the_plan, row)]
    lines.append(line)
  return _csv_text(header, lines)


def runs_csv(report: Report) -> str:
  """One line per (row, seed): each metric's value and the exact commands."""
  the_plan, table = report.plan, report.plan.table
  header = ['row', 'seed'] + [m.name for m in table.metrics] + [
      'diverged'] + [f'{run}_command' for run in table.common]
  lines = []
  for row in the_plan.rows:
    for k, seed in enumerate(the_plan.seeds):
      lines.append(
          [row.name, seed] +
          [_fmt(report.values[(row.name, m.name)][k], 10)
           for m in table.metrics] +
          ['; '.join(filter(None, (
              the_plan.runs[(row.name, run, seed)].divergence()
              for run in table.common)))] +
          [the_plan.runs[(row.name, run, seed)].command
           for run in table.common])
  return _csv_text(header, lines)


def plot(report: Report, output_png: str) -> None:
  """The table's figure: learning curves, or utility against epsilon."""
  from research.fedrec.reporting import plots  # pylint: disable=g-import-not-at-top
  the_plan, table = report.plan, report.plan.table
  figure = table.figure
  title = (f'{table.title} ({the_plan.scale}, {_seeds(the_plan)}, '
           f'{the_plan.dataset})')
  metrics = {m.name: m for m in table.metrics}
  if figure['kind'] == 'privacy':
    panels = []
    for name in figure['metrics']:
      curves = collections.OrderedDict()
      lines = {}
      for row in the_plan.rows:
        stat = report.stats[(row.name, name)]
        if stat is None:
          continue
        if row.x is None:
          lines[row.label] = stat.mean
          continue
        xs, means, widths = curves.setdefault(row.group or 'model', ([], [],
                                                                    []))
        xs.append(row.x)
        means.append(stat.mean)
        widths.append(0.0 if math.isnan(stat.ci95) else stat.ci95)
      panels.append((metrics[name].label, curves, lines))
    plots.plot_privacy_utility(panels, title, output_png)
    return
  curves, lines = collections.OrderedDict(), {}
  reference = figure.get('reference_metric')
  # The runs drawn (a curve each): the figure's "runs", else all of them.
  run_names = figure.get('runs') or list(the_plan.table.common)
  for row in the_plan.rows:
    if not row.curve:
      continue
    for run_name in run_names:
      label = row.label if len(run_names) == 1 else f'{row.label}, {run_name}'
      seeds = []
      for seed in the_plan.seeds:
        run = the_plan.runs[(row.name, run_name, seed)]
        series = run.series(figure['column']) if run.finished() else []
        if series:
          seeds.append(series)
      if seeds:
        curves[label] = seeds
      elif reference and report.stats[(row.name, reference)] is not None:
        lines[f'{label}, test'] = report.stats[(row.name, reference)].mean
  plots.plot_seed_curves(curves, lines, figure['ylabel'], title, output_png)


def write_outputs(report: Report) -> dict[str, str]:
  """Writes NAME.md/.tex/.csv/.png and NAME_runs.csv; their paths."""
  the_plan = report.plan
  directory = os.path.join(the_plan.output_dir, 'tables')
  os.makedirs(directory, exist_ok=True)
  base = os.path.join(directory, the_plan.table.name)
  paths = collections.OrderedDict(
      md=base + '.md', tex=base + '.tex', csv=base + '.csv',
      runs_csv=base + '_runs.csv', png=base + '.png')
  json_io.write_text_atomically(paths['md'], markdown(report))
  json_io.write_text_atomically(paths['tex'], latex(report))
  json_io.write_text_atomically(paths['csv'], summary_csv(report))
  json_io.write_text_atomically(paths['runs_csv'], runs_csv(report))
  plot(report, paths['png'])
  return paths
