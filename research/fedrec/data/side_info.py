"""Side information: what a corpus says about its items and users.

Every MovieLens corpus ships item metadata, and some ship user demographics
and tag relevances; RecBole atomic datasets carry them as .item and .user
files. This module reads them, validated like the rating readers (errors
name the file and line):

| corpus          | items                                   | users              |
|-----------------|-----------------------------------------|--------------------|
| ml-100k         | `u.item`: title, release date, 19 flags | `u.user`: age, gender, occupation, zip |
| ml-1m           | `movies.dat`: title (year), genres      | `users.dat`: gender, age band, occupation code, zip |
| ml-10m          | `movies.dat`                            | none               |
| ml-20m, ml-25m, ml-latest* | `movies.csv`; `genome-scores.csv` tag relevances where present | none |
| RecBole atomic  | NAME.item: `*title*`, `*year*`, `class`/`genre*` token_seq | NAME.user: every field |
| synthetic       | titles with years; genres = the planted factors' large coordinates | none |

`ItemInfo` and `UserInfo` hold one row per raw id found in the file;
`ItemInfo.aligned(raw_items)` lines them up with a corpus's dense ids (an
item the file does not describe gets no genres and an unknown year).
Release years come from ml-100k's release date (`01-Jan-1995`), else from
a title's trailing `(1995)`.
"""

import csv
import dataclasses
import io
import os
import re
from typing import Optional

import numpy as np

from research.fedrec.data import atomic
from research.fedrec.data import ratings as ratings_lib

DataError = ratings_lib.DataError

# ml-100k's u.item genre flags, in file order (its u.genre).
ML100K_GENRES = ('unknown', 'Action', 'Adventure', 'Animation', "Children's",
                 'Comedy', 'Crime', 'Documentary', 'Drama', 'Fantasy',
                 'Film-Noir', 'Horror', 'Musical', 'Mystery', 'Romance',
                 'Sci-Fi', 'Thriller', 'War', 'Western')
# ml-1m's users.dat codes (its README).
ML1M_AGES = {'1': 'Under 18', '18': '18-24', '25': '25-34', '35': '35-44',
             '45': '45-49', '50': '50-55', '56': '56+'}
ML1M_OCCUPATIONS = (
    'other', 'academic/educator', 'artist', 'clerical/admin',
    'college/grad student', 'customer service', 'doctor/health care',
    'executive/managerial', 'farmer', 'homemaker', 'K-12 student', 'lawyer',
    'programmer', 'retired', 'sales/marketing', 'scientist', 'self-employed',
    'technician/engineer', 'tradesman/craftsman', 'unemployed', 'writer')
NO_GENRES = '(no genres listed)'  # ml-20m and later: a movie without genres.
USER_FIELDS = ('age', 'gender', 'occupation', 'zip')
_MONTHS = ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep',
           'Oct', 'Nov', 'Dec')
_RELEASE_DATE = re.compile(r'^\d{2}-(' + '|'.join(_MONTHS) + r')-(\d{4})$')
_TITLE_YEAR = re.compile(r'\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$')
_YEAR = re.compile(r'^\s*(\d{4})(?:\.0*)?\s*$')


# Principal components of the tag genome kept as item features (ml-20m and
# later score 1,128 tags).
GENOME_COMPONENTS = 32


