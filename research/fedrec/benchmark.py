r"""Speed and memory of federated training, side by side with centralized Keras.

On a synthetic corpus with MovieLens-1M's shape (6,040 users, 3,706 items,
1,000,209 ratings, at least 20 per user, log-normal activity) it measures, in
one process:

  centralized      Keras `fit` of the same MF, batch size and optimizer, for as
                   many gradient steps as FedRecon takes at the middle client
                   count over the timed rounds
  fedrecon_N       Federated Reconstruction, N clients per round (50, 100,
                   1,000), the middle one long enough for memory growth
  fedrecon_all     one round with every training user as a client
  fedavg_N         FedAvg at the same client counts
  fedrecon_dp_100  FedRecon under DP with adaptive clipping
  fedrecon_100_per_client, fedrecon_100_cohort, fedavg_100_per_client,
  fedavg_100_cohort
                   the same 100-user rounds simulated one user per TFF client
                   and in cohorts (--execution; adaptive zeroing on, as
                   train.py's default)
  fedrecon_all_cohort
                   rounds of every training user in cohorts
  fedrecon_neumf_implicit_all_cohort
                   the same for NeuMF under implicit feedback with train.py's
                   implicit defaults (Adam, batch 16, 4 negatives)
  fedrecon_100_wK  FedRecon on K local TFF workers (--num_workers)

Exactly what train.py runs (same processes, aggregators, client datasets read
in the TFF runtime from the SQLite client store). Per run: median seconds per
round after the first, ratings/s, clients/s, the ratio of federated to
centralized ratings/s, time to first round (tracing and compilation included),
peak RSS of this process and its TFF workers, and RSS growth from round 10 to
the last. Ratings/s counts every rating a gradient step sees (FedRecon's
reconstruction pass too), the quantity the step-matched centralized run
reports; client ratings/s counts each client's ratings once per round.
Top-level keys of the report give cohort execution's measurements
(cohort_speedup_fedrecon_100, cohort_speedup_fedavg_100,
cohort_all_users_round_seconds,
cohort_all_users_peak_rss_gb, cohort_fedrecon_100_vs_centralized, times
to the first round, and the NeuMF implicit all-users round and its time to
the first round); the targets are printed with the others.

  python -m research.fedrec.benchmark              # full: about 50 min here
  python -m research.fedrec.benchmark --quick      # CI-sized: under 3 min

Writes <output_dir>/benchmark.json and benchmark.png (seconds and RSS per
round of the long run) and prints the table.
"""

import dataclasses
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags
from absl import logging

from research.fedrec.utils import cli
from research.fedrec.reporting import benchmarking

_QUICK = flags.DEFINE_bool(
    'quick', False, 'A CI-sized run: a corpus a tenth of ML-1M, 10/20/50 '
    'clients per round, a few rounds.')
_ROUNDS = flags.DEFINE_integer(
    'rounds', None, 'Rounds of the long FedRecon run (memory growth from '
    'round 10 to the last). Default 500; --quick: 12.', lower_bound=11)
_TIMING_ROUNDS = flags.DEFINE_integer(
    'timing_rounds', None, 'Rounds of each other federated run (the largest '
    'client count: at most 5). Default 20; --quick: 3.', lower_bound=2)
_NUM_WORKERS = flags.DEFINE_list(
    'num_workers', ['2'], 'Local TFF worker counts to also time FedRecon at '
    'the middle client count with (one worker is the main run).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', os.path.join('runs',
                                                             'benchmark'),
                                  'Where benchmark.json and .png go.')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', None, 'Client-store cache (default: <output_dir>/cache).')
_SEED = flags.DEFINE_integer('seed', 0, 'Corpus, sampling and model seed.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')

def main(argv):
  del argv  # cli.run refuses positional arguments.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    worker_counts = [int(c) for c in _NUM_WORKERS.value]
    if any(c < 2 for c in worker_counts):
      raise ValueError
  except ValueError:
    print(f'benchmark.py: error: --num_workers={",".join(_NUM_WORKERS.value)}'
          ' must list worker counts >= 2 (one worker is always measured).',
          file=sys.stderr)
    sys.exit(1)
  base = benchmarking.QUICK if _QUICK.value else benchmarking.FULL
  scale = dataclasses.replace(
      base, rounds=_ROUNDS.value or base.rounds,
      timing_rounds=_TIMING_ROUNDS.value or base.timing_rounds)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    tf.get_logger().setLevel('ERROR')
  output_dir = _OUTPUT_DIR.value
  cache_dir = _CACHE_DIR.value or os.path.join(output_dir, 'cache')
  report = benchmarking.run_benchmark(scale, _SEED.value, worker_counts, output_dir,
                         cache_dir, _PROGRESS.value,
                         log=lambda m: print(m, flush=True))
  central = report['runs'][0]['ratings_per_second']
  print()
  print(benchmarking.format_table(report['runs'], central,
                                  report['machine']['cores']))
  print()
  for check in report['targets']:
    print(f'{"met" if check["met"] else "NOT MET":7}  {check["name"]} = '
          f'{check["value"]:.4g} (target {check["target"]})')
  print(f'\nWrote {os.path.join(output_dir, "benchmark.json")} and '
        f'benchmark.png in {report["wall_seconds"]:.0f} s.')


if __name__ == '__main__':
  cli.run(main, 'benchmark.py')
