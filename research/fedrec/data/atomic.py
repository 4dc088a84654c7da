"""Reader for RecBole atomic files (`--dataset=atomic --data_dir=DIR`).

RecBole (Zhao et al., CIKM 2021) ships its conversions of dozens of public
recommendation datasets (MovieLens, Amazon, Yelp, Last.fm, Douban, ...) in one
format: a folder NAME/ holding NAME.inter (interactions) and, where the
dataset has them, NAME.item and NAME.user (side information), NAME.kg
(knowledge-graph triples) and NAME.link (item -> entity). Each file is UTF-8
text, tab-separated, with a typed header of `field:type` columns:

    user_id:token  item_id:token  rating:float  timestamp:float
    196            242            3             881250949

`token` is an id or a category, `token_seq` a space-separated list of them,
`float` a number and `float_seq` a space-separated list of numbers
(https://recbole.io/docs/user_guide/data/atomic_files.html).

NAME.inter needs `user_id:token` and `item_id:token`; `rating:float` and
`timestamp:float` are read when present. A corpus without a rating field is
implicit feedback only (every interaction a positive). Ids that are all
decimal integers are read as integers, so RecBole's ml-100k is the very
corpus GroupLens's u.data is; other ids stay strings. Timestamps are whole
seconds (a fractional part is dropped). Every line is validated: the field
count, numbers in float fields, non-empty ids; errors name the file and line.
"""

import dataclasses
import glob
import os
import re
from typing import Optional

import numpy as np

from research.fedrec.data import ratings as ratings_lib

DataError = ratings_lib.DataError

FIELD_TYPES = ('token', 'token_seq', 'float', 'float_seq')
USER, ITEM, RATING, TIMESTAMP = 'user_id', 'item_id', 'rating', 'timestamp'
# The files a dataset folder may hold, by suffix.
SUFFIXES = ('inter', 'item', 'user', 'kg', 'link')
_HEADER_FIELD = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*):([a-z_]+)$')
_NUMBER = re.compile(r'^ *[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)? *$')
_INTEGER_ID = re.compile(r'^\d{1,18}$')
_BOM = '\ufeff'


@dataclasses.dataclass(frozen=True)
class AtomicTable:
  """One atomic file: its typed fields and its columns as strings."""

  path: str
  fields: tuple[tuple[str, str], ...]  # (name, type) in file order.
  columns: dict[str, np.ndarray]  # name -> str array, one entry per row.
  lines: np.ndarray  # Row -> its line number in the file (1-based).

  def __len__(self) -> int:
    return len(self.lines)

  def type_of(self, name: str) -> Optional[str]:
    return dict(self.fields).get(name)


def find_files(data_dir: str) -> dict[str, str]:
  """The atomic files of the dataset in `data_dir`: suffix -> path.

  `data_dir` holds exactly one NAME.inter; NAME.item etc. are found beside it.

  Raises:
    DataError: no such folder, no .inter file, or several.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f'--data_dir={data_dir}: no such directory (expected a '
                    'RecBole dataset folder holding NAME.inter; get '
                    'MovieLens-100K with: python data/download_movielens.py '
                    '--corpus=ml-100k --source=recbole).')
  found = sorted(glob.glob(os.path.join(glob.escape(data_dir), '*.inter')))
  if not found:
    raise DataError(f'--data_dir={data_dir}: no .inter file here (expected a '
                    'RecBole dataset folder holding NAME.inter).')
  if len(found) > 1:
    names = ', '.join(os.path.basename(p) for p in found)
    raise DataError(f'--data_dir={data_dir}: several .inter files ({names}); '
                    'give the folder of one dataset.')
  stem = found[0][:-len('.inter')]
  return {suffix: f'{stem}.{suffix}' for suffix in SUFFIXES
          if os.path.isfile(f'{stem}.{suffix}')}


def dataset_name(data_dir: str) -> str:
  """NAME of the dataset in `data_dir` (its .inter file's stem)."""
  return os.path.basename(find_files(data_dir)['inter'])[:-len('.inter')]


def read_table(path: str, required: tuple[str, ...] = ()) -> AtomicTable:
  """Reads and validates one atomic file.

  Every non-blank line must have as many tab-separated fields as the header;
  `float` fields must be numbers and `float_seq` fields space-separated
  numbers; the `required` fields must be non-empty on every line (other
  fields may be empty: RecBole fills them with defaults).

  Raises:
    DataError: unreadable or not UTF-8 text, a malformed header, a missing
      required field, or a bad line; the message names the file and line.
  """
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f'{path}: cannot read ({e.strerror}).') from e
  if b'\x00' in raw:
    line = raw.count(b'\n', 0, raw.index(b'\x00')) + 1
    raise DataError(f'{path}:{line}: not a text file (NUL byte); expected a '
                    'tab-separated RecBole atomic file.')
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    line = raw.count(b'\n', 0, e.start) + 1
    raise DataError(f'{path}:{line}: not UTF-8 text (byte '
                    f'0x{raw[e.start]:02x}); RecBole atomic files are '
                    'UTF-8.') from None
  lines = text.lstrip(_BOM).split('\n')
  header = lines[0].rstrip('\r')
  fields = []
  for spec in header.split('\t'):
    match = _HEADER_FIELD.match(spec.strip())
    if match is None or match.group(2) not in FIELD_TYPES:
      raise DataError(
          f'{path}:1: header field {spec.strip()[:40]!r} is not name:type '
          f'with a type among {", ".join(FIELD_TYPES)} (a RecBole atomic '
          'file starts with a typed header).')
    fields.append((match.group(1), match.group(2)))
  names = [name for name, _ in fields]
  for name in set(names):
    if names.count(name) > 1:
      raise DataError(f'{path}:1: the header names {name!r} twice.')
  for name in required:
    if name not in names:
      raise DataError(f'{path}:1: no {name} field in the header '
                      f'{header[:80]!r} (a {os.path.splitext(path)[1]} file '
                      f'needs {", ".join(required)}).')
  numbers, rows = [], []
  for number, line in enumerate(lines[1:], start=2):
    line = line.rstrip('\r')
    if not line.strip():
      continue
    values = line.split('\t')
    if len(values) != len(fields):
      raise DataError(f'{path}:{number}: expected {len(fields)} '
                      f'tab-separated fields ({", ".join(names)}), found '
                      f'{len(values)} in {line.strip()[:80]!r}.')
    for (name, kind), value in zip(fields, values):
      value = value.strip()
      if not value:
        if name in required:
          raise DataError(f'{path}:{number}: field {name} is empty.')
        continue
      if kind == 'float' and not _NUMBER.match(value):
        raise DataError(f'{path}:{number}: field {name} is not a number: '
                        f'{value[:40]!r}.')
      if kind == 'float_seq' and not all(
          _NUMBER.match(v) for v in value.split()):
        raise DataError(f'{path}:{number}: field {name} is not a '
                        f'space-separated list of numbers: {value[:40]!r}.')
    numbers.append(number)
    rows.append(values)
  columns = {name: np.array([row[k].strip() for row in rows] or [], dtype=str)
             for k, (name, _) in enumerate(fields)}
  return AtomicTable(path, tuple(fields), columns,
                     np.array(numbers, np.int64))