@dataclasses.dataclass(frozen=True)
class ItemInfo:
  """Item metadata, one row per item.

  Attributes:
    ids: Raw item ids (int64, or str for string-id corpora).
    titles: Titles ('' where unknown).
    years: Release years, NaN where unknown.
    genre_names: The genre vocabulary, in column order.
    genres: [items, genres] float32 multi-hot flags.
    source: The file read (for messages).
    genome: None, or [items, components] float32: the items' coordinates on
      the leading principal components of their tag genome relevances
      (`with_genome`); NaN rows for items the genome does not score.
  """

  ids: np.ndarray
  titles: np.ndarray
  years: np.ndarray
  genre_names: tuple[str, ...]
  genres: np.ndarray
  source: str
  genome: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.ids)

  def aligned(self, raw_items: np.ndarray) -> 'ItemInfo':
    """The rows of `raw_items` in order (undescribed items: empty rows)."""
    rows = _rows_of(self.ids, raw_items)
    known = rows >= 0
    titles = np.where(known, self.titles[np.maximum(rows, 0)], '')
    years = np.where(known, self.years[np.maximum(rows, 0)], np.nan)
    genres = np.where(known[:, None], self.genres[np.maximum(rows, 0)], 0.0)
    genome = None if self.genome is None else np.where(
        known[:, None], self.genome[np.maximum(rows, 0)], np.nan).astype(
            np.float32)
    return ItemInfo(np.asarray(raw_items), titles, years, self.genre_names,
                    genres.astype(np.float32), self.source, genome)

  def with_genome(self, movies: np.ndarray, scores: np.ndarray,
                  source: str,
                  components: int = GENOME_COMPONENTS) -> 'ItemInfo':
    """These items with their tag genome (`read_genome`'s movie ids and
    relevances): the coordinates of the scored ones on the leading
    `components` principal components of their relevances
    (`genome_components`), NaN rows for the others.

    Raises:
      DataError: the genome scores none of these items.
    """
    rows = _rows_of(np.asarray(movies), self.ids)
    scored = rows >= 0
    if not scored.any():
      raise DataError(f'{source}: scores none of the corpus\'s items.')
    genome = np.full((len(self), min(components, scores.shape[1])), np.nan,
                     np.float32)
    genome[scored] = genome_components(scores[rows[scored]], components)
    return dataclasses.replace(self, genome=genome)


@dataclasses.dataclass(frozen=True)
class UserInfo:
  """User attributes, one row per user: categorical fields as strings.

  `fields` maps a field name to its values ('' where unknown); MovieLens
  corpora give `USER_FIELDS` (ml-1m's age is its band, e.g. '25-34', and its
  occupation the code's name), atomic files every field of NAME.user.
  """

  ids: np.ndarray
  fields: dict[str, np.ndarray]
  source: str

  def __len__(self) -> int:
    return len(self.ids)

  def aligned(self, raw_users: np.ndarray) -> 'UserInfo':
    """The rows of `raw_users` in order (undescribed users: '' fields)."""
    rows = _rows_of(self.ids, raw_users)
    known = rows >= 0
    return UserInfo(np.asarray(raw_users), {
        name: np.where(known, values[np.maximum(rows, 0)], '')
        for name, values in self.fields.items()}, self.source)


def principal_coordinates(matrix: np.ndarray, count: int) -> np.ndarray:
  """[columns, count] coordinates of `matrix`'s columns on its top `count`
  left singular vectors: with matrix = U S V^T, the rows of V S, each
  vector's sign fixed so that its largest-magnitude entry is positive
  (zeros beyond the rank)."""
  _, values, vt = np.linalg.svd(matrix, full_matrices=False)
  coordinates = np.zeros((matrix.shape[1], count))
  kept = min(count, len(values))
  coordinates[:, :kept] = vt[:kept].T * values[:kept]
  signs = np.sign(coordinates[np.argmax(np.abs(coordinates), axis=0),
                              np.arange(count)])
  return coordinates * np.where(signs == 0, 1.0, signs)


def genome_components(scores: np.ndarray,
                      count: int = GENOME_COMPONENTS) -> np.ndarray:
  """[movies, min(count, tags)] float32: movies' tag relevances centred on
  the mean movie, on their leading principal components, all divided by the
  first component's standard deviation (relative variances kept)."""
  count = min(count, scores.shape[1])
  centred = scores - scores.mean(axis=0, keepdims=True, dtype=np.float64)
  coordinates = principal_coordinates(centred.T, count)
  scale = coordinates[:, 0].std() if count else 0.0
  return (coordinates / (scale if scale > 0 else 1.0)).astype(np.float32)


def _rows_of(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Row of each key in `ids`, -1 where absent."""
  index = {key: row for row, key in enumerate(ids.tolist())}
  return np.array([index.get(key, -1) for key in np.asarray(keys).tolist()],
                  np.int64)


def _find(data_dir: str, folder: str, filename: str) -> Optional[str]:
  for place in (data_dir, os.path.join(data_dir, folder)):
    path = os.path.join(place, filename)
    if os.path.isfile(path):
      return path
  return None


def _lines(path: str, encoding: str) -> list[tuple[int, str]]:
  """(line number, line) of the non-blank lines of a text file."""
  return _numbered(_text(path, encoding))


def _numbered(text: str) -> list[tuple[int, str]]:
  return [(number, line.rstrip('\r'))
          for number, line in enumerate(text.split('\n'), start=1)
          if line.strip()]


def _text(path: str, encoding: str) -> str:
  """A text file's contents (a leading BOM dropped); DataError names it."""
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror}).') from e
  if b'\x00' in raw:
    line = raw.count(b'\n', 0, raw.index(b'\x00')) + 1
    raise DataError(f'{path}:{line}: not a text file (NUL byte).')
  try:
    text = raw.decode(encoding)
  except UnicodeDecodeError as e:
    line = raw.count(b'\n', 0, e.start) + 1
    raise DataError(f'{path}:{line}: not {encoding} text (byte '
                    f'0x{raw[e.start]:02x}).') from None
  return text.lstrip('\ufeff')


