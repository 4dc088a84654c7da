"""The client store: a split corpus in an embedded SQLite database.

One row per rating, keyed by client id (the dense user index as a string):

    ratings(client_id TEXT, split_name TEXT, user INTEGER, item INTEGER,
            rating REAL)            -- indexed on (client_id, split_name)
    client_metadata(client_id TEXT, split_name TEXT, num_examples INTEGER)
    store_info(key TEXT, value TEXT)

`split_name` is `train` (training clients' ratings), `val` / `test` (ratings to
score) and `val_support` / `test_support` (ratings that reconstruct an unseen
user's embedding under the user-disjoint split). An evaluation client of split S
reads its rows of `train`, `S_support` and `S`, so no rating is stored twice.

The database is written once per (corpus, split) content hash and reused by
every later run with the same data (`create_client_store` returns the cached
file). It is read per client id by `tf.data.experimental.SqlDataset` inside a
TFF dataset computation, like `tff.simulation.datasets.SqlClientData`, so
client datasets are built in the TFF runtime from the client id alone and never
serialized from Python each round.
"""

import collections
import contextlib
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.data import splits as splits_lib
from research.fedrec.utils import json_io

_FORMAT_VERSION = 1
TRAIN = 'train'
EVAL_SPLITS = ('val', 'test')

# Element of a raw client dataset: one rating, with `is_query` = 1 for ratings
# to score and 0 for ratings to train / reconstruct on, and the round number
# when the client id carries one (see `round_client_ids`), else 0.
ELEMENT_SPEC = collections.OrderedDict(
    user=tf.TensorSpec([], tf.int64),
    item=tf.TensorSpec([], tf.int64),
    rating=tf.TensorSpec([], tf.float32),
    is_query=tf.TensorSpec([], tf.int64),
    round=tf.TensorSpec([], tf.int64),
)
ROUND_SEPARATOR = '/'


def round_client_ids(client_ids, round_num: int) -> list[str]:
  """Client ids that also tell the dataset the round (`"<id>/<round>"`).

  A client's dataset is built in the TFF runtime from its id alone; the round
  lets per-round randomness (implicit feedback's negatives) differ between the
  rounds a client takes part in while staying a pure function of the id.
  """
  return [f'{c}{ROUND_SEPARATOR}{round_num}' for c in client_ids]


def split_hash(split: splits_lib.Split) -> str:
  """A content hash of the split (and so of corpus and split settings)."""
  digest = hashlib.sha256(f'fedrec-client-store-v{_FORMAT_VERSION}'.encode())
  for table in (split.train, split.val.support, split.val.query,
                split.test.support, split.test.query):
    digest.update(table.content_hash().encode())
  return digest.hexdigest()


def _rows(table, split_name: str):
  order = np.argsort(table.users, kind='stable')
  users = table.users[order]
  return zip(users.astype(str).tolist(), [split_name] * len(users),
             users.tolist(), table.items[order].tolist(),
             table.ratings[order].astype(np.float64).tolist())


def _parts(split: splits_lib.Split):
  """`(split_name, table)` of every stored table."""
  parts = [(TRAIN, split.train)]
  for name in EVAL_SPLITS:
    partition = getattr(split, name)
    parts.append((name, partition.query))
    # Holdout / leave-one-out support is the train split itself.
    if partition.support is not split.train:
      parts.append((f'{name}_support', partition.support))
  return parts


