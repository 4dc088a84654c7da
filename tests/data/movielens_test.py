"""Tests of the MovieLens and CSV readers on self-written fixtures.

Each fixture is a few lines in the real file format (MovieLens itself is never
committed: its licence forbids redistribution).
"""

import os

from absl.testing import absltest
import numpy as np

from research.fedrec.data import movielens
from research.fedrec.data import ratings

_U_DATA = '196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n'
_RATINGS_DAT = '1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n'
_RATINGS_DAT_10M = '1::122::5::838985046\n1::185::4.5::838983525\n'
_RATINGS_CSV = ('userId,movieId,rating,timestamp\n1,1,4.0,964982703\n'
                '1,3,4.5,964981247\n2,6,0.5,964982224\n')


class ReaderTest(absltest.TestCase):

  def _write(self, relative_path, text):
    path = os.path.join(self.root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)
    return path

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_ml_100k_u_data(self):
    self._write('ml-100k/u.data', _U_DATA)
    table = movielens.read_movielens('ml-100k', self.root)
    np.testing.assert_array_equal(table.users, [196, 186, 22])
    np.testing.assert_array_equal(table.items, [242, 302, 377])
    np.testing.assert_array_equal(table.ratings, [3, 3, 1])
    np.testing.assert_array_equal(table.timestamps,
                                  [881250949, 891717742, 878887116])

  def test_ml_1m_ratings_dat_in_the_corpus_folder_itself(self):
    self._write('ml-1m/ratings.dat', _RATINGS_DAT)
    table = movielens.read_movielens('ml-1m', os.path.join(self.root, 'ml-1m'))
    np.testing.assert_array_equal(table.users, [1, 1, 2])
    np.testing.assert_array_equal(table.items, [1193, 661, 1357])
    np.testing.assert_array_equal(table.ratings, [5, 3, 5])

  def test_ml_10m_half_stars(self):
    self._write('ml-10M100K/ratings.dat', _RATINGS_DAT_10M)
    table = movielens.read_movielens('ml-10m', self.root)
    np.testing.assert_array_equal(table.ratings, [5.0, 4.5])

  def test_ml_20m_family_csv(self):
    for name in ('ml-20m', 'ml-25m', 'ml-latest', 'ml-latest-small'):
      self._write(f'{name}/ratings.csv', _RATINGS_CSV)
      table = movielens.read_movielens(name, self.root)
      np.testing.assert_array_equal(table.ratings, [4.0, 4.5, 0.5])
      np.testing.assert_array_equal(table.items, [1, 3, 6])

  def test_half_star_in_a_whole_star_corpus_is_rejected_with_line(self):
    path = self._write('ml-1m/ratings.dat', _RATINGS_DAT_10M)
    with self.assertRaisesRegex(ratings.DataError,
                                f'^{path}:2: rating 4.5 is outside the scale'):
      movielens.read_movielens('ml-1m', self.root)

  def test_malformed_line_names_file_and_line(self):
    path = self._write('ml-100k/u.data', _U_DATA + '5\t7\tthree\t881250949\n')
    with self.assertRaisesRegex(
        ratings.DataError, f"^{path}:4: field 3 is not a number: 'three'"):
      movielens.read_movielens('ml-100k', self.root)

  def test_missing_field_names_file_and_line(self):
    path = self._write('ml-1m/ratings.dat', '1::2::3::4\n1::5::3\n')
    with self.assertRaisesRegex(ratings.DataError,
                                f'^{path}:2: expected 4 fields'):
      movielens.read_movielens('ml-1m', self.root)

  def test_wrong_header(self):
    path = self._write('ml-20m/ratings.csv', 'user,item,rating,ts\n1,2,3,4\n')
    with self.assertRaisesRegex(ratings.DataError,
                                f"^{path}:1: expected the header"):
      movielens.read_movielens('ml-20m', self.root)

  def test_empty_file(self):
    path = self._write('ml-100k/u.data', '')
    with self.assertRaisesRegex(ratings.DataError, f'^{path}: no ratings'):
      movielens.read_movielens('ml-100k', self.root)

  def test_missing_directory_and_file(self):
    with self.assertRaisesRegex(ratings.DataError,
                                '^--data_dir=/nonexistent: no such directory'):
      movielens.read_movielens('ml-1m', '/nonexistent')
    with self.assertRaisesRegex(ratings.DataError,
                                'no ratings.dat here or in ml-1m/'):
      movielens.read_movielens('ml-1m', self.root)

  def test_detect_corpus(self):
    self._write('ml-1m/ratings.dat', _RATINGS_DAT)
    self.assertEqual(movielens.detect_corpus(self.root), 'ml-1m')
    self.assertEqual(
        movielens.detect_corpus(os.path.join(self.root, 'ml-1m')), 'ml-1m')
    other = self.create_tempdir().full_path
    with self.assertRaisesRegex(ratings.DataError, 'found no MovieLens'):
      movielens.detect_corpus(other)


class TitlesTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def _write(self, relative_path, data: bytes):
    path = os.path.join(self.root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)

  def test_ml_100k_u_item_latin1(self):
    self._write('ml-100k/u.item',
                ' 1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n'
                '2|Misérables, Les (1995)|01-Jan-1995||http://x|0\n'
                .encode('latin-1'))
    self.assertEqual(
        movielens.read_titles('ml-100k', os.path.join(self.root, 'ml-100k')),
        {1: 'Toy Story (1995)', 2: 'Misérables, Les (1995)'})

  def test_ml_1m_movies_dat(self):
    self._write('ml-1m/movies.dat',
                ' 1::Toy Story (1995)::Animation\n3196::Stalag 17 (1953)::'
                'Drama|War\n'.encode('latin-1'))
    self.assertEqual(movielens.read_titles('ml-1m', self.root),
                     {1: 'Toy Story (1995)', 3196: 'Stalag 17 (1953)'})

  def test_ml_20m_movies_csv_with_quoted_commas(self):
    self._write('ml-20m/movies.csv',
                'movieId,title,genres\n1,Toy Story (1995),Animation\n'
                '11,"American President, The (1995)",Comedy\n'.encode())
    self.assertEqual(
        movielens.read_titles('ml-20m', os.path.join(self.root, 'ml-20m')),
        {1: 'Toy Story (1995)', 11: 'American President, The (1995)'})

  def test_missing_movie_file_gives_no_titles(self):
    self.assertEqual(movielens.read_titles('ml-1m', self.root), {})


class CsvTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def _write(self, text):
    path = os.path.join(self.root, 'mine.csv')
    with open(path, 'w') as f:
      f.write(text)
    return path

  def test_string_ids_header_and_no_timestamp(self):
    path = self._write('user,item,rating\nalice,tt01,4\nbob,tt02,2\n')
    table = movielens.read_csv(path, ratings.STARS_1_TO_5)
    np.testing.assert_array_equal(table.users, ['alice', 'bob'])
    np.testing.assert_array_equal(table.items, ['tt01', 'tt02'])
    np.testing.assert_array_equal(table.ratings, [4, 2])
    np.testing.assert_array_equal(table.timestamps, [0, 0])

  def test_no_header_with_timestamps(self):
    path = self._write('1,2,3,100\n1,3,5,200\n')
    table = movielens.read_csv(path, ratings.STARS_1_TO_5)
    np.testing.assert_array_equal(table.timestamps, [100, 200])

  def test_bad_rating_names_the_line(self):
    path = self._write('user,item,rating\na,b,4\na,c,x\n')
    with self.assertRaisesRegex(ratings.DataError,
                                f"^{path}:3: field 3 is not a number: 'x'"):
      movielens.read_csv(path, ratings.STARS_1_TO_5)

  def test_ragged_line(self):
    path = self._write('a,b,4\na,c,3,9\n')
    with self.assertRaisesRegex(ratings.DataError,
                                f'^{path}:2: expected 3 fields'):
      movielens.read_csv(path, ratings.STARS_1_TO_5)

  def test_duplicates_error_policy(self):
    path = self._write('a,b,4\na,b,3\n')
    with self.assertRaisesRegex(ratings.DataError, f'^{path}:2: duplicate'):
      movielens.read_csv(path, ratings.STARS_1_TO_5,
                         ratings.DuplicatePolicy.ERROR)

  def test_blank_lines_before_the_header_are_skipped(self):
    path = self._write('\n  \nuser,item,rating\na,b,4\n\na,c,2\n')
    table = movielens.read_csv(path, ratings.STARS_1_TO_5,
                               ratings.DuplicatePolicy.ERROR)
    np.testing.assert_array_equal(table.items, ['b', 'c'])
    np.testing.assert_array_equal(table.ratings, [4, 2])
    path = self._write('\n1,2,3\n1,3,x\n')  # No header; lines still count.
    with self.assertRaisesRegex(ratings.DataError,
                                f"^{path}:3: field 3 is not a number: 'x'"):
      movielens.read_csv(path, ratings.STARS_1_TO_5)

  def test_rfc_4180_quoted_fields_are_values(self):
    # A quoted first line of numbers is a rating, not a header.
    path = self._write('"1","2","4.5",100\n"1","3","2",200\n')
    table = movielens.read_csv(path, ratings.HALF_STARS)
    np.testing.assert_array_equal(table.users, ['1', '1'])
    np.testing.assert_array_equal(table.items, ['2', '3'])
    np.testing.assert_array_equal(table.ratings, [4.5, 2])
    np.testing.assert_array_equal(table.timestamps, [100, 200])
    path = self._write('"user","item","rating"\nalice,"tt 01",4\n')
    table = movielens.read_csv(path, ratings.STARS_1_TO_5)
    np.testing.assert_array_equal(table.items, ['tt 01'])
    path = self._write('user,item,rating\na,"b,c",4\n')
    with self.assertRaisesRegex(ratings.DataError, f'^{path}:2: a quoted '
                                'field holds a comma'):
      movielens.read_csv(path, ratings.STARS_1_TO_5)
    path = self._write('user,item,rating\na,b,4\na,"c,3\n')
    with self.assertRaisesRegex(ratings.DataError,
                                f'^{path}:3: unbalanced quotes'):
      movielens.read_csv(path, ratings.STARS_1_TO_5)

  def test_missing_file(self):
    with self.assertRaisesRegex(ratings.DataError, 'no such file'):
      movielens.read_csv(os.path.join(self.root, 'none.csv'),
                         ratings.STARS_1_TO_5)


if __name__ == '__main__':
  absltest.main()
