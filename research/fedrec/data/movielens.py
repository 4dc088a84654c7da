"""Readers for the MovieLens corpora and for a user's own ratings CSV.

GroupLens (https://grouplens.org/datasets/movielens/) ships its corpora in three
formats, all read here without keeping a Python object per line (NumPy's C
`loadtxt` parses the whole file; only on a parse failure is the file re-scanned
line by line to name the first bad line):

| corpus                      | file          | separator | header | scale        |
|-----------------------------|---------------|-----------|--------|--------------|
| ml-100k                     | `u.data`      | tab       | no     | 1..5         |
| ml-1m, ml-10m               | `ratings.dat` | `::`      | no     | 1..5 / 0.5.. |
| ml-20m, ml-25m, ml-latest*  | `ratings.csv` | `,`       | yes    | 0.5..5 halves|

The generic format for a user's own corpus is a CSV `user,item,rating[,timestamp]`
(ids may be any strings, a header line is optional, ratings on a scale the user
states). Harper & Konstan, "The MovieLens Datasets: History and Context",
ACM TiiS 2015.
"""

import csv
import dataclasses
import io
import os
import re
from typing import Optional

import numpy as np

from research.fedrec.data import ratings as ratings_lib

DataError = ratings_lib.DataError


@dataclasses.dataclass(frozen=True)
class CorpusFormat:
  """Where a corpus keeps its ratings and how they are written."""

  name: str
  folder: str  # The folder name inside GroupLens's zip.
  filename: str
  separator: str
  header: Optional[str]
  scale: ratings_lib.RatingScale


FORMATS = {
    f.name: f for f in [
        CorpusFormat('ml-100k', 'ml-100k', 'u.data', '\t', None,
                     ratings_lib.STARS_1_TO_5),
        CorpusFormat('ml-1m', 'ml-1m', 'ratings.dat', '::', None,
                     ratings_lib.STARS_1_TO_5),
        CorpusFormat('ml-10m', 'ml-10M100K', 'ratings.dat', '::', None,
                     ratings_lib.HALF_STARS),
        CorpusFormat('ml-20m', 'ml-20m', 'ratings.csv', ',',
                     'userId,movieId,rating,timestamp', ratings_lib.HALF_STARS),
        CorpusFormat('ml-25m', 'ml-25m', 'ratings.csv', ',',
                     'userId,movieId,rating,timestamp', ratings_lib.HALF_STARS),
        CorpusFormat('ml-latest', 'ml-latest', 'ratings.csv', ',',
                     'userId,movieId,rating,timestamp', ratings_lib.HALF_STARS),
        CorpusFormat('ml-latest-small', 'ml-latest-small', 'ratings.csv', ',',
                     'userId,movieId,rating,timestamp', ratings_lib.HALF_STARS),
    ]
}
MOVIELENS_NAMES = tuple(FORMATS)

_NUMERIC_DTYPE = [('user', np.int64), ('item', np.int64),
                  ('rating', np.float32), ('timestamp', np.int64)]


def find_ratings_file(name: str, data_dir: str) -> str:
  """Returns the ratings file of corpus `name` under `data_dir`.

  `data_dir` may be the corpus folder itself (`data/ml-1m`) or its parent
  (`data/`, holding `ml-1m/`), as unpacked from GroupLens's zip.

  Raises:
    DataError: `data_dir` or the ratings file does not exist.
  """
  fmt = FORMATS[name]
  if not os.path.isdir(data_dir):
    raise DataError(f'--data_dir={data_dir}: no such directory (get {name} '
                    f'with: python data/download_movielens.py --corpus={name}).')
  for candidate in (os.path.join(data_dir, fmt.filename),
                    os.path.join(data_dir, fmt.folder, fmt.filename)):
    if os.path.isfile(candidate):
      return candidate
  raise DataError(
      f'--data_dir={data_dir}: no {fmt.filename} here or in {fmt.folder}/ '
      f'(expected the {name} corpus; get it with: python '
      f'data/download_movielens.py --corpus={name}).')


