"""Tests of JSON (de)serialization of configuration dataclasses."""

import dataclasses
import enum
import json
import os
from typing import Optional

import numpy as np
from absl.testing import absltest

from research.fedrec.utils import json_io


class Color(enum.Enum):
  RED = 'red'


@dataclasses.dataclass(frozen=True)
class Inner:
  scale: tuple[float, float, float] = (1.0, 5.0, 1.0)
  color: Color = Color.RED
  widths: tuple[int, ...] = (32, 16, 8)  # Variable length.
  colors: tuple[Color, ...] = ()


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str
  inner: Inner = dataclasses.field(default_factory=Inner)
  limit: Optional[int] = None
  other: Inner | None = None


class JsonIoTest(absltest.TestCase):

  def test_round_trip(self):
    value = Outer('x', Inner((0.5, 5.0, 0.5), widths=(4, 3, 2, 1),
                             colors=(Color.RED, Color.RED)),
                  limit=3, other=Inner())
    text = json.dumps(json_io.to_jsonable(value))
    self.assertEqual(json_io.from_jsonable(Outer, json.loads(text)), value)
    self.assertEqual(json_io.from_jsonable(Outer, {'name': 'y'}), Outer('y'))

  def test_numpy_scalars_and_atomic_write(self):
    path = os.path.join(self.create_tempdir().full_path, 'a.json')
    json_io.write_json_atomically(path, {'n': np.int64(3),
                                         'x': np.float32(0.5)})
    with open(path) as f:
      self.assertEqual(json.load(f), {'n': 3, 'x': 0.5})
    self.assertEqual(os.listdir(os.path.dirname(path)), ['a.json'])
    self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)


if __name__ == '__main__':
  absltest.main()