def _split(path: str, number: int, line: str, separator: str,
           names: tuple[str, ...]) -> list[str]:
  fields = line.split(separator)
  if len(fields) != len(names):
    sep = {'\t': 'tab', '|': "'|'", ',': 'comma'}.get(separator,
                                                        repr(separator))
    raise DataError(f'{path}:{number}: expected {len(names)} fields '
                    f'({", ".join(names)}) separated by {sep}, found '
                    f'{len(fields)} in {line.strip()[:80]!r}.')
  return [f.strip() for f in fields]


def _integer_id(path: str, number: int, name: str, value: str) -> int:
  if not re.fullmatch(r'\d{1,18}', value):
    raise DataError(f'{path}:{number}: field {name} is not an integer id: '
                    f'{value[:40]!r}.')
  return int(value)


def _unique_ids(path: str, ids: list, numbers: list[int]) -> None:
  seen = {}
  for key, number in zip(ids, numbers):
    if key in seen:
      raise DataError(f'{path}:{number}: id {key} is described twice (also '
                      f'on line {seen[key]}).')
    seen[key] = number


def title_year(title: str) -> float:
  """The year of a title ending in `(1995)` (or `(2007-2013)`), else NaN."""
  match = _TITLE_YEAR.search(title)
  return float(match.group(1)) if match else float('nan')


def _item_info(path, ids, titles, years, genre_names, genre_lists,
               numbers) -> ItemInfo:
  _unique_ids(path, ids, numbers)
  column = {name: k for k, name in enumerate(genre_names)}
  genres = np.zeros((len(ids), len(genre_names)), np.float32)
  for row, names in enumerate(genre_lists):
    for name in names:
      genres[row, column[name]] = 1.0
  return ItemInfo(np.array(ids), np.array(titles, dtype=str),
                  np.array(years, np.float64), tuple(genre_names), genres,
                  path)


def read_ml100k_items(path: str) -> ItemInfo:
  """ml-100k's u.item: id|title|release date|video date|URL|19 genre flags."""
  names = ('movie id', 'title', 'release date', 'video release date',
           'IMDb URL') + ML100K_GENRES
  ids, titles, years, genre_lists, numbers = [], [], [], [], []
  for number, line in _lines(path, 'latin-1'):
    fields = _split(path, number, line, '|', names)
    ids.append(_integer_id(path, number, 'movie id', fields[0]))
    titles.append(fields[1])
    date = fields[2]
    match = _RELEASE_DATE.match(date)
    if date and match is None:
      raise DataError(f'{path}:{number}: release date {date[:40]!r} is not '
                      'dd-Mon-yyyy (e.g. 01-Jan-1995).')
    years.append(float(match.group(2)) if match else title_year(fields[1]))
    flags = fields[5:]
    for genre, flag in zip(ML100K_GENRES, flags):
      if flag not in ('0', '1'):
        raise DataError(f'{path}:{number}: genre flag {genre} is '
                        f'{flag[:40]!r}, expected 0 or 1.')
    genre_lists.append([g for g, f in zip(ML100K_GENRES, flags) if f == '1'])
    numbers.append(number)
  if not ids:
    raise DataError(f'{path}: no items found (the file is empty).')
  return _item_info(path, ids, titles, years, ML100K_GENRES, genre_lists,
                    numbers)


def _genre_vocabulary(genre_lists: list[list[str]]) -> tuple[str, ...]:
  return tuple(sorted({g for names in genre_lists for g in names}))


