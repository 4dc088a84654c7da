"""Tests of the synthetic corpus: determinism, shape, and the noise floor."""

from absl.testing import absltest
import numpy as np
from scipy import special

from research.fedrec.data import ratings
from research.fedrec.data import synthetic

_SMALL = synthetic.SyntheticConfig(num_users=40, num_items=60,
                                   num_ratings=1500, min_ratings_per_user=20)


class SyntheticTest(absltest.TestCase):

  def test_same_seed_same_corpus_other_seed_other_corpus(self):
    a = synthetic.generate(_SMALL).ratings
    b = synthetic.generate(_SMALL).ratings
    self.assertEqual(a.content_hash(), b.content_hash())
    c = synthetic.generate(synthetic.SyntheticConfig(
        num_users=40, num_items=60, num_ratings=1500, min_ratings_per_user=20,
        seed=1)).ratings
    self.assertNotEqual(a.content_hash(), c.content_hash())

  def test_sizes_scale_and_uniqueness(self):
    table = synthetic.generate(_SMALL).ratings
    self.assertLen(table, 1500)
    counts = np.bincount(table.users)[1:]
    self.assertLen(counts, 40)
    self.assertGreaterEqual(counts.min(), 20)
    self.assertTrue(np.all(ratings.STARS_1_TO_5.contains(table.ratings)))
    # validate() returns the very table when there are no duplicates.
    self.assertIs(ratings.validate(table, ratings.STARS_1_TO_5, 'x'), table)

  def test_timestamps_increase_through_each_user_history(self):
    table = synthetic.generate(_SMALL).ratings
    for user in (1, 17, 40):
      stamps = np.sort(table.timestamps[table.users == user])
      self.assertTrue(np.all(np.diff(stamps) > 0))

  def test_expected_rating_is_the_closed_form_mean(self):
    corpus = synthetic.generate(_SMALL)
    users, items = np.array([1, 2, 3]), np.array([4, 5, 6])
    mean = corpus.latent_means(users, items)
    s = corpus.config.noise_stddev
    # E[clip(round(mean + eps), 1, 5)] written out with the normal CDF.
    p_le = lambda x: special.ndtr((x - mean) / s)
    expected = (1 * p_le(1.5) + 2 * (p_le(2.5) - p_le(1.5)) +
                3 * (p_le(3.5) - p_le(2.5)) + 4 * (p_le(4.5) - p_le(3.5)) +
                5 * (1 - p_le(4.5)))
    np.testing.assert_allclose(corpus.expected_ratings(users, items),
                               expected, rtol=1e-12)

  def test_noise_floor_matches_the_noise_level(self):
    corpus = synthetic.generate(synthetic.SyntheticConfig(seed=3))
    floor = corpus.noise_floor_rmse(corpus.ratings)
    # Rounding adds variance 1/12 to the Gaussian's; clipping removes some.
    # The floor lies between the clipped and unclipped bounds.
    s = corpus.config.noise_stddev
    self.assertLess(floor, np.sqrt(s**2 + 1 / 12))
    self.assertGreater(floor, 0.8 * s)

  def test_impossible_configs_are_rejected(self):
    with self.assertRaisesRegex(ValueError, 'below users x minimum'):
      synthetic.SyntheticConfig(num_users=10, num_ratings=50,
                                min_ratings_per_user=20)
    with self.assertRaisesRegex(ValueError, 'only 5 items'):
      synthetic.SyntheticConfig(num_items=5, min_ratings_per_user=20)


if __name__ == '__main__':
  absltest.main()
