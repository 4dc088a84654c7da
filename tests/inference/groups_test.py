"""Group scores computed by hand for each strategy."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from research.fedrec.inference import groups

# Predicted ratings of 3 members for 4 items.
PREDICTIONS = np.array([[3, 3, 4, 3],
                        [1, 4, 4, 5],
                        [4, 2, 2, 4]], np.float32)


class GroupsTest(parameterized.TestCase):

  # By hand: average 8/3, 3, 10/3, 4; least misery (minimum) 1, 2, 2, 3; most
  # pleasure (maximum) 4, 4, 4, 5; borda points (candidates ranked below, ties
  # share the mean): member 0: 1, 1, 3, 1; member 1: 0, 1.5, 1.5, 3;
  # member 2: 2.5, .5, .5, 2.5; summed 3.5, 3, 5, 6.5.
  @parameterized.parameters(
      ('average', [8 / 3, 3, 10 / 3, 4]),
      ('least_misery', [1, 2, 2, 3]),
      ('most_pleasure', [4, 4, 4, 5]),
      ('borda', [3.5, 3, 5, 6.5]),
  )
  def test_strategies_by_hand(self, strategy, expected):
    got = groups.group_scores(PREDICTIONS, np.ones(4, bool), strategy)
    np.testing.assert_allclose(got, expected, rtol=1e-6)

  def test_borda_counts_only_candidates(self):
    # Item 3 is no candidate: member 0 ranks 3, 3, 4 -> .5, .5, 2; member 1
    # 1, 4, 4 -> 0, 1.5, 1.5; member 2 4, 2, 2 -> 2, .5, .5.
    got = groups.group_scores(PREDICTIONS, np.array([1, 1, 1, 0], bool),
                              'borda')
    np.testing.assert_allclose(got, [2.5, 2.5, 4, 0])

  def test_unknown_strategy(self):
    with self.assertRaisesRegex(ValueError, 'not one of'):
      groups.group_scores(PREDICTIONS, np.ones(4, bool), 'median')

  def test_strategies_are_the_documented_ones(self):
    self.assertEqual(groups.GROUP_STRATEGIES,
                     ('average', 'least_misery', 'most_pleasure', 'borda'))


if __name__ == '__main__':
  absltest.main()
