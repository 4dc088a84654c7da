"""Tests of plain-text tables."""

from absl.testing import absltest

from research.fedrec.utils import text_table


class TextTableTest(absltest.TestCase):

  def test_columns_align_and_trailing_space_is_trimmed(self):
    self.assertEqual(
        text_table.format_rows([('model', 'RMSE', ''), ('fedrecon', '1.0', '')]),
        'model     RMSE\nfedrecon  1.0')


if __name__ == '__main__':
  absltest.main()
