"""What a long job is doing, so that an unexpected failure can say so.

    with phases.phase('training'):
      ...

An exception leaving the block carries the innermost phase it left
(`phase_of(error)`); the binaries' top-level handler (utils/cli.py) names it
in its one line. Standard library only: library code marks its phases
without depending on the binaries.
"""

import contextlib
from typing import Optional

_ATTRIBUTE = 'fedrec_phase'


@contextlib.contextmanager
def phase(name: str):
  """Marks `name` as the phase of everything inside the block."""
  try:
    yield
  except BaseException as e:
    if getattr(e, _ATTRIBUTE, None) is None:
      try:
        setattr(e, _ATTRIBUTE, name)
      except AttributeError:  # An exception without __dict__: unnamed.
        pass
    raise


def phase_of(error: BaseException) -> Optional[str]:
  """The innermost phase `error` was raised in, if any."""
  return getattr(error, _ATTRIBUTE, None)