def read_movies(path: str, separator: str, encoding: str) -> ItemInfo:
  """ml-1m/ml-10m movies.dat (`::`) or ml-20m+ movies.csv (quoted, header).

  Lines are id, title with its year, `|`-separated genres (`(no genres
  listed)` is none). The genre vocabulary is the genres found, sorted.
  """
  names = ('movieId', 'title', 'genres')
  ids, titles, years, genre_lists, numbers = [], [], [], [], []
  lines = _lines(path, encoding)
  if separator == ',':
    if not lines or lines[0][1].strip() != ','.join(names):
      found = lines[0][1].strip()[:80] if lines else ''
      raise DataError(f'{path}:1: expected the header {",".join(names)!r}, '
                      f'found {found!r}.')
    lines = lines[1:]
  for number, line in lines:
    if separator == ',':
      try:
        (fields,) = csv.reader([line], strict=True)
      except (csv.Error, ValueError):
        raise DataError(f'{path}:{number}: unbalanced quotes in '
                        f'{line.strip()[:80]!r}.') from None
      if len(fields) != len(names):
        raise DataError(f'{path}:{number}: expected 3 fields (movieId, '
                        f'title, genres) separated by comma, found '
                        f'{len(fields)} in {line.strip()[:80]!r}.')
      fields = [f.strip() for f in fields]
    else:
      fields = _split(path, number, line, separator, names)
    ids.append(_integer_id(path, number, 'movieId', fields[0]))
    titles.append(fields[1])
    years.append(title_year(fields[1]))
    listed = [g for g in fields[2].split('|') if g and g != NO_GENRES]
    genre_lists.append(listed)
    numbers.append(number)
  if not ids:
    raise DataError(f'{path}: no movies found (the file is empty).')
  return _item_info(path, ids, titles, years, _genre_vocabulary(genre_lists),
                    genre_lists, numbers)


def read_ml100k_users(path: str) -> UserInfo:
  """ml-100k's u.user: user id|age|gender|occupation|zip code."""
  names = ('user id', 'age', 'gender', 'occupation', 'zip code')
  ids, rows, numbers = [], [], []
  for number, line in _lines(path, 'latin-1'):
    fields = _split(path, number, line, '|', names)
    ids.append(_integer_id(path, number, 'user id', fields[0]))
    if not re.fullmatch(r'\d{1,3}', fields[1]):
      raise DataError(f'{path}:{number}: age {fields[1][:40]!r} is not a '
                      'whole number of years.')
    if fields[2] not in ('M', 'F'):
      raise DataError(f'{path}:{number}: gender {fields[2][:40]!r}, '
                      'expected M or F.')
    if not fields[3]:
      raise DataError(f'{path}:{number}: field occupation is empty.')
    rows.append(fields[1:])
    numbers.append(number)
  return _user_info(path, ids, rows, numbers)


def read_ml1m_users(path: str) -> UserInfo:
  """ml-1m's users.dat: UserID::Gender::Age::Occupation::Zip-code (codes)."""
  names = ('UserID', 'Gender', 'Age', 'Occupation', 'Zip-code')
  ids, rows, numbers = [], [], []
  for number, line in _lines(path, 'latin-1'):
    fields = _split(path, number, line, '::', names)
    ids.append(_integer_id(path, number, 'UserID', fields[0]))
    if fields[1] not in ('M', 'F'):
      raise DataError(f'{path}:{number}: gender {fields[1][:40]!r}, '
                      'expected M or F.')
    if fields[2] not in ML1M_AGES:
      raise DataError(f'{path}:{number}: age code {fields[2][:40]!r}, '
                      f'expected one of {", ".join(ML1M_AGES)}.')
    if not (fields[3].isdigit() and int(fields[3]) < len(ML1M_OCCUPATIONS)):
      raise DataError(f'{path}:{number}: occupation code {fields[3][:40]!r}, '
                      f'expected 0 to {len(ML1M_OCCUPATIONS) - 1}.')
    rows.append([ML1M_AGES[fields[2]], fields[1],
                 ML1M_OCCUPATIONS[int(fields[3])], fields[4]])
    numbers.append(number)
  return _user_info(path, ids, rows, numbers)


def _user_info(path, ids, rows, numbers) -> UserInfo:
  if not ids:
    raise DataError(f'{path}: no users found (the file is empty).')
  _unique_ids(path, ids, numbers)
  columns = np.array(rows, dtype=str).reshape(len(rows), len(USER_FIELDS))
  return UserInfo(np.array(ids, np.int64),
                  {name: columns[:, k] for k, name in enumerate(USER_FIELDS)},
                  path)


