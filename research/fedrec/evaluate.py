r"""Evaluates a trained run's checkpoint on its validation or test users.

Everything comes from the experiment directory train.py wrote (hparams.json
and the latest checkpoint), so no training flag has to be repeated:

  python -m research.fedrec.evaluate --experiment_dir=runs/default

Each FedRecon user is first reconstructed from the ratings on that user's own
client (training ratings; under --split=user_disjoint, the support half of an
unseen user's ratings), exactly as in federated evaluation, then scored on the
held-out ratings. Reports RMSE, MSE, MAE and rating accuracy overall, per user
activity bucket, and for users seen / unseen in training, and writes

  <output_dir>/<split>.json        overall and sliced metrics, run identity
  <output_dir>/<split>_slices.csv  one row per slice
  <output_dir>/<split>_users.csv   one row per evaluated user

(default output_dir: <experiment_dir>/evaluation).
"""

import collections
import csv
import dataclasses
import io
import json
import os
import sys
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags
from absl import logging

from research.fedrec.utils import cli

from research.fedrec.evaluation import slices
from research.fedrec.utils import json_io
from research.fedrec.utils import text_table

_EXPERIMENT_DIR = flags.DEFINE_string(
    'experiment_dir', None, 'Directory of a run written by train.py.')
_SPLIT = flags.DEFINE_enum('split', 'test', ['val', 'test'],
                           'Which held-out users to evaluate.')
_ACTIVITY_BUCKETS = flags.DEFINE_list(
    'activity_buckets', [str(e) for e in slices.DEFAULT_ACTIVITY_EDGES],
    'Edges of the user-activity buckets (ratings on the client before '
    'scoring): 20,50,200 gives <20, 20-49, 50-199, >=200.')
_EVAL_RECON_EPOCHS = flags.DEFINE_integer(
    'eval_recon_epochs', None, 'FedRecon runs: reconstruct each user for this '
    'many epochs (default: as the run did, its --eval_recon_epochs or else '
    'its --recon_epochs).', lower_bound=1)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Where to write the results (default: '
    '<experiment_dir>/evaluation).')


def _edges() -> tuple[int, ...]:
  try:
    return slices.validate_edges([int(e) for e in _ACTIVITY_BUCKETS.value])
  except ValueError:
    raise ValueError(f'--activity_buckets={",".join(_ACTIVITY_BUCKETS.value)}'
                     ' must be strictly increasing positive counts, e.g. '
                     '20,50,200.') from None


def _format(rows) -> str:
  header = ('slice', 'users', 'ratings', 'RMSE', 'MAE', 'rating acc.')
  table = [header] + [
      (f'{r["slice_kind"]}: {r["slice"]}' if r['slice_kind'] != 'all' else
       'all', str(r['users']), str(r['ratings'])) +
      tuple('-' if r['ratings'] == 0 else f'{r[m]:.4f}'
            for m in ('rmse', 'mae', 'rating_accuracy')) for r in rows]
  return text_table.format_rows(table)


# Columns of the printed ranking table (all are in the JSON and CSVs).
_RANKING_COLUMNS = ('full/hr@10', 'full/ndcg@10', 'sampled/hr@10',
                    'sampled/ndcg@10')


def _format_ranking(rows) -> str:
  columns = [c for c in _RANKING_COLUMNS if c in rows[0]]
  table = [('slice', 'users') + tuple(c.replace('/', ' ') for c in columns)]
  table += [(f'{r["slice_kind"]}: {r["slice"]}' if r['slice_kind'] != 'all'
             else 'all', str(r['users'])) +
            tuple('-' if r['users'] == 0 else f'{r[c]:.4f}' for c in columns)
            for r in rows]
  return text_table.format_rows(table)


def _ranking_rows(run, split_name: str, edges):
  """(overall, slice rows, per-user rows) of an implicit-feedback run."""
  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import trained
  # pylint: enable=g-import-not-at-top
  result = trained.evaluate_ranking(run, split_name)
  names = list(result.per_user)
  users = [collections.OrderedDict(
      [('user', int(u)), ('activity', int(result.activity[k]))] +
      [(n, float(result.per_user[n][k])) for n in names])
           for k, u in enumerate(result.users)]
  return result.overall, result.sliced(edges), users