def check_store(path: str, content_hash: str,
                num_rows: int) -> Optional[str]:
  """Why the store at `path` cannot be trusted, or None if it is sound.

  Checks the file's bytes against the SHA-256 recorded beside it when it was
  written (any edit of a rating), SQLite's own page and index consistency
  (`PRAGMA quick_check`), the recorded content hash and format, and the
  number of rating rows.
  """
  try:
    with open(checksum_path(path)) as f:
      recorded = f.read().strip()
  except OSError:
    return 'no checksum recorded beside it'
  try:
    if file_digest(path) != recorded:
      return 'its bytes changed since it was written (SHA-256)'
  except OSError as e:
    return e.strerror
  try:
    con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
      check = con.execute('PRAGMA quick_check').fetchone()[0]
      if check != 'ok':
        return f'integrity check failed: {check}'
      info = dict(con.execute('SELECT key, value FROM store_info').fetchall())
      if info.get('content_hash') != content_hash:
        return 'it records another content hash'
      if info.get('format_version') != json.dumps(_FORMAT_VERSION):
        return f'format version {info.get("format_version")}'
      rows = con.execute('SELECT COUNT(*) FROM ratings').fetchone()[0]
      if rows != num_rows:
        return f'{rows} rating rows, expected {num_rows}'
    finally:
      con.close()
  except sqlite3.Error as e:
    return str(e)
  return None


def checksum_path(path: str) -> str:
  """Where the SHA-256 of the store at `path` is recorded."""
  return path + '.sha256'