def read_genome(path: str) -> tuple[np.ndarray, np.ndarray]:
  """ml-20m/25m genome-scores.csv: (movie ids, [movies, tags] relevances).

  The file is `movieId,tagId,relevance` with a header; every movie it scores
  must be scored on the same tags, each relevance in [0, 1].
  """
  header = 'movieId,tagId,relevance'
  text = _text(path, 'utf-8')
  first, _, rest = text.partition('\n')
  if first.strip() != header:
    raise DataError(f'{path}:1: expected the header {header!r}, found '
                    f'{first.strip()[:80]!r}.')
  if not rest.strip():
    raise DataError(f'{path}: no scores found (only a header).')
  rest = rest.replace('\r\n', '\n')
  # ml-25m's file has 15 million lines: parsed by NumPy in one pass; the
  # lines are numbered (in Python) only to name a bad one.
  body = lambda: [(n + 1, line) for n, line in _numbered(rest)]
  try:
    table = np.loadtxt(io.StringIO(rest), delimiter=',', ndmin=2,
                       comments=None,
                       dtype=[('movie', np.int64), ('tag', np.int64),
                              ('relevance', np.float64)])
  except ValueError:
    for number, line in body():
      fields = line.split(',')
      if (len(fields) != 3 or not fields[0].strip().isdigit() or
          not fields[1].strip().isdigit() or
          not re.fullmatch(r' *\d*\.?\d+(?:[eE][-+]?\d+)? *', fields[2])):
        raise DataError(f'{path}:{number}: expected movieId,tagId,relevance '
                        f'(two integers and a number), found '
                        f'{line.strip()[:80]!r}.') from None
    raise
  table = table.reshape(-1)
  bad = np.flatnonzero((table['relevance'] < 0) | (table['relevance'] > 1))
  if bad.size:
    raise DataError(f'{path}:{body()[int(bad[0])][0]}: relevance '
                    f'{table["relevance"][bad[0]]:g} is outside [0, 1].')
  movies, movie_rows = np.unique(table['movie'], return_inverse=True)
  tags, tag_columns = np.unique(table['tag'], return_inverse=True)
  counts = np.bincount(movie_rows, minlength=len(movies))
  if (counts != len(tags)).any():
    short = int(np.flatnonzero(counts != len(tags))[0])
    raise DataError(f'{path}: movie {movies[short]} is scored on '
                    f'{counts[short]} tags, the others on {len(tags)} '
                    '(every movie needs every tag once).')
  scores = np.full((len(movies), len(tags)), np.nan)
  scores[movie_rows, tag_columns] = table['relevance']
  if np.isnan(scores).any():
    row = int(np.argwhere(np.isnan(scores))[0][0])
    raise DataError(f'{path}: movie {movies[row]} is scored twice on one tag '
                    'and not on another.')
  return movies, scores.astype(np.float32)


def _atomic_field(table: atomic.AtomicTable, words: tuple[str, ...],
                  kinds: tuple[str, ...]) -> Optional[str]:
  for name, kind in table.fields:
    if kind in kinds and any(word in name.lower() for word in words):
      return name
  return None


def read_atomic_items(path: str) -> ItemInfo:
  """NAME.item: the title (`*title*`), year (`*year*`) and genres.

  Genres are the first token_seq field named `class` or `genre*` (RecBole's
  ml-100k: `class:token_seq`, space-separated); an atomic file without one
  of these fields gives no titles, unknown years or no genres. A year field
  holding a word (RecBole's ml-100k: `unkonwn`) is an unknown year; one
  holding digits that are not a year is an error.
  """
  table = atomic.read_table(path, required=(atomic.ITEM,))
  ids = atomic.parse_ids(table.columns[atomic.ITEM]).tolist()
  title = _atomic_field(table, ('title',), ('token', 'token_seq'))
  year = _atomic_field(table, ('year',), ('token', 'float'))
  genre = _atomic_field(table, ('class', 'genre'), ('token_seq', 'token'))
  titles = (table.columns[title].tolist() if title else [''] * len(ids))
  years = []
  for row, number in enumerate(table.lines.tolist()):
    value = table.columns[year][row] if year else ''
    match = _YEAR.match(value)
    # A word without digits marks a missing year (RecBole's ml-100k writes
    # 'unkonwn'); digits that are not a year are an error.
    if match is None and re.search(r'\d', value):
      raise DataError(f'{path}:{number}: field {year} is not a year: '
                      f'{value[:40]!r}.')
    years.append(float(match.group(1)) if match else title_year(titles[row]))
  genre_lists = ([v.split() for v in table.columns[genre].tolist()]
                 if genre else [[] for _ in ids])
  return _item_info(path, ids, titles, years, _genre_vocabulary(genre_lists),
                    genre_lists, table.lines.tolist())


