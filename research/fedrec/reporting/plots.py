"""Learning-curve plots (PNG) drawn from a run's metrics.csv."""

import csv
import logging
import os
import tempfile
import textwrap


def _pyplot():
  """Imports pyplot on first use (not on a run's error paths), headless."""
  # Font-cache notices are not the user's business.
  logging.getLogger('matplotlib').setLevel(logging.WARNING)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def read_metrics_csv(path: str, x_column: str = 'round'
                     ) -> dict[str, list[tuple[int, float]]]:
  """Columns of metrics.csv as (round, value) series, skipping blanks.

  (Of another CSV: series over its `x_column` instead of the round.)
  """
  series = {}
  with open(path, newline='') as f:
    for row in csv.DictReader(f):
      round_num = int(row[x_column])
      for name, value in row.items():
        if name == x_column or value in ('', None):
          continue
        series.setdefault(name, []).append((round_num, float(value)))
  return series


RMSE_CURVES = (('train/rmse', 'train RMSE (sampled clients)'),
               ('val/rmse', 'validation RMSE'))
NDCG_CURVES = (('val/full/ndcg@10', 'validation NDCG@10 (full ranking)'),
               ('val/sampled/ndcg@10', 'validation NDCG@10 (sampled)'))


def plot_learning_curves(metrics_csv: str, output_png: str,
                         reference_lines: dict[str, float],
                         curves=RMSE_CURVES, ylabel: str = 'RMSE') -> None:
  """A metric per round (e.g. train and validation RMSE) with reference lines.

  Args:
    metrics_csv: A metrics.csv written by the training loop.
    output_png: Where to write the figure (written atomically).
    reference_lines: Horizontal lines to draw, label -> value.
    curves: (metrics.csv column, label) pairs to draw where present.
    ylabel: The y axis label.
  """
  series = read_metrics_csv(metrics_csv)
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for name, label in curves:
    if name in series:
      rounds, values = zip(*series[name])
      axes.plot(rounds, values, marker='o' if len(rounds) < 30 else None,
                label=label)
  for (label, value), style in zip(reference_lines.items(), ('--', ':', '-.')):
    axes.axhline(value, linestyle=style, color='gray', label=f'{label} '
                 f'({value:.4f})')
  axes.set_xlabel('round')
  axes.set_ylabel(ylabel)
  axes.grid(alpha=0.3)
  axes.legend()
  _save(plt, figure, output_png)


def plot_round_profile(rounds, seconds, rss_mb, title: str,
                       output_png: str) -> None:
  """Seconds per round and resident memory per round of one long run."""
  plt = _pyplot()
  figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
  top.plot(rounds, seconds)
  top.set_ylabel('seconds per round')
  top.set_ylim(bottom=0)
  top.set_title(title)
  bottom.plot(rounds, rss_mb)
  bottom.set_ylabel('RSS, process + workers (MB)')
  bottom.set_ylim(bottom=0)
  bottom.set_xlabel('round')
  for axes in (top, bottom):
    axes.grid(alpha=0.3)
  _save(plt, figure, output_png)