def detect_corpus(data_dir: str) -> str:
  """Names the MovieLens corpus whose files are in `data_dir`.

  Raises:
    DataError: no known corpus is found.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f'--data_dir={data_dir}: no such directory.')
  for name, fmt in FORMATS.items():
    for folder in (data_dir, os.path.join(data_dir, fmt.folder)):
      path = os.path.join(folder, fmt.filename)
      if not os.path.isfile(path):
        continue
      if os.path.basename(os.path.normpath(folder)) in (fmt.folder, name):
        return name
  for name in ('ml-100k', 'ml-1m'):  # Bare files in an unnamed folder.
    if os.path.isfile(os.path.join(data_dir, FORMATS[name].filename)):
      return name
  if os.path.isfile(os.path.join(data_dir, 'ratings.csv')):
    return 'ml-latest-small'
  raise DataError(f'--data_dir={data_dir}: found no MovieLens ratings file '
                  '(u.data, ratings.dat or ratings.csv).')


_BOM = b'\xef\xbb\xbf'
_BLANK = r'[ \t\r]*'
# One field of each kind, as the strict line check matches it. Ids are decimal
# integers below 10^18 (so they fit int64 and never wrap); ratings decimals.
_INTEGER = r' *\d{1,18} *'
_NUMBER = r' *[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)? *'
_TIMESTAMP = r' *-?\d{1,18}(?:\.\d*)? *'  # CSV: seconds, maybe '.0'.
_STRING = r' *[^,\s#][^,\n]*?'  # A non-empty id that does not start with '#'.


def _read_text(path: str, separator: str) -> str:
  """Reads a ratings file as text (a leading UTF-8 BOM is dropped).

  Raises:
    DataError: unreadable, or not text (a NUL byte); names the file.
  """
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror}).') from e
  if raw.startswith(_BOM):
    raw = raw[len(_BOM):]
  if b'\x00' in raw:
    line = raw.count(b'\n', 0, raw.index(b'\x00')) + 1
    raise DataError(f'{path}:{line}: not a text file (NUL byte); expected '
                    f'{_describe_separator(separator)}-separated ratings.')
  # MovieLens files are Latin-1; ids and numbers are ASCII either way.
  return raw.decode('latin-1')


def _describe_separator(separator: str) -> str:
  return {'\t': 'tab', ',': 'comma'}.get(separator, repr(separator))


def _field_problem(line: str, separator: str, kinds: tuple[str, ...],
                   counts: tuple[int, ...]) -> str:
  """Why `line` is not `kinds` fields separated by `separator`."""
  fields = line.rstrip('\r').split(separator)
  if len(fields) not in counts:
    want = ' or '.join(map(str, counts))
    return (f'expected {want} fields separated by '
            f'{_describe_separator(separator)}, found {len(fields)} in '
            f'{line.strip()[:80]!r}')
  names = {_INTEGER: 'an integer below 10^18', _NUMBER: 'a number',
           _TIMESTAMP: 'a timestamp (integer seconds)',
           _STRING: 'a non-empty id (not starting with #)'}
  for index, (field, kind) in enumerate(zip(fields, kinds)):
    if not re.fullmatch(kind, field):
      if kind == _NUMBER:
        return f'field {index + 1} is not a number: {field.strip()!r}'
      return f'field {index + 1} is not {names[kind]}: {field.strip()[:40]!r}'
  return f'malformed line {line.strip()[:80]!r}'


def _check_lines(text: str, path: str, separator: str, kinds: tuple[str, ...],
                 skip: int):
  """Rejects the first line that is not exactly `kinds` fields.

  Blank lines are allowed (and skipped); nothing is a comment.

  Returns:
    `line_of`: data row index -> its line number in the file (1-based).

  Raises:
    DataError: naming the file, the line and what is wrong with it.
  """
  valid = re.escape(separator).join(kinds)
  body_start = 0
  for _ in range(skip):
    body_start = text.find('\n', body_start) + 1 or len(text)
  bad = re.compile(rf'^(?!{_BLANK}$)(?!(?:{valid})\r?$).*$', re.M)
  match = bad.search(text, body_start)
  if match is not None:
    number = text.count('\n', 0, match.start()) + 1
    problem = _field_problem(match.group(0), separator, kinds, (len(kinds),))
    raise DataError(f'{path}:{number}: {problem}.')
  blank_lines = [text.count('\n', 0, m.start()) + 1
                 for m in re.compile(rf'^{_BLANK}$', re.M).finditer(
                     text, body_start)]

  def line_of(row: int) -> int:
    line = row + 1 + skip
    for blank in blank_lines:
      if blank <= line:
        line += 1
    return line

  return line_of


def read_movielens(name: str, data_dir: str,
                   duplicates: ratings_lib.DuplicatePolicy = (
                       ratings_lib.DuplicatePolicy.LATEST)
                   ) -> ratings_lib.Ratings:
  """Reads and validates corpus `name` (a key of `FORMATS`) from `data_dir`.

  Every line must be exactly user, item, rating, timestamp (integer ids and
  timestamp, numeric rating) with the corpus's separator; blank lines are
  skipped, nothing is a comment.

  Raises:
    DataError: missing, empty or malformed file, or a rating off the corpus's
      scale; the message names the file and line.
  """
  fmt = FORMATS[name]
  path = find_ratings_file(name, data_dir)
  text = _read_text(path, fmt.separator)
  if not text.strip():
    raise DataError(f'{path}: no ratings found (the file is empty).')
  skip = 0
  if fmt.header is not None:
    first = text.split('\n', 1)[0].strip()
    if first != fmt.header:
      raise DataError(f'{path}:1: expected the header {fmt.header!r}, found '
                      f'{first[:80]!r}.')
    skip = 1
  line_of = _check_lines(text, path, fmt.separator,
                         (_INTEGER, _INTEGER, _NUMBER, _INTEGER), skip)
  if fmt.separator == '::':
    text = text.replace('::', '\t')
  sep = '\t' if fmt.separator in ('\t', '::') else fmt.separator
  table = np.loadtxt(io.StringIO(text), delimiter=sep, dtype=_NUMERIC_DTYPE,
                     skiprows=skip, ndmin=1, comments=None)
  if table.size == 0:
    raise DataError(f'{path}: no ratings found (the file is empty).')
  table = ratings_lib.Ratings(table['user'], table['item'], table['rating'],
                              table['timestamp'])
  return ratings_lib.validate(table, fmt.scale, path, duplicates,
                              line_of=line_of)


def _is_number(field: str) -> bool:
  try:
    float(field)
    return True
  except ValueError:
    return False


def _unquoted(text: str, path: str) -> str:
  """`text` with RFC 4180 quoting removed, line by line (same line numbers).

  Raises:
    DataError: a quoted field holds a comma or a line break (ids cannot).
  """
  lines = text.split('\n')
  for number, line in enumerate(lines):
    if '"' not in line:
      continue
    try:
      (fields,) = csv.reader([line], strict=True)
    except (csv.Error, ValueError):
      raise DataError(f'{path}:{number + 1}: unbalanced quotes in '
                      f'{line.strip()[:80]!r}.') from None
    if any(',' in f or '\r' in f for f in fields):
      raise DataError(f'{path}:{number + 1}: a quoted field holds a comma: '
                      f'{line.strip()[:80]!r} (ids and ratings cannot).')
    lines[number] = ','.join(fields)
  return '\n'.join(lines)


def read_csv(path: str, scale: ratings_lib.RatingScale,
             duplicates: ratings_lib.DuplicatePolicy = (
                 ratings_lib.DuplicatePolicy.LATEST)) -> ratings_lib.Ratings:
  """Reads a user's own `user,item,rating[,timestamp]` CSV and validates it.

  Ids are kept as strings (any spelling that does not start with `#`). A first
  (non-blank) line is a header only when none of its 3 or 4 fields is a
  number (e.g. `user,item,rating,timestamp`); every other line must have as
  many fields as the first, a numeric rating and an integer timestamp. Fields
  may be quoted as RFC 4180 writes them (`"1","2","4.5"` is a rating). A missing timestamp
  column gives every rating timestamp 0 (temporal splits then fall back to
  the seeded tie-break). Blank lines are skipped; a leading UTF-8 BOM is
  dropped.

  Raises:
    DataError: the file is missing, empty or malformed, or a rating is off
      `scale`; the message names the line.
  """
  if os.path.isdir(path):
    path = os.path.join(path, 'ratings.csv')
  if not os.path.isfile(path):
    raise DataError(f'--data_dir={path}: no such file (expected a CSV of '
                    'user,item,rating[,timestamp]).')
  text = _read_text(path, ',')
  if not text.strip():
    raise DataError(f'{path}: no ratings found (the file is empty).')
  if '"' in text:
    text = _unquoted(text, path)
  # The first line that is not blank: a header, or the first rating.
  first = re.compile(rf'^(?!{_BLANK}$).*$', re.M).search(text)
  first_number = text.count('\n', 0, first.start()) + 1
  first_fields = first.group(0).rstrip('\r').split(',')
  num_columns = len(first_fields)
  if num_columns not in (3, 4):
    problem = _field_problem(first.group(0), ',', (), (3, 4))
    raise DataError(f'{path}:{first_number}: {problem}.')
  skip = 0 if any(_is_number(f) for f in first_fields) else first_number
  kinds = (_STRING, _STRING, _NUMBER, _TIMESTAMP)[:num_columns]
  line_of = _check_lines(text, path, ',', kinds, skip)
  columns = np.loadtxt(io.StringIO(text), delimiter=',', dtype=str,
                       skiprows=skip, ndmin=2, comments=None)
  if columns.size == 0:
    raise DataError(f'{path}: no ratings found (only a header).')
  values = columns[:, 2].astype(np.float32)
  stamps = (columns[:, 3].astype(np.float64).astype(np.int64)
            if num_columns == 4 else
            np.zeros(len(columns), np.int64))
  table = ratings_lib.Ratings(np.char.strip(columns[:, 0]),
                              np.char.strip(columns[:, 1]), values, stamps)
  return ratings_lib.validate(table, scale, path, duplicates, line_of=line_of)


# Where each corpus keeps its movie titles: (file, separator, encoding).
# ml-100k and ml-1m are Latin-1; the later corpora are UTF-8 (quoted CSV).
_TITLE_FILES = {
    'ml-100k': ('u.item', '|', 'latin-1'),
    'ml-1m': ('movies.dat', '::', 'latin-1'),
    'ml-10m': ('movies.dat', '::', 'utf-8'),
    'ml-20m': ('movies.csv', ',', 'utf-8'),
    'ml-25m': ('movies.csv', ',', 'utf-8'),
    'ml-latest': ('movies.csv', ',', 'utf-8'),
    'ml-latest-small': ('movies.csv', ',', 'utf-8'),
}


def read_titles(name: str, data_dir: str) -> dict[int, str]:
  """Movie id -> title from the corpus's movie file; {} if it is absent.

  Titles are a convenience for showing recommendations: a corpus folder
  without its movie file (or a line that does not parse) costs titles, never
  the run.
  """
  if name not in _TITLE_FILES:
    return {}
  filename, separator, encoding = _TITLE_FILES[name]
  path = None
  for folder in (data_dir, os.path.join(data_dir, FORMATS[name].folder)):
    if os.path.isfile(os.path.join(folder, filename)):
      path = os.path.join(folder, filename)
      break
  if path is None:
    return {}
  with open(path, encoding=encoding, errors='replace', newline='') as f:
    if separator == ',':
      rows = csv.reader(f)
      next(rows, None)  # movieId,title,genres
    else:
      rows = (line.rstrip('\r\n').split(separator) for line in f)
    titles = {}
    for row in rows:
      if len(row) >= 2 and row[0].strip().isdigit():
        titles[int(row[0])] = row[1].strip()
  return titles