def read_atomic_users(path: str) -> UserInfo:
  """NAME.user: every field but user_id, as strings."""
  table = atomic.read_table(path, required=(atomic.USER,))
  ids = atomic.parse_ids(table.columns[atomic.USER])
  _unique_ids(path, ids.tolist(), table.lines.tolist())
  if not len(table):  # pylint: disable=g-explicit-length-test
    raise DataError(f'{path}: no users found (only a header).')
  return UserInfo(ids, {name: table.columns[name]
                        for name, _ in table.fields if name != atomic.USER},
                  path)


# Where each MovieLens corpus keeps its side information:
# corpus -> (folder, movie file, separator, encoding, user file or None).
_MOVIELENS_FILES = {
    'ml-100k': ('ml-100k', 'u.item', '|', 'latin-1', 'u.user'),
    'ml-1m': ('ml-1m', 'movies.dat', '::', 'latin-1', 'users.dat'),
    'ml-10m': ('ml-10M100K', 'movies.dat', '::', 'utf-8', None),
    'ml-20m': ('ml-20m', 'movies.csv', ',', 'utf-8', None),
    'ml-25m': ('ml-25m', 'movies.csv', ',', 'utf-8', None),
    'ml-latest': ('ml-latest', 'movies.csv', ',', 'utf-8', None),
    'ml-latest-small': ('ml-latest-small', 'movies.csv', ',', 'utf-8', None),
}


def read_movielens_items(name: str, data_dir: str) -> ItemInfo:
  """The item file of MovieLens corpus `name` in `data_dir`.

  Raises:
    DataError: the corpus ships no item file here, or it is malformed.
  """
  folder, filename, separator, encoding, _ = _MOVIELENS_FILES[name]
  path = _find(data_dir, folder, filename)
  if path is None:
    raise DataError(f'--data_dir={data_dir}: no {filename} (the {name} item '
                    'file that side information is read from).')
  if name == 'ml-100k':
    return read_ml100k_items(path)
  return read_movies(path, separator, encoding)


def movielens_user_file(name: str, data_dir: str) -> Optional[str]:
  """The path of MovieLens corpus `name`'s user file, None if absent."""
  folder, _, _, _, filename = _MOVIELENS_FILES[name]
  return None if filename is None else _find(data_dir, folder, filename)


def read_movielens_users(name: str, data_dir: str) -> UserInfo:
  """The user file of MovieLens corpus `name` (ml-100k, ml-1m only).

  Raises:
    DataError: the corpus has no demographics, the file is missing or
      malformed.
  """
  folder, _, _, _, filename = _MOVIELENS_FILES[name]
  if filename is None:
    raise DataError(f'{name} ships no user demographics (only ml-100k and '
                    'ml-1m do).')
  path = _find(data_dir, folder, filename)
  if path is None:
    raise DataError(f'--data_dir={data_dir}: no {filename} (the {name} user '
                    'file).')
  return (read_ml100k_users if name == 'ml-100k' else read_ml1m_users)(path)


def read_movielens_genome(name: str, data_dir: str):
  """(movie ids, relevances) of genome-scores.csv; DataError if absent."""
  folder = _MOVIELENS_FILES[name][0]
  path = _find(data_dir, folder, 'genome-scores.csv')
  if path is None:
    raise DataError(f'--data_dir={data_dir}: no genome-scores.csv (the tag '
                    f'genome ships with ml-20m and later, not {name}).')
  return read_genome(path)


def synthetic_items(item_factors: np.ndarray, titles: list[str],
                    factor_stddev: float) -> ItemInfo:
  """Side information of the synthetic corpus (raw ids 1..I).

  Genre k is on where the planted item factor's coordinate k exceeds half a
  standard deviation, so genres carry part of the truth as real genres do;
  years are the titles'.
  """
  genres = (item_factors > 0.5 * factor_stddev).astype(np.float32)
  names = tuple(f'genre_{k}' for k in range(item_factors.shape[1]))
  return ItemInfo(np.arange(1, len(titles) + 1, dtype=np.int64),
                  np.array(titles, dtype=str),
                  np.array([title_year(t) for t in titles]), names, genres,
                  'synthetic corpus')


