"""JSON for the project's configuration dataclasses and result files.

`to_jsonable` turns (nested) dataclasses, enums and NumPy scalars into plain
JSON values and `from_jsonable` turns them back, given the dataclass type;
`write_json_atomically` / `write_text_atomically` never leave a half-written
file. TensorFlow-free, so
tools that only read results (recommend.py) stay light.
"""

import collections
import dataclasses
import enum
import json
import math
import os
import tempfile
import types
import typing
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
  """Dataclasses / enums / tuples -> plain JSON values (NaN / inf -> None)."""
  if dataclasses.is_dataclass(value):
    return collections.OrderedDict(
        (f.name, to_jsonable(getattr(value, f.name)))
        for f in dataclasses.fields(value))
  if isinstance(value, enum.Enum):
    return value.value
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, dict):
    return collections.OrderedDict((k, to_jsonable(v)) for k, v in value.items())
  if isinstance(value, (np.floating, np.integer)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None  # JSON has no NaN or infinity: null.
  return value


def from_jsonable(cls: Any, value: Any) -> Any:
  """The inverse of `to_jsonable` for a value of (annotated) type `cls`."""
  origin = typing.get_origin(cls)
  if origin in (typing.Union, types.UnionType):
    if value is None:
      return None
    (cls,) = [a for a in typing.get_args(cls) if a is not type(None)]
    return from_jsonable(cls, value)
  if dataclasses.is_dataclass(cls):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: from_jsonable(hints[f.name], value[f.name])
                  for f in dataclasses.fields(cls) if f.name in value})
  if isinstance(cls, type) and issubclass(cls, enum.Enum):
    return cls(value)
  if origin is tuple:
    args = typing.get_args(cls)
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[T, ...]
      return tuple(from_jsonable(args[0], v) for v in value)
    return tuple(from_jsonable(a, v) for a, v in zip(args, value))
  return value


def write_text_atomically(path: str, text: str) -> None:
  """Writes `text` to a temporary file, then renames it over `path`.

  A reader never sees a half-written file, and a killed writer leaves none.
  """
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', newline='') as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from others.
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json_atomically(path: str, value: Any) -> None:
  """Writes `value` as indented JSON, atomically."""
  write_text_atomically(path, json.dumps(to_jsonable(value), indent=2, allow_nan=False) + '\n')
