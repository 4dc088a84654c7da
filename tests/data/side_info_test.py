"""Tests of the side-information readers on self-written fixtures.

Each fixture is a few lines in the real file format (u.item, u.user,
movies.dat, users.dat, movies.csv, genome-scores.csv, RecBole .item/.user);
MovieLens itself is never committed (its licence forbids redistribution).
"""

import math
import os

from absl.testing import absltest
import numpy as np

from research.fedrec.data import corpus
from research.fedrec.data import ratings
from research.fedrec.data import side_info
from research.fedrec.data import synthetic

_FLAGS = {1: '0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0',  # Animation Children's Comedy
          2: '0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0',  # Action Adventure Thriller
          267: '1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0'}  # unknown
_U_ITEM = (
    f'1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?'
    f'Toy%20Story%20(1995)|{_FLAGS[1]}\n'
    f'2|GoldenEye (1995)|01-Jan-1995||http://x|{_FLAGS[2]}\n'
    f'267|unknown||||{_FLAGS[267]}\n'
    f'1682|Scream of Stone (Schrei aus Stein) (1991)|08-Mar-1996||'
    f'http://x|{"|".join(["0"] * 8)}|1|{"|".join(["0"] * 10)}\n')
_U_USER = '1|24|M|technician|85711\n2|53|F|other|94043\n'
_MOVIES_DAT = ('1::Toy Story (1995)::Animation|Children\'s|Comedy\n'
               '3196::Stalag 17 (1953)::Drama|War\n')
_USERS_DAT = '1::F::1::10::48067\n2::M::56::16::70072\n'
_MOVIES_CSV = ('movieId,title,genres\n1,Toy Story (1995),Adventure|Comedy\n'
               '11,"American President, The (1995)",Comedy|Drama|Romance\n'
               '131262,Innocence (2014),(no genres listed)\n')
_GENOME = ('movieId,tagId,relevance\n1,1,0.025\n1,2,0.975\n'
           '11,2,0.5\n11,1,0.125\n')


class ReaderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def _write(self, relative_path, text, encoding='latin-1'):
    path = os.path.join(self.root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(text.encode(encoding))
    return path

  def _error(self, function, *args):
    with self.assertRaises(ratings.DataError) as raised:
      function(*args)
    return str(raised.exception)

  def test_ml_100k_u_item(self):
    self._write('ml-100k/u.item', _U_ITEM)
    info = side_info.read_movielens_items('ml-100k', self.root)
    self.assertEqual(info.ids.tolist(), [1, 2, 267, 1682])
    self.assertEqual(info.titles[0], 'Toy Story (1995)')
    # The release date's year; item 267 has neither date nor title year.
    np.testing.assert_array_equal(info.years, [1995, 1995, np.nan, 1996])
    self.assertEqual(info.genre_names, side_info.ML100K_GENRES)
    self.assertEqual(info.genres.shape, (4, 19))
    genres = [[info.genre_names[k] for k in np.flatnonzero(row)]
              for row in info.genres]
    self.assertEqual(genres, [['Animation', "Children's", 'Comedy'],
                              ['Action', 'Adventure', 'Thriller'],
                              ['unknown'], ['Drama']])

  def test_u_item_errors_name_file_and_line(self):
    path = self._write('u.item', _U_ITEM.replace('0|1|1|0', '0|2|1|0'))
    self.assertEqual(
        self._error(side_info.read_ml100k_items, path),
        f'{path}:2: genre flag Action is \'2\', expected 0 or 1.')
    path = self._write('u.item', _U_ITEM.replace('(1991)|08-Mar-1996||', '(1991)|08-Mar-1996|'))
    self.assertStartsWith(self._error(side_info.read_ml100k_items, path),
                          f'{path}:4: expected 24 fields (movie id, title, ')
    path = self._write('u.item', _U_ITEM.replace('08-Mar-1996', '1996-03-08'))
    self.assertEqual(self._error(side_info.read_ml100k_items, path),
                     f"{path}:4: release date '1996-03-08' is not "
                     'dd-Mon-yyyy (e.g. 01-Jan-1995).')
    path = self._write('u.item', _U_ITEM + _U_ITEM.split('\n')[1] + '\n')
    self.assertEqual(self._error(side_info.read_ml100k_items, path),
                     f'{path}:5: id 2 is described twice (also on line 2).')

  def test_missing_item_file_names_what_was_expected(self):
    self.assertEqual(
        self._error(side_info.read_movielens_items, 'ml-1m', self.root),
        f'--data_dir={self.root}: no movies.dat (the ml-1m item file that '
        'side information is read from).')

  def test_ml_100k_u_user(self):
    self._write('ml-100k/u.user', _U_USER)
    info = side_info.read_movielens_users('ml-100k', self.root)
    self.assertEqual(info.ids.tolist(), [1, 2])
    self.assertEqual({k: v.tolist() for k, v in info.fields.items()},
                     {'age': ['24', '53'], 'gender': ['M', 'F'],
                      'occupation': ['technician', 'other'],
                      'zip': ['85711', '94043']})
    path = self._write('u.user', _U_USER.replace('|F|', '|W|'))
    self.assertEqual(self._error(side_info.read_ml100k_users, path),
                     f"{path}:2: gender 'W', expected M or F.")

  def test_ml_1m_movies_and_users(self):
    self._write('ml-1m/movies.dat', _MOVIES_DAT)
    self._write('ml-1m/users.dat', _USERS_DAT)
    items = side_info.read_movielens_items('ml-1m', self.root)
    self.assertEqual(items.ids.tolist(), [1, 3196])
    np.testing.assert_array_equal(items.years, [1995, 1953])
    self.assertEqual(items.genre_names, ('Animation', "Children's", 'Comedy',
                                         'Drama', 'War'))
    np.testing.assert_array_equal(items.genres, [[1, 1, 1, 0, 0],
                                                 [0, 0, 0, 1, 1]])
    users = side_info.read_movielens_users('ml-1m', self.root)
    self.assertEqual({k: v.tolist() for k, v in users.fields.items()},
                     {'age': ['Under 18', '56+'], 'gender': ['F', 'M'],
                      'occupation': ['K-12 student', 'self-employed'],
                      'zip': ['48067', '70072']})
    path = self._write('users.dat', _USERS_DAT.replace('::56::', '::57::'))
    self.assertEqual(self._error(side_info.read_ml1m_users, path),
                     f"{path}:2: age code '57', expected one of 1, 18, 25, "
                     '35, 45, 50, 56.')
    self.assertEqual(
        self._error(side_info.read_movielens_users, 'ml-20m', self.root),
        'ml-20m ships no user demographics (only ml-100k and ml-1m do).')
    self.assertIsNone(side_info.movielens_user_file('ml-20m', self.root))
    self.assertIsNone(side_info.movielens_user_file('ml-100k', self.root))
    self._write('ml-100k/u.user', _U_USER)
    self.assertEqual(side_info.movielens_user_file('ml-100k', self.root),
                     os.path.join(self.root, 'ml-100k', 'u.user'))

  def test_ml_20m_movies_csv_and_genome(self):
    self._write('ml-20m/movies.csv', _MOVIES_CSV, 'utf-8')
    self._write('ml-20m/genome-scores.csv', _GENOME, 'utf-8')
    items = side_info.read_movielens_items('ml-20m', self.root)
    self.assertEqual(items.titles.tolist(), [
        'Toy Story (1995)', 'American President, The (1995)',
        'Innocence (2014)'])
    self.assertEqual(items.genre_names,
                     ('Adventure', 'Comedy', 'Drama', 'Romance'))
    np.testing.assert_array_equal(items.genres, [[1, 1, 0, 0], [0, 1, 1, 1],
                                                 [0, 0, 0, 0]])
    movies, scores = side_info.read_movielens_genome('ml-20m', self.root)
    self.assertEqual(movies.tolist(), [1, 11])
    np.testing.assert_array_equal(
        scores, np.float32([[0.025, 0.975], [0.125, 0.5]]))
    path = self._write('genome.csv', _GENOME.replace('11,1,0.125\n', ''),
                       'utf-8')
    self.assertEqual(self._error(side_info.read_genome, path),
                     f'{path}: movie 11 is scored on 1 tags, the others on 2 '
                     '(every movie needs every tag once).')
    path = self._write('genome.csv', _GENOME.replace('0.5', '1.5'), 'utf-8')
    self.assertEqual(self._error(side_info.read_genome, path),
                     f'{path}:4: relevance 1.5 is outside [0, 1].')
    path = self._write('genome.csv', _GENOME.replace('0.5', 'high'), 'utf-8')
    self.assertEqual(self._error(side_info.read_genome, path),
                     f"{path}:4: expected movieId,tagId,relevance (two "
                     "integers and a number), found '11,2,high'.")
    self.assertStartsWith(
        self._error(side_info.read_movielens_genome, 'ml-1m', self.root),
        f'--data_dir={self.root}: no genome-scores.csv')

  def test_ml_20m_tag_genome_as_item_features(self):
    self._write('ml-20m/ratings.csv', 'userId,movieId,rating,timestamp\n'
                '1,1,4.0,10\n1,11,3.5,11\n2,131262,5.0,12\n', 'utf-8')
    self._write('ml-20m/movies.csv', _MOVIES_CSV, 'utf-8')
    self._write('ml-20m/genome-scores.csv', _GENOME, 'utf-8')
    config = corpus.DataConfig(dataset='ml-20m', data_dir=self.root)
    data = corpus.load_corpus(config)
    self.assertIsNone(data.item_info(config).genome)
    info = data.item_info(config, genome=True)
    # Two scored movies: one component (the second is zero), at +-1 (the
    # first's standard deviation), the larger entry positive; the third
    # movie is unscored.
    order = data.id_maps.raw_items.tolist()
    self.assertEqual(order, [1, 11, 131262])
    self.assertEqual(info.genome.shape, (3, 2))
    np.testing.assert_allclose(np.abs(info.genome[:2, 0]), [1.0, 1.0],
                               rtol=1e-6)
    self.assertEqual(info.genome[0, 0], -info.genome[1, 0])
    np.testing.assert_allclose(info.genome[:2, 1], [0.0, 0.0], atol=1e-6)
    self.assertTrue(np.isnan(info.genome[2]).all())
    features, labels = side_info.item_features(info, ('year', 'genome'))
    self.assertEqual(labels, ['year', 'genome:pc1', 'genome:pc2',
                              'genome:unscored'])
    np.testing.assert_array_equal(features[:, 1:], np.float32(
        [[*info.genome[0], 0], [*info.genome[1], 0], [0, 0, 1]]))
    encoder = side_info.FeatureEncoder.fit(info, ('genres', 'genome'))
    self.assertEqual(encoder.genome_components, 2)
    # An item described later (recommend.py --new_item) is unscored.
    np.testing.assert_array_equal(
        encoder.encode_one(['Comedy'], 2001.0), [0, 1, 0, 0, 0, 0, 1])
    with self.assertRaisesRegex(ValueError, 'item feature genome: .* comes '
                                'with no tag genome'):
      side_info.FeatureEncoder.fit(data.item_info(config), ('genome',))
    path = self._write('ml-20m/genome-scores.csv',
                       'movieId,tagId,relevance\n5,1,0.5\n', 'utf-8')
    self.assertEqual(self._error(data.item_info, config, True),
                     f'{self.root}: genome-scores.csv: scores none of the '
                     'corpus\'s items.')
    os.remove(path)
    self.assertStartsWith(self._error(data.item_info, config, True),
                          f'--data_dir={self.root}: no genome-scores.csv')

  def test_genome_components_equal_an_eigendecomposition(self):
    scores = np.random.default_rng(0).uniform(size=(7, 5)).astype(np.float32)
    components = side_info.genome_components(scores, 3)
    centred = scores - scores.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # Ascending order.
    expected = centred @ vectors[:, ::-1][:, :3]
    largest = np.argmax(np.abs(expected), axis=0)
    expected *= np.sign(expected[largest, np.arange(3)])
    expected /= expected[:, 0].std()
    np.testing.assert_allclose(components, expected, atol=1e-5)
    self.assertEqual(side_info.genome_components(scores, 9).shape, (7, 5))

  def test_title_year(self):
    self.assertEqual(side_info.title_year('Heat (1995)'), 1995)
    self.assertEqual(side_info.title_year('Band of Brothers (2001-)'), 2001)
    self.assertTrue(math.isnan(side_info.title_year('unknown')))


class AtomicAndCorpusTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.folder = os.path.join(self.create_tempdir().full_path, 'ml-tiny')
    os.makedirs(self.folder)
    files = {
        'inter': 'user_id:token\titem_id:token\trating:float\n'
                 '196\t242\t3\n196\t302\t4\n22\t377\t1\n22\t242\t5\n',
        'item': 'item_id:token\tmovie_title:token_seq\trelease_year:token\t'
                'class:token_seq\n242\tKolya\t1996\tComedy\n'
                '302\tL.A. Confidential\t\tCrime Film-Noir\n',
        'user': 'user_id:token\tage:token\tgender:token\toccupation:token\n'
                '196\t49\tM\twriter\n22\t25\tM\twriter\n'}
    for suffix, text in files.items():
      with open(os.path.join(self.folder, f'ml-tiny.{suffix}'), 'w') as f:
        f.write(text)
    self.config = corpus.DataConfig(dataset=corpus.ATOMIC,
                                    data_dir=self.folder)

  def test_atomic_item_and_user_files_aligned_to_dense_ids(self):
    data = corpus.load_corpus(self.config)
    self.assertEqual(data.id_maps.raw_items.tolist(), [242, 302, 377])
    items = data.item_info(self.config)
    self.assertEqual(items.titles.tolist(), ['Kolya', 'L.A. Confidential',
                                             ''])
    np.testing.assert_array_equal(items.years, [1996, np.nan, np.nan])
    self.assertEqual(items.genre_names, ('Comedy', 'Crime', 'Film-Noir'))
    np.testing.assert_array_equal(items.genres,
                                  [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    self.assertTrue(data.has_user_info(self.config))
    users = data.user_info(self.config)
    self.assertEqual(data.id_maps.raw_users.tolist(), [22, 196])
    self.assertEqual({k: v.tolist() for k, v in users.fields.items()},
                     {'age': ['25', '49'], 'gender': ['M', 'M'],
                      'occupation': ['writer', 'writer']})

  def test_bad_year_names_the_line(self):
    path = os.path.join(self.folder, 'ml-tiny.item')
    with open(path, 'a') as f:
      f.write('377\tHeavyweights\t94\tComedy\n'
              '378\tMiracle on 34th Street\tunkonwn\tDrama\n')
    with self.assertRaises(ratings.DataError) as raised:
      side_info.read_atomic_items(path)
    self.assertEqual(str(raised.exception),
                     f"{path}:4: field release_year is not a year: '94'.")
    with open(path, 'w') as f:  # RecBole's own spelling of a missing year.
      f.write('item_id:token\trelease_year:token\n378\tunkonwn\n')
    self.assertTrue(np.isnan(side_info.read_atomic_items(path).years[0]))

  def test_a_csv_corpus_has_no_item_information(self):
    path = os.path.join(self.folder, 'mine.csv')
    with open(path, 'w') as f:
      f.write('a,x,4\nb,y,3\n')
    config = corpus.DataConfig(dataset=corpus.CSV, data_dir=path)
    with self.assertRaises(ratings.DataError) as raised:
      corpus.load_corpus(config).item_info(config)
    self.assertStartsWith(str(raised.exception),
                          '--dataset=csv: a ratings CSV carries no item side')

  def test_synthetic_genres_are_the_planted_factors_large_coordinates(self):
    config = corpus.DataConfig(synthetic_config=synthetic.SyntheticConfig(
        num_users=30, num_items=40, num_ratings=600, min_ratings_per_user=5,
        rank=3))
    data = corpus.load_corpus(config)
    with self.assertRaisesRegex(ratings.DataError, '^--item_features=genome: '
                                'synthetic corpus comes with no tag genome'):
      data.item_info(config, genome=True)
    items = data.item_info(config)
    factors = data.truth.item_factors[data.id_maps.raw_items - 1]
    np.testing.assert_array_equal(items.genres, factors > 0.2)
    self.assertEqual(items.genre_names, ('genre_0', 'genre_1', 'genre_2'))
    self.assertTrue(np.all((items.years >= 1950) & (items.years < 2000)))

  def test_item_features_closed_form(self):
    info = side_info.ItemInfo(
        np.array([1, 2, 3]), np.array(['a', 'b', 'c']),
        np.array([1990.0, np.nan, 2000.0]), ('x', 'y'),
        np.array([[1, 0], [0, 1], [1, 1]], np.float32), 'test')
    features, labels = side_info.item_features(info, ('genres', 'year'))
    self.assertEqual(labels, ['genre:x', 'genre:y', 'year'])
    # Known years 1990 and 2000: mean 1995, standard deviation 5.
    np.testing.assert_allclose(features, [[1, 0, -1], [0, 1, 0], [1, 1, 1]])
    with self.assertRaisesRegex(ValueError, "item feature 'plot' is not"):
      side_info.item_features(info, ('plot',))


if __name__ == '__main__':
  absltest.main()