ITEM_FEATURES = ('genres', 'year', 'title_text', 'genome')
_TRAILING_YEAR = re.compile(r'\s*\(\d{4}(?:[-\u2013]\d{0,4})?\)\s*$')


def title_words(title: str) -> str:
  """A title without its trailing year (`Heat (1995)` -> `Heat`)."""
  return _TRAILING_YEAR.sub('', title).strip()


@dataclasses.dataclass(frozen=True)
class FeatureEncoder:
  """Turns items' genres and years into feature rows, as fit on a corpus.

  genres: the multi-hot flags over `genre_names`; year: the release year
  standardized by the corpus's known years (an unknown year is the mean, 0);
  title_text: the title's (without its year) sentence embedding by
  all-MiniLM-L6-v2 (data/text_encoder.py; 384 columns, unit norm; an
  unknown title is zeros); genome: the item's coordinates on the
  `genome_components` leading principal components of the corpus's tag
  genome (`ItemInfo.with_genome`), then a flag column 1 for an item the
  genome does not score (its coordinates 0, the mean movie's), as is every
  item described later.
  Kept with a model so that an item described later (recommend.py
  --new_item) is encoded as the corpus's items were.
  """

  names: tuple[str, ...]
  genre_names: tuple[str, ...]
  year_mean: float = 0.0
  year_std: float = 1.0
  genome_components: int = 0

  def __post_init__(self):
    unknown = [n for n in self.names if n not in ITEM_FEATURES]
    if unknown:
      raise ValueError(f'item feature {unknown[0]!r} is not one of '
                       f'{", ".join(ITEM_FEATURES)}.')

  @classmethod
  def fit(cls, info: ItemInfo, names: tuple[str, ...]) -> 'FeatureEncoder':
    """Raises ValueError: genome is asked for and `info` has none."""
    known = info.years[~np.isnan(info.years)]
    if 'genome' in names and info.genome is None:
      raise ValueError(f'item feature genome: {info.source} comes with no '
                       'tag genome (genome-scores.csv, ml-20m and later).')
    return cls(tuple(names), tuple(info.genre_names),
               float(known.mean()) if known.size else 0.0,
               float(known.std() or 1.0) if known.size else 1.0,
               0 if info.genome is None else info.genome.shape[1])

  def encode(self, genres: np.ndarray, years: np.ndarray,
             titles=None, progress: bool = True,
             genome: Optional[np.ndarray] = None) -> np.ndarray:
    """[items, columns] float32 rows of genre flags [items, G], years,
    (title_text) titles and (genome) genome coordinates [items,
    genome_components] (NaN rows, or None: unscored)."""
    years = np.asarray(years, np.float64)
    columns = []
    for name in self.names:
      if name == 'genres':
        columns.append(np.asarray(genres, np.float64))
      elif name == 'year':
        columns.append(np.where(np.isnan(years), 0.0, (
            years - self.year_mean) / self.year_std)[:, None])
      elif name == 'genome':
        if genome is None:
          genome = np.full((len(years), self.genome_components), np.nan)
        genome = np.asarray(genome, np.float64)
        unscored = np.isnan(genome).any(axis=1, keepdims=True)
        columns += [np.where(unscored, 0.0, genome), unscored.astype(
            np.float64)]
      else:
        from research.fedrec.data import text_encoder  # pylint: disable=g-import-not-at-top
        words = [title_words(t) for t in (
            titles if titles is not None else [''] * len(years))]
        columns.append(text_encoder.embeddings(words, progress).astype(
            np.float64))
    if not columns:
      return np.zeros((len(years), 0), np.float32)
    return np.concatenate(columns, axis=1).astype(np.float32)

  def encode_one(self, genres: list[str], year: Optional[float],
                 title: str = ''):
    """The row of one described item; ValueError names an unknown genre."""
    unknown = [g for g in genres if g not in self.genre_names]
    if unknown:
      raise ValueError(f'genre {unknown[0]!r} is not one of the corpus\'s: '
                       f'{", ".join(self.genre_names)}.')
    flags = np.array([[g in genres for g in self.genre_names]], np.float64)
    return self.encode(flags, np.array([np.nan if year is None else year]),
                       [title], progress=False)[0]


