"""Tests of the RecBole atomic-file reader on self-written fixtures.

The fixtures are a few lines in RecBole's real format (tab-separated, typed
header); RecBole's own MovieLens files are never committed (the MovieLens
licence forbids redistribution).
"""

import os

from absl.testing import absltest
import numpy as np

from research.fedrec.data import atomic
from research.fedrec.data import corpus
from research.fedrec.data import ratings

_HEADER = 'user_id:token\titem_id:token\trating:float\ttimestamp:float\n'
# The first lines of GroupLens's u.data, plus users with several ratings.
_ROWS = ('196\t242\t3\t881250949\n186\t302\t3\t891717742\n'
         '22\t377\t1\t878887116\n196\t377\t4\t881250950\n'
         '22\t242\t5\t878887117\n186\t377\t2\t891717743\n')
_ITEM = ('item_id:token\tmovie_title:token_seq\trelease_year:token\t'
         'class:token_seq\n242\tKolya\t1996\tComedy\n'
         '302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n'
         '377\tHeavyweights\t1994\tChildren Comedy\n')
_USER = ('user_id:token\tage:token\tgender:token\toccupation:token\t'
         'zip_code:token\n196\t49\tM\twriter\t55105\n')
_KG = 'head_id:token\trelation_id:token\ttail_id:token\nm.1\tfilm.genre\tm.2\n'
_LINK = 'item_id:token\tentity_id:token\n242\tm.1\n'


class AtomicReaderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.folder = os.path.join(self.root, 'ml-tiny')
    os.makedirs(self.folder)

  def _write(self, filename, text, mode='w'):
    path = os.path.join(self.folder, filename)
    with open(path, mode) as f:
      f.write(text)
    return path

  def _read(self, implicit=False, scale=ratings.STARS_1_TO_5):
    return atomic.read_interactions(self.folder, scale, implicit)

  def test_interactions_with_ratings_and_timestamps(self):
    self._write('ml-tiny.inter', _HEADER + _ROWS)
    table = self._read()
    np.testing.assert_array_equal(table.users, [196, 186, 22, 196, 22, 186])
    np.testing.assert_array_equal(table.items,
                                  [242, 302, 377, 377, 242, 377])
    np.testing.assert_array_equal(table.ratings, [3, 3, 1, 4, 5, 2])
    np.testing.assert_array_equal(
        table.timestamps, [881250949, 891717742, 878887116, 881250950,
                           878887117, 891717743])
    self.assertEqual(table.users.dtype, np.int64)  # All-integer ids.

  def test_the_same_corpus_as_the_u_data_reader(self):
    # RecBole's ml-100k.inter is GroupLens's u.data with a typed header: both
    # readers must give the very same corpus (ids, ratings, timestamps).
    self._write('ml-tiny.inter', _HEADER + _ROWS)
    u_data = os.path.join(self.root, 'ml-100k')
    os.makedirs(u_data)
    with open(os.path.join(u_data, 'u.data'), 'w') as f:
      f.write(_ROWS)
    from_atomic = corpus.load_corpus(corpus.DataConfig(
        dataset=corpus.ATOMIC, data_dir=self.folder))
    from_u_data = corpus.load_corpus(corpus.DataConfig(
        dataset='ml-100k', data_dir=u_data))
    self.assertEqual(from_atomic.content_hash(), from_u_data.content_hash())
    self.assertEqual(from_atomic.name, 'ml-tiny (RecBole atomic)')

  def test_titles_and_side_files(self):
    self._write('ml-tiny.inter', _HEADER + _ROWS)
    self._write('ml-tiny.item', _ITEM)
    self._write('ml-tiny.user', _USER)
    self._write('ml-tiny.kg', _KG)
    self._write('ml-tiny.link', _LINK)
    self.assertEqual(sorted(atomic.find_files(self.folder)),
                     ['inter', 'item', 'kg', 'link', 'user'])
    self.assertEqual(atomic.read_titles(self.folder),
                     {242: 'Kolya', 302: 'L.A. Confidential',
                      377: 'Heavyweights'})
    data = corpus.load_corpus(corpus.DataConfig(dataset=corpus.ATOMIC,
                                                data_dir=self.folder))
    config = corpus.DataConfig(dataset=corpus.ATOMIC, data_dir=self.folder)
    self.assertEqual(data.titles(config),
                     ['Kolya', 'L.A. Confidential', 'Heavyweights'])
    users = atomic.read_table(os.path.join(self.folder, 'ml-tiny.user'))
    self.assertEqual(users.fields[1], ('age', 'token'))
    self.assertEqual(users.columns['occupation'].tolist(), ['writer'])
    kg = atomic.read_table(os.path.join(self.folder, 'ml-tiny.kg'))
    self.assertEqual(kg.columns['relation_id'].tolist(), ['film.genre'])
    items = atomic.read_table(os.path.join(self.folder, 'ml-tiny.item'))
    self.assertEqual(items.columns['class'][1],
                     'Crime Film-Noir Mystery Thriller')  # A token_seq.

  def test_string_ids_and_no_timestamp(self):
    self._write('amazon.inter', 'user_id:token\titem_id:token\trating:float\n'
                'A2X\tB00\t4.0\nA2X\tB01\t5.0\nC9\tB00\t1.0\n')
    table = self._read()
    self.assertEqual(table.users.tolist(), ['A2X', 'A2X', 'C9'])
    self.assertEqual(table.items.tolist(), ['B00', 'B01', 'B00'])
    np.testing.assert_array_equal(table.timestamps, [0, 0, 0])

  def test_a_corpus_without_ratings_is_implicit_only(self):
    path = self._write('lastfm.inter', 'user_id:token\titem_id:token\t'
                       'timestamp:float\n1\t5\t10.7\n2\t5\t11\n')
    with self.assertRaisesRegex(
        atomic.DataError, f'^{path}:1: no rating:float field: this corpus is '
        r'implicit feedback only \(add --feedback=implicit\)\.$'):
      self._read()
    table = self._read(implicit=True)
    np.testing.assert_array_equal(table.ratings, [1.0, 1.0])
    np.testing.assert_array_equal(table.timestamps, [10, 11])  # Whole s.

  def test_blank_lines_are_skipped_and_counted(self):
    path = self._write('ml-tiny.inter',
                       _HEADER + '1\t2\t3\t4\n\n1\t3\t9\t5\n')
    with self.assertRaisesRegex(atomic.DataError,
                                f'^{path}:4: rating 9 is outside the scale'):
      self._read()

  def test_bad_files_are_one_line_errors_naming_file_and_line(self):
    for text, message in (
        ('user_id:token\titem_id:token\trating\n1\t2\t3\n',
         r":1: header field 'rating' is not name:type"),
        ('user_id:token\titem_id:number\n1\t2\n',
         r":1: header field 'item_id:number' is not name:type"),
        ('user_id:token\trating:float\n1\t2\n',
         r':1: no item_id field in the header'),
        ('user_id:token\titem_id:token\titem_id:token\n1\t2\t3\n',
         r":1: the header names 'item_id' twice"),
        (_HEADER + '1\t2\t3\t4\n1\t2\t3\n',
         r':3: expected 4 tab-separated fields \(user_id, item_id, rating, '
         r"timestamp\), found 3 in '1\\t2\\t3'"),
        (_HEADER + '1\t2\tgood\t4\n',
         r":2: field rating is not a number: 'good'"),
        (_HEADER + '1\t\t3\t4\n', r':2: field item_id is empty'),
        (_HEADER + '1\t2\t\t4\n', r':2: field rating is empty'),
        ('user_id:float\titem_id:token\n1\t2\n',
         r':1: user_id has type float, expected user_id:token'),
        ('user_id:token\titem_id:token\ttimestamp:token\n1\t2\tmonday\n',
         r':1: timestamp has type token, expected timestamp:float'),
        (_HEADER, r': no interactions found \(only a header\)'),
    ):
      with self.subTest(message):
        path = self._write('ml-tiny.inter', text)
        with self.assertRaisesRegex(atomic.DataError,
                                    f'^{path}{message}'):
          self._read()
    path = self._write('ml-tiny.inter', (_HEADER + '1\t2\t3\t4\n').encode(
        'utf-8') + b'\xff\t2\t3\t4\n', mode='wb')
    with self.assertRaisesRegex(atomic.DataError,
                                f'^{path}:3: not UTF-8 text'):
      self._read()

  def test_the_folder_must_hold_one_inter_file(self):
    missing = os.path.join(self.root, 'nothing')
    with self.assertRaisesRegex(atomic.DataError,
                                f'^--data_dir={missing}: no such directory'):
      atomic.find_files(missing)
    with self.assertRaisesRegex(atomic.DataError, 'no .inter file here'):
      atomic.find_files(self.folder)
    self._write('a.inter', _HEADER)
    self._write('b.inter', _HEADER)
    with self.assertRaisesRegex(atomic.DataError, r'several \.inter files '
                                r'\(a\.inter, b\.inter\)'):
      atomic.find_files(self.folder)

  def test_dataset_flag_needs_a_data_dir(self):
    with self.assertRaisesRegex(ValueError, '--dataset=atomic needs '
                                '--data_dir'):
      corpus.DataConfig(dataset=corpus.ATOMIC)


if __name__ == '__main__':
  absltest.main()