def file_digest(path: str) -> str:
  """The SHA-256 of a file's bytes (about 1 s per GB)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def log_to_stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def create_client_store(split: splits_lib.Split, cache_dir: str,
                        log=log_to_stderr) -> str:
  """Writes `split` to `<cache_dir>/<hash>.sqlite` unless already there.

  A cached store is verified before it is reused (`check_store`); a damaged
  one (truncated, overwritten, from another version) is rebuilt, with one
  line through `log`. The file is written under a temporary name and renamed
  into place, so an interrupted write never leaves a store that looks
  complete.

  Returns:
    The database path.

  Raises:
    ValueError: the cache folder cannot be written (one line).
  """
  content_hash = split_hash(split)
  path = os.path.join(cache_dir, f'client_store_{content_hash[:16]}.sqlite')
  parts = _parts(split)
  num_rows = sum(len(table) for _, table in parts)
  if os.path.exists(path):
    problem = check_store(path, content_hash, num_rows)
    if problem is None:
      return path
    log(f'{path}: damaged client store ({problem}); rebuilding it.')
  try:
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(suffix='.sqlite.tmp', dir=cache_dir)
  except OSError as e:
    raise ValueError(f'{cache_dir}: cannot write the client store cache '
                     f'({e.strerror}); give a writable --cache_dir.') from None
  os.close(fd)
  try:
    with contextlib.closing(sqlite3.connect(tmp_path)) as con, con:
      con.execute('CREATE TABLE ratings (client_id TEXT NOT NULL, split_name '
                  'TEXT NOT NULL, user INTEGER NOT NULL, item INTEGER NOT '
                  'NULL, rating REAL NOT NULL)')
      con.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, '
                  'split_name TEXT NOT NULL, num_examples INTEGER NOT NULL)')
      con.execute('CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT)')
      for split_name, table in parts:
        con.executemany('INSERT INTO ratings VALUES (?, ?, ?, ?, ?)',
                        _rows(table, split_name))
        users, counts = np.unique(table.users, return_counts=True)
        con.executemany('INSERT INTO client_metadata VALUES (?, ?, ?)',
                        zip(users.astype(str).tolist(),
                            [split_name] * len(users), counts.tolist()))
      con.execute('CREATE INDEX ratings_by_client ON ratings (client_id, '
                  'split_name)')
      con.execute('INSERT INTO store_info VALUES (?, ?)',
                  ('content_hash', content_hash))
      con.execute('INSERT INTO store_info VALUES (?, ?)',
                  ('format_version', json.dumps(_FORMAT_VERSION)))
    os.chmod(tmp_path, 0o644)
    digest = file_digest(tmp_path)
    os.replace(tmp_path, path)
    # After the store: a store without its checksum is rebuilt, never trusted.
    json_io.write_text_atomically(checksum_path(path), digest + '\n')
  except (OSError, sqlite3.OperationalError) as e:
    raise ValueError(f'{cache_dir}: cannot write the client store ({e}); '
                     'give a writable --cache_dir with free space.') from None
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
  return path


def get_client_ids(path: str, split_name: str) -> list[str]:
  """The clients with rows in `split_name`, in increasing user order."""
  with sqlite3.connect(path) as con:
    rows = con.execute(
        'SELECT client_id FROM client_metadata WHERE split_name = ? ORDER BY '
        'CAST(client_id AS INTEGER)', (split_name,)).fetchall()
  return [r[0] for r in rows]


def get_num_examples(path: str, split_name: str) -> dict[str, int]:
  """Rows per client in `split_name`."""
  with sqlite3.connect(path) as con:
    rows = con.execute(
        'SELECT client_id, num_examples FROM client_metadata WHERE split_name '
        '= ?', (split_name,)).fetchall()
  return dict(rows)


def read_client_rows(path: str, client_id: str, split_name: str) -> np.ndarray:
  """Rows (user, item, rating) of one client in one split, for inspection."""
  with sqlite3.connect(path) as con:
    return np.array(con.execute(
        'SELECT user, item, rating FROM ratings WHERE client_id = ? AND '
        'split_name = ? ORDER BY rowid', (client_id, split_name)).fetchall())


def _client_dataset_options() -> tf.data.Options:
  """tf.data options of every client dataset: no graph rewrites, no autotuning.

  TF rewrites a dataset's graph (map parallelization, fusion, an autotuning
  model) each time an iterator is made, which for a client dataset means every
  client of every round, while the dataset holds a few hundred rows. Profiling
  a 100-client FedRecon round put a quarter of it there. The rewrites change
  neither the elements nor their order, so skipping them changes no result.
  """
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  return options


def _build_dataset_fn(path: str, split_name: str, with_heldout: bool = False):
  """A TF-serializable client id -> dataset function for one split."""
  if split_name == TRAIN and with_heldout:
    where = "split_name IN ('train', 'val', 'test')"
    query_case = "CASE split_name WHEN 'train' THEN 0 ELSE 1 END"
  elif split_name == TRAIN:
    where, query_case = "split_name = 'train'", '0'
  else:
    where = (f"split_name IN ('train', '{split_name}_support', "
             f"'{split_name}')")
    query_case = f"CASE split_name WHEN '{split_name}' THEN 1 ELSE 0 END"

  def dataset_fn(client_id: tf.Tensor) -> tf.data.Dataset:
    parts = tf.concat(
        [tf.strings.split(client_id, ROUND_SEPARATOR), ['0']], axis=0)
    round_num = tf.strings.to_number(parts[1], tf.int64)
    query = tf.strings.join([
        f'SELECT user, item, rating, {query_case} FROM ratings WHERE '
        "client_id = '", parts[0], f"' AND {where} ORDER BY rowid"
    ])
    rows = tf.data.experimental.SqlDataset(
        'sqlite', path, query, (tf.int64, tf.int64, tf.float64, tf.int64))
    rows = rows.with_options(_client_dataset_options())
    return rows.map(lambda u, i, r, q: collections.OrderedDict(
        user=u, item=i, rating=tf.cast(r, tf.float32), is_query=q,
        round=round_num))

  return dataset_fn


def create_client_data(
    path: str, split_name: str,
    with_heldout: bool = False) -> tff.simulation.datasets.ClientData:
  """A `ClientData` over one split of the store.

  For an evaluation split (`val` / `test`) each client's dataset holds its
  support ratings (`is_query` = 0) followed by its query ratings (1). With
  `with_heldout` (training only), a training client's dataset also holds its
  own validation and test query ratings, flagged `is_query` = 1: the
  published PFedRec protocol's negative sampling avoids them
  (`PipelineConfig.exclude_heldout`); they are never trained on.
  """
  if split_name != TRAIN and split_name not in EVAL_SPLITS:
    raise ValueError(f'Unknown split {split_name!r}.')
  clients_split = TRAIN if split_name == TRAIN else split_name
  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      get_client_ids(path, clients_split),
      _build_dataset_fn(path, split_name, with_heldout and split_name == TRAIN))