def parse_ids(column: np.ndarray) -> np.ndarray:
  """Integer ids where every id is a decimal integer, else the strings."""
  if column.size and all(_INTEGER_ID.match(v) for v in np.unique(column)):
    return column.astype(np.int64)
  return column


def read_interactions(data_dir: str, scale: ratings_lib.RatingScale,
                      implicit: bool,
                      duplicates: ratings_lib.DuplicatePolicy = (
                          ratings_lib.DuplicatePolicy.LATEST)
                      ) -> ratings_lib.Ratings:
  """The ratings (or interactions) of NAME.inter in `data_dir`, validated.

  Args:
    data_dir: The dataset folder.
    scale: The legal ratings (`--rating_scale`).
    implicit: Whether the run reads interactions (a corpus without ratings
      can only be read so; its interactions are 1.0).
    duplicates: What to do with repeated (user, item) pairs.

  Raises:
    DataError: as `read_table`, a non-integer timestamp field type, a
      corpus without ratings under explicit feedback, or a rating off
      `scale`; the message names the file and line.
  """
  path = find_files(data_dir)['inter']
  table = read_table(path, required=(USER, ITEM))
  for name in (USER, ITEM):
    if table.type_of(name) != 'token':
      raise DataError(f'{path}:1: {name} has type {table.type_of(name)}, '
                      f'expected {name}:token.')
  for name in (RATING, TIMESTAMP):
    if table.type_of(name) not in (None, 'float'):
      raise DataError(f'{path}:1: {name} has type {table.type_of(name)}, '
                      f'expected {name}:float.')
  if not len(table):  # pylint: disable=g-explicit-length-test
    raise DataError(f'{path}: no interactions found (only a header).')
  line_of = lambda row: int(table.lines[row])
  for name in (RATING, TIMESTAMP):  # Present fields: a value on every line.
    if table.type_of(name) is not None:
      empty = np.flatnonzero(table.columns[name] == '')
      if empty.size:
        raise DataError(f'{path}:{line_of(int(empty[0]))}: field {name} is '
                        'empty.')
  if table.type_of(RATING) is not None:
    values = table.columns[RATING].astype(np.float32)
  elif implicit:
    values = np.ones(len(table), np.float32)
    scale = ratings_lib.RatingScale(1.0, 1.0, 1.0)
  else:
    raise DataError(f'{path}:1: no rating:float field: this corpus is '
                    'implicit feedback only (add --feedback=implicit).')
  if table.type_of(TIMESTAMP) is not None:
    stamps = np.floor(table.columns[TIMESTAMP].astype(np.float64))
    bad = np.flatnonzero(~np.isfinite(stamps) | (np.abs(stamps) >= 1e18))
    if bad.size:
      raise DataError(f'{path}:{line_of(int(bad[0]))}: timestamp '
                      f'{table.columns[TIMESTAMP][bad[0]]!r} is not a time '
                      'in seconds.')
    stamps = stamps.astype(np.int64)
  else:
    stamps = np.zeros(len(table), np.int64)
  ratings = ratings_lib.Ratings(parse_ids(table.columns[USER]),
                                parse_ids(table.columns[ITEM]), values, stamps)
  return ratings_lib.validate(ratings, scale, path, duplicates,
                              line_of=line_of)


def read_titles(data_dir: str) -> dict:
  """Item id -> title from NAME.item ({} without one, or without titles).

  The title is the first field whose name contains `title` (ml-100k:
  `movie_title:token_seq`). Titles are a convenience for showing
  recommendations: a dataset without them costs titles, never the run.
  """
  path = find_files(data_dir).get('item')
  if path is None:
    return {}
  table = read_table(path, required=(ITEM,))
  title = next((name for name, _ in table.fields if 'title' in name), None)
  if title is None:
    return {}
  return dict(zip(parse_ids(table.columns[ITEM]).tolist(),
                  table.columns[title].tolist()))
