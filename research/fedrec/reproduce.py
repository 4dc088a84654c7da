r"""Reproduces a result table: every row over several seeds, in one command.

  python -m research.fedrec.reproduce --table=fedrecon_tutorial --scale=smoke
  python -m research.fedrec.reproduce --table=fedrecon_tutorial --scale=paper \
      --dataset=ml-1m --data_dir=data/ml-1m

Tables (research/fedrec/tables/*.json, one frozen configuration per row):
fedrecon_tutorial, fedrecon_movielens, ranking_loo, privacy_utility,
pfedrec_ml100k, ratings_ml100k, bandits_ml100k, bandit_contexts_ml100k. Each
row is one or more runs of research/fedrec/train.py (the bandit tables: of
bandit.py, each in a child process), repeated for --seed=0..N-1;
`--scale=smoke` makes every run tiny (seconds; for tests and CI),
`--scale=paper` runs the published size. The corpus is the built-in synthetic
one (with the published corpus's shape) unless --dataset / --data_dir (the
flags of train.py) name another.

Writes <output_dir>/tables/NAME.md, NAME.tex, NAME.csv (mean, standard
deviation and 95% confidence interval per metric, published reference values,
the command and git commit of every row), NAME_runs.csv (every run's command
and values) and NAME.png (learning curves, or utility against epsilon). The
runs themselves go to <output_dir>/tables/NAME/runs/. Runs already finished
are skipped, so an interrupted reproduction resumes where it stopped.
--records_dir=DIR keeps a small record of every finished run in DIR/NAME/
(its summary, curves, command, commit, date and corpus hash; a few KB, made
to be committed): runs recorded there are not run again, on this machine or
another with the same corpus (a record of other data is refused), so a
paper-scale table can be run over several sessions and rebuilt from the
records alone (docs/reproducing.md). A run
whose loss becomes non-finite is a result, not an error: it is recorded as
diverged (runs/EXPERIMENT.diverged, with train.py's message), the other runs
go on, and the table shows it.
"""

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags
from absl import logging

from research.fedrec.utils import cli

# train.py's flags: --dataset and --data_dir choose the corpus, --progress
# shows progress bars; the others are set per run from the table.
from research.fedrec import train
from research.fedrec.reporting import reproduction

_TABLE = flags.DEFINE_enum('table', None, reproduction.table_names(),
                           'The table to reproduce.')
_SCALE = flags.DEFINE_enum('scale', 'paper', list(reproduction.SCALES),
                           'smoke: every run tiny; paper: the published size.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per row (--seed=0..N-1).',
                              lower_bound=1)
_ROWS = flags.DEFINE_list('rows', None, 'Only these rows (default: all).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs',
                                  'Tables go to <output_dir>/tables/.')
_RECORDS_DIR = flags.DEFINE_string(
    'records_dir', None, 'Keep each finished run\'s record in '
    '<records_dir>/<table>/, and skip the runs recorded there.')
flags.mark_flag_as_required('table')

# train.py flags a user may give here: the corpus, and whether to show
# progress bars (not a setting of any run).
_USER_FLAGS = ('dataset', 'data_dir', 'progress')
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_CHILD_GRACE_SECONDS = 30  # A stopped bandit.py releases its TFF workers.


def _die_with_parent() -> None:
  """In a child: SIGTERM as soon as this process dies, however (Linux)."""
  try:
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(_PR_SET_PDEATHSIG,
                                                   signal.SIGTERM)
  except (OSError, AttributeError):  # Not Linux: the finally below remains.
    pass


def _run_bandit(run: reproduction.Run, progress: bool) -> None:
  """Runs one bandit.py run as a child process (its flags are not this
  binary's). The child never outlives this process: stopped on any exit of
  this one (Ctrl-C, SIGTERM), and sent SIGTERM by the kernel if this one is
  killed outright."""
  command = [sys.executable, '-m', 'research.fedrec.bandit', *run.args]
  if not progress:
    command.append('--noprogress')
  child = subprocess.Popen(
      command, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
      preexec_fn=_die_with_parent)
  try:
    returncode = child.wait()
  finally:
    if child.poll() is None:
      child.terminate()
      try:
        child.wait(timeout=_CHILD_GRACE_SECONDS)
      except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
  if returncode:
    raise ValueError(f'{run.experiment}: bandit.py exited with status '
                     f'{returncode} (its error is above).')


def _run(run: reproduction.Run, progress: bool) -> Optional[str]:
  """Runs one train.py (or bandit.py) run; why it diverged, or None."""
  if run.binary == 'bandit':
    _run_bandit(run, progress)
    return None
  from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import loop  # pylint: disable=g-import-not-at-top
  config = train.config_from_args(run.args)
  if not progress:
    config = dataclasses.replace(
        config, loop=dataclasses.replace(config.loop, progress=False))
  try:
    experiment.run_experiment(config, flag_values=train.flag_values(),
                              log=lambda message: print(message, flush=True))
  except loop.TrainingDiverged as e:  # A result of the row, not a mistake.
    return str(e)
  return None


def _data_hash_of_runs():
  """run -> the content hash of the corpus and split it trains on (loaded
  once per distinct corpus and split)."""
  from research.fedrec.data import corpus  # pylint: disable=g-import-not-at-top
  from research.fedrec.data import splits  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
  hashes = {}

  def data_hash(run: reproduction.Run) -> str:
    config = train.config_from_args(run.args)
    key = repr((config.data, config.split))
    if key not in hashes:
      data = corpus.load_corpus(config.data)
      hashes[key] = experiment.data_hash(
          splits.split(data.ratings, config.split))
    return hashes[key]
  return data_hash


def main(argv):
  del argv  # cli.run refuses positional arguments.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel('ERROR')
  fixed = [f'--{f.name}' for f in flags.FLAGS.get_key_flags_for_module(train)
           if f.present and f.name not in _USER_FLAGS]
  try:
    if fixed:
      raise ValueError(
          f'{", ".join(fixed)}: a table\'s settings are frozen in '
          f'research/fedrec/tables/{_TABLE.value}.json; only --dataset and '
          '--data_dir choose the corpus.')
    dataset, data_dir = flags.FLAGS.dataset, flags.FLAGS.data_dir
    progress = flags.FLAGS.progress
    if dataset != 'synthetic' and not data_dir:
      raise ValueError(f'--dataset={dataset} needs --data_dir.')
    table = reproduction.load_table(_TABLE.value)
    plan = reproduction.plan(table, _SCALE.value, _SEEDS.value, dataset,
                             data_dir, _OUTPUT_DIR.value, _ROWS.value,
                             _RECORDS_DIR.value)
    print(f'{table.title}: {len(plan.rows)} rows x {_SEEDS.value} seeds, '
          f'{len(plan.unique_runs())} runs (scale {_SCALE.value}).',
          flush=True)
    reproduction.execute(
        plan, lambda run: _run(run, progress),
        log=lambda m: print(m, flush=True),
        data_hash=_data_hash_of_runs() if table.binary == 'train' else None)
    report = reproduction.collect(plan)
    paths = reproduction.write_outputs(report)
  except cli.user_errors() as e:  # A user mistake or an I/O failure.
    cli.fail('reproduce.py', e)
  print()
  print(reproduction.markdown_grid(report))
  print(f'\nWrote {", ".join(paths.values())}.')


if __name__ == '__main__':
  cli.run(main, 'reproduce.py')
