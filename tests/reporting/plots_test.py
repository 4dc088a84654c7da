"""Tests of the learning-curve plot."""

import os

from absl.testing import absltest

from research.fedrec.reporting import plots


class PlotsTest(absltest.TestCase):

  def test_reads_sparse_columns_and_writes_a_png(self):
    folder = self.create_tempdir().full_path
    csv_path = os.path.join(folder, 'metrics.csv')
    with open(csv_path, 'w') as f:
      f.write('round,train/rmse,val/rmse\n1,1.5,\n2,1.25,1.3\n3,1.0,\n')
    series = plots.read_metrics_csv(csv_path)
    self.assertEqual(series['train/rmse'], [(1, 1.5), (2, 1.25), (3, 1.0)])
    self.assertEqual(series['val/rmse'], [(2, 1.3)])
    png = os.path.join(folder, 'curves.png')
    plots.plot_learning_curves(csv_path, png, {'centralized test RMSE': 1.1})
    with open(png, 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    self.assertEqual(sorted(os.listdir(folder)), ['curves.png', 'metrics.csv'])


if __name__ == '__main__':
  absltest.main()