def evaluate(experiment_dir: str, split_name: str, edges, output_dir: str,
             eval_recon_epochs: Optional[int] = None):
  """Evaluates and writes the outputs; returns the JSON-able result.

  `eval_recon_epochs` overrides the run's reconstruction epochs (FedRecon).
  """
  if not os.path.isdir(experiment_dir):
    raise ValueError(f'--experiment_dir={experiment_dir}: no such directory.')
  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import experiment
  from research.fedrec.training import runtime
  from research.fedrec.training import trained
  # pylint: enable=g-import-not-at-top
  secure = experiment.load_config(experiment_dir).aggregation.secure_aggregation
  with runtime.local_runtime(secure):
    run = trained.load_run(experiment_dir)
  recon = run.config.recon
  if eval_recon_epochs is not None:
    if not run.config.method.reconstructs_users:
      raise ValueError('--eval_recon_epochs applies to runs that reconstruct '
                       f'users (fedrecon); {experiment_dir} is a '
                       f'{run.config.algorithm} run.')
    recon = dataclasses.replace(recon, eval_recon_epochs=eval_recon_epochs)
  as_trained = recon.evaluation_epochs == run.config.recon.evaluation_epochs
  run = dataclasses.replace(
      run, config=dataclasses.replace(run.config, recon=recon))
  if run.config.data.implicit:
    overall, slice_rows, users = _ranking_rows(run, split_name, edges)
    slice_columns = tuple(slice_rows[0])
  else:
    result = trained.evaluate_run(run, split_name, edges)
    overall, slice_rows, users = result.overall, result.slices, result.users
    slice_columns = slices.SLICE_COLUMNS
  raw_users = run.data.id_maps.raw_users
  summary_path = os.path.join(experiment_dir, 'summary.json')
  reported = None
  if (split_name == 'test' and os.path.exists(summary_path) and
      run.round_num == run.config.loop.total_rounds and as_trained):
    with open(summary_path) as f:
      reported = json.load(f)['test_metrics'].get(run.config.algorithm)
  output = collections.OrderedDict(
      experiment=run.config.experiment_name,
      algorithm=run.config.algorithm,
      dataset=run.data.name,
      split=split_name,
      split_kind=run.config.split.kind.value,
      checkpoint_round=run.round_num,
      reconstruction_epochs=(recon.evaluation_epochs if
                             run.config.method.reconstructs_users else None),
      activity_edges=list(edges),
      feedback=run.config.data.feedback.value,
      metrics=overall,
      slices=slice_rows,
      train_reported_test_metrics=reported)
  # A user-disjoint split's users never trained: how else they could be
  # served (demographics alone, ...), when the corpus has a user file.
  comparison = trained.new_users(run, split_name)
  if comparison is not None:
    output['new_users'] = comparison
  os.makedirs(output_dir, exist_ok=True)
  json_io.write_json_atomically(
      os.path.join(output_dir, f'{split_name}.json'), output)
  user_rows = [collections.OrderedDict(r, user=raw_users[r['user']].item())
               for r in users]
  for name, rows, columns in (
      ('slices', slice_rows, slice_columns),
      ('users', user_rows, tuple(user_rows[0]) if user_rows else ())):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    json_io.write_text_atomically(
        os.path.join(output_dir, f'{split_name}_{name}.csv'), text.getvalue())
  return output


def main(argv):
  del argv  # cli.run refuses positional arguments.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  try:
    if not _EXPERIMENT_DIR.value:
      raise ValueError('--experiment_dir is required (a directory written by '
                       'train.py, e.g. runs/default).')
    output_dir = _OUTPUT_DIR.value or os.path.join(_EXPERIMENT_DIR.value,
                                                   'evaluation')
    output = evaluate(_EXPERIMENT_DIR.value, _SPLIT.value, _edges(),
                      output_dir, _EVAL_RECON_EPOCHS.value)
  except cli.user_errors() as e:  # A user mistake or an I/O failure.
    cli.fail('evaluate.py', e)
  print(f'{output["experiment"]}: {output["algorithm"]} on {output["dataset"]}'
        f', {output["split"]} users ({output["split_kind"]} split), '
        f'checkpoint of round {output["checkpoint_round"]}'
        + (f', users reconstructed for {output["reconstruction_epochs"]} '
           'epochs' if output['reconstruction_epochs'] else '') + ':')
  implicit = output['feedback'] == 'implicit'
  print((_format_ranking if implicit else _format)(output['slices']))
  if 'new_users' in output:
    new = output['new_users']
    if implicit:
      print(f'New users ({new["users"]} {output["split"]} users who never '
            f'trained, {new["interactions"]} held-out interactions), served '
            'from:')
      first = next(iter(new['metrics'].values()))
      names = [c for c in _RANKING_COLUMNS if c in first]
      print(text_table.format_rows(
          [('from', *(n.replace('/', ' ') for n in names))] + [
              (name, *(f'{values[n]:.4f}' for n in names))
              for name, values in new['metrics'].items()]))
      print(f'(every metric: {output["split"]}.json, new_users)')
    else:
      print(f'New users ({new["users"]} {output["split"]} users who never '
            f'trained, {new["ratings"]} query ratings), served from:')
      print(text_table.format_rows([('from', 'RMSE')] + [
          (name, f'{value:.4f}') for name, value in new['rmse'].items()]))
    print(f'(demographics: {", ".join(new["fields"])}, mapped to user vectors '
          f'by a ridge map, l2 {new["l2"]:g}, fitted over the '
          f'{new["map_users"]} training users; the mean user and the map from '
          f'{new["prior"]} user prior' + (
              f', noise std {new["prior_noise_std"]:.4g} under DP'
              if new['prior_noise_std'] else '') + ')')
  reported = output['train_reported_test_metrics']
  if reported and implicit:
    name = 'full/ndcg@10'
    if name in reported and name in output['metrics']:
      difference = abs(reported[name] - output['metrics'][name])
      print(f'train.py reported test {name} {reported[name]:.6f}; this '
            f'evaluation {output["metrics"][name]:.6f} (difference '
            f'{difference:.1e}).')
  elif reported:
    difference = abs(reported['rmse'] - output['metrics']['rmse'])
    print(f'train.py reported test RMSE {reported["rmse"]:.6f}; this '
          f'evaluation {output["metrics"]["rmse"]:.6f} (difference '
          f'{difference:.1e}).')
  print(f'Outputs: {output_dir}')


if __name__ == '__main__':
  cli.run(main, 'evaluate.py')