def plot_seed_curves(curves, reference_lines: dict[str, float], ylabel: str,
                     title: str, output_png: str) -> None:
  """Learning curves of several table rows, mean over seeds with a band.

  Args:
    curves: label -> list of per-seed series, each a list of (round, value).
      The mean is drawn over the rounds every seed has; the band spans the
      seeds' minimum to maximum.
    reference_lines: Horizontal lines, label -> value (rows without curves).
    ylabel: The y axis label.
    title: The figure's title.
    output_png: Where to write the figure (atomically).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7.5, 4.5))
  for label, seeds in curves.items():
    common = sorted(set.intersection(*(set(r for r, _ in s) for s in seeds)))
    if not common:
      continue
    values = np.array([[dict(s)[r] for r in common] for s in seeds])
    count = f'{len(seeds)} seed{"s" if len(seeds) != 1 else ""}'
    line, = axes.plot(common, values.mean(axis=0),
                      marker='o' if len(common) < 30 else None,
                      label=f'{label} ({count})')
    if len(seeds) > 1:
      axes.fill_between(common, values.min(axis=0), values.max(axis=0),
                        color=line.get_color(), alpha=0.2)
  for (label, value), style in zip(reference_lines.items(),
                                   ('--', ':', '-.', (0, (1, 3)))):
    axes.axhline(value, linestyle=style, color='gray',
                 label=f'{label} ({value:.4f})')
  axes.set_xlabel('round')
  axes.set_ylabel(ylabel)
  # Wrapped: a table's long title would run off the figure.
  axes.set_title(textwrap.fill(title, 90), fontsize=10)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  _save(plt, figure, output_png)


def plot_privacy_utility(panels, title: str, output_png: str) -> None:
  """Utility against epsilon, one curve per algorithm and a panel per metric.

  Args:
    panels: list of (ylabel, curves, reference_lines): curves maps a label to
      (epsilons, means, ci_half_widths); reference_lines maps a label (say
      "no DP") to a value drawn as a horizontal line.
    title: The figure's title.
    output_png: Where to write the figure (atomically).
  """
  plt = _pyplot()
  figure, all_axes = plt.subplots(1, len(panels), squeeze=False,
                                  figsize=(5.5 * len(panels), 4.2))
  for axes, (ylabel, curves, reference_lines) in zip(all_axes[0], panels):
    for label, (epsilons, means, half_widths) in curves.items():
      axes.errorbar(epsilons, means, yerr=half_widths, marker='o', capsize=3,
                    label=label)
    for label, value in reference_lines.items():
      axes.axhline(value, linestyle='--', color='gray',
                   label=f'{label} ({value:.4f})')
    axes.set_xscale('log', base=2)
    axes.set_xlabel('epsilon (user-level)')
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
  figure.suptitle(title, fontsize=10)
  _save(plt, figure, output_png)


def plot_grouped_bars(groups: list[str], bars: dict[str, list[float]],
                      ylabel: str, title: str, output_png: str) -> None:
  """One group of bars per entry of `groups` (e.g. a silo), one bar per
  label of `bars` (its value in each group; NaN: no bar)."""
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) + 2), 4.2))
  width = 0.8 / max(1, len(bars))
  for k, (label, values) in enumerate(bars.items()):
    positions = [g + (k - (len(bars) - 1) / 2) * width
                 for g in range(len(groups))]
    axes.bar(positions, values, width, label=label)
  finite = [v for values in bars.values() for v in values if v == v]
  if finite:  # Differences matter more than the distance from 0.
    low, high = min(finite), max(finite)
    margin = 0.15 * (high - low) + 1e-3
    axes.set_ylim(max(0.0, low - 2 * margin), high + margin)
  axes.set_xticks(range(len(groups)))
  axes.set_xticklabels(groups)
  axes.set_ylabel(ylabel)
  axes.grid(alpha=0.3, axis='y')
  axes.legend(fontsize=8)
  figure.suptitle(title, fontsize=10)
  _save(plt, figure, output_png)


def _save(plt, figure, output_png: str) -> None:
  """Writes the figure atomically and closes it."""
  figure.tight_layout()
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(output_png), suffix='.png')
  os.close(fd)
  try:
    figure.savefig(tmp, dpi=100)
    os.chmod(tmp, 0o644)
    os.replace(tmp, output_png)
  finally:
    plt.close(figure)
    if os.path.exists(tmp):
      os.remove(tmp)


def plot_column_family(metrics_csv: str, output_png: str, suffix: str,
                       ylabel: str, title: str,
                       x_column: str = 'round') -> None:
  """Every `<name>/<suffix>` column of a CSV on one plot, by name.

  E.g. each bandit policy's cumulative regret (bandit.py), over the CSV's
  `x_column`.
  """
  series = read_metrics_csv(metrics_csv, x_column)
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for column in sorted(series):
    name, _, rest = column.rpartition('/')
    if rest == suffix:
      rounds, values = zip(*series[column])
      axes.plot(rounds, values, label=name)
  axes.set_xlabel(x_column)
  axes.set_ylabel(ylabel)
  axes.set_title(textwrap.shorten(title, 90), fontsize=10)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  _save(plt, figure, output_png)
