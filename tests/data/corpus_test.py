"""Tests of corpus loading: synthetic truth, filters, flag errors."""

import os

from absl.testing import absltest
import numpy as np

from research.fedrec.data import corpus
from research.fedrec.data import ratings
from research.fedrec.data import synthetic


class CorpusTest(absltest.TestCase):

  def test_synthetic_noise_floor_uses_raw_ids(self):
    config = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
        num_users=30, num_items=50, num_ratings=900, min_ratings_per_user=20))
    data = corpus.load_corpus(config)
    self.assertEqual((data.num_users, data.num_items, len(data.ratings)),
                     (30, np.unique(data.truth.ratings.items).size, 900))
    self.assertAlmostEqual(data.noise_floor_rmse(data.ratings),
                           data.truth.noise_floor_rmse(data.truth.ratings),
                           places=12)

  def test_csv_with_filter_and_max_users(self):
    path = os.path.join(self.create_tempdir().full_path, 'r.csv')
    with open(path, 'w') as f:
      f.write('u1,a,5\nu1,b,4\nu2,a,1\nu3,a,2\nu3,c,3\n')
    data = corpus.load_corpus(corpus.DataConfig(
        dataset='csv', data_dir=path, min_ratings_per_user=2))
    np.testing.assert_array_equal(data.id_maps.raw_users, ['u1', 'u3'])
    self.assertIsNone(data.noise_floor_rmse(data.ratings))
    with self.assertRaisesRegex(ratings.DataError,
                                'min_ratings_per_user=9: no user'):
      corpus.load_corpus(corpus.DataConfig(dataset='csv', data_dir=path,
                                           min_ratings_per_user=9))

  def test_flag_errors(self):
    with self.assertRaisesRegex(ValueError, '--dataset=ml-1m needs --data_dir'):
      corpus.DataConfig(dataset='ml-1m')
    with self.assertRaisesRegex(ValueError, 'not one of'):
      corpus.DataConfig(dataset='netflix', data_dir='x')
    with self.assertRaisesRegex(ratings.DataError,
                                '^--data_dir=/nonexistent: no such directory'):
      corpus.load_corpus(corpus.DataConfig(dataset='ml-1m',
                                           data_dir='/nonexistent'))


class TitlesAndScaleTest(absltest.TestCase):

  def test_synthetic_titles_are_generated_and_seeded(self):
    config = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
        num_users=20, num_items=15, num_ratings=300, min_ratings_per_user=5))
    data = corpus.load_corpus(config)
    titles = data.titles(config)
    self.assertLen(titles, data.num_items)
    self.assertTrue(all(titles))
    raw = data.id_maps.raw_items[0]
    self.assertIn(f'#{raw} (', titles[0])
    self.assertEqual(titles, corpus.load_corpus(config).titles(config))
    self.assertEqual(data.rating_scale(config), ratings.STARS_1_TO_5)

  def test_csv_has_no_titles_and_its_own_scale(self):
    path = os.path.join(self.create_tempdir().full_path, 'r.csv')
    with open(path, 'w') as f:
      f.write('a,x,4.5\nb,y,1\na,y,2\n')
    config = corpus.DataConfig(dataset='csv', data_dir=path,
                               rating_scale=(0.5, 5.0, 0.5))
    data = corpus.load_corpus(config)
    self.assertEqual(data.titles(config), ['', ''])
    self.assertEqual(data.rating_scale(config),
                     ratings.RatingScale(0.5, 5.0, 0.5))


if __name__ == '__main__':
  absltest.main()