def item_features(info: ItemInfo, names: tuple[str, ...]):
  """([items, columns] float32 features, column labels) of `names`.

  See `FeatureEncoder` (fit on `info` itself).

  Raises:
    ValueError: a name is not among `ITEM_FEATURES`.
  """
  encoder = FeatureEncoder.fit(info, names)
  values = encoder.encode(info.genres, info.years, list(info.titles),
                          genome=info.genome)
  genome = ([f'genome:pc{k + 1}' for k in range(encoder.genome_components)]
            + ['genome:unscored'])
  text_dim = values.shape[1] - len(info.genre_names) * ('genres' in names) - (
      'year' in names) - len(genome) * ('genome' in names)
  labels = []
  for name in names:
    labels += {'genres': [f'genre:{g}' for g in info.genre_names],
               'year': ['year'],
               'title_text': [f'title:{k}' for k in range(text_dim)],
               'genome': genome}[name]
  return values, labels


# ml-1m's age bands (users.dat codes 1, 18, 25, 35, 45, 50, 56 named), which
# a numeric age (ml-100k's u.user, atomic files) is put into.
AGE_BANDS = ('Under 18', '18-24', '25-34', '35-44', '45-49', '50-55', '56+')
_BAND_STARTS = (0, 18, 25, 35, 45, 50, 56)
DEMOGRAPHIC_FIELDS = ('age', 'gender', 'occupation')


def age_band(value: str) -> str:
  """A numeric age's ml-1m band ('' stays unknown); a band stays itself."""
  value = value.strip()
  if not re.fullmatch(r'\d{1,3}', value):
    return value
  start = max(s for s in _BAND_STARTS if s <= int(value))
  return AGE_BANDS[_BAND_STARTS.index(start)]


@dataclasses.dataclass(frozen=True)
class DemographicEncoder:
  """Users' categorical attributes as one-hot rows.

  `fields` are user-file fields (age put into ml-1m's bands, so ml-100k's
  and ml-1m's ages read alike); `values[k]` is field k's vocabulary, the
  values the training users have, sorted. An unknown or unseen value sets
  none of its field's columns.
  """

  fields: tuple[str, ...]
  values: tuple[tuple[str, ...], ...]

  @classmethod
  def fit(cls, info: UserInfo,
          fields: tuple[str, ...] = DEMOGRAPHIC_FIELDS) -> 'DemographicEncoder':
    """The vocabularies of `info`'s users.

    Raises:
      DataError: a field is not in the user file (one line naming those that
        are).
    """
    missing = [f for f in fields if f not in info.fields]
    if missing:
      raise DataError(f'{info.source}: no user field {", ".join(missing)} '
                      f'(it has {", ".join(info.fields)}).')
    return cls(tuple(fields), tuple(
        tuple(sorted({_normal(f, v) for v in info.fields[f]} - {''}))
        for f in fields))

  @property
  def names(self) -> list[str]:
    """The columns, as 'field=value'."""
    return [f'{f}={v}' for f, vocab in zip(self.fields, self.values)
            for v in vocab]

  def encode(self, info: UserInfo) -> np.ndarray:
    """[users, columns] one-hot rows of `info`'s users."""
    return np.stack([self.encode_one({f: info.fields[f][row]
                                      for f in self.fields if f in info.fields})
                     for row in range(len(info))]) if len(info) else (
                         np.zeros((0, len(self.names)), np.float32))

  def encode_one(self, attributes: dict[str, str]) -> np.ndarray:
    """One user's row from {field: value} (fields left out are unknown).

    Raises:
      ValueError: a field the encoder does not use, or a value its training
        users never had (one line naming the known values).
    """
    row = []
    for field, vocab in zip(self.fields, self.values):
      value = _normal(field, attributes.get(field, ''))
      if value and value not in vocab:
        raise ValueError(f'{field} {value!r} is not one of the training '
                         f'users\': {", ".join(vocab)}.')
      row.extend(float(value == v) for v in vocab)
    unknown = sorted(set(attributes) - set(self.fields))
    if unknown:
      raise ValueError(f'no user field {", ".join(unknown)} (known: '
                       f'{", ".join(self.fields)}).')
    return np.array(row, np.float32)


def _normal(field: str, value: str) -> str:
  value = str(value).strip()
  return age_band(value) if field == 'age' else value
