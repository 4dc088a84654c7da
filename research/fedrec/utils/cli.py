"""Start-up shared by the absl binaries: one-line errors, clean signals.

`run(main, 'train.py')` replaces `app.run(main)`:

* A flag mistake (unknown flag, bad value, a non-finite number in a float
  flag, a stray positional argument) is one line, `train.py: error: ...`, and
  exit status 1, instead of absl's two lines or its full usage text. Flags
  are parsed before `main` runs, so a binary that imports TensorFlow inside
  `main` reports them without paying for that import.
* SIGTERM and SIGINT (Ctrl-C) raise `SystemExit(128 + signal)`, so `finally`
  blocks stop the TFF workers and no traceback is printed.
* `user_errors()` is the tuple of exceptions that are a user's mistake or a
  file-system problem (a read-only output directory, a damaged file), which a
  binary prints as one line.

Standard library and absl only.
"""

import atexit
import importlib
import importlib.util
import math
import os
import signal
import sys
import types
from typing import Callable, NoReturn

from absl import app
from absl import flags


def fail(binary: str, message: str) -> NoReturn:
  """Prints `binary: error: message` (one line) and exits with status 1."""
  print(f'{binary}: error: {" ".join(str(message).split())}',
        file=sys.stderr, flush=True)
  sys.exit(1)


def lazy_import(name: str) -> types.ModuleType:
  """The module `name`, executed on its first attribute access.

  A binary binds its TensorFlow-heavy library modules this way, so that
  defining and checking its flags costs nothing and a flag mistake is
  reported at once (the standard library's `importlib.util.LazyLoader`).
  Annotations naming such a module need `from __future__ import annotations`.
  """
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  if spec is None:
    raise ModuleNotFoundError(f'No module named {name!r}', name=name)
  spec.loader = importlib.util.LazyLoader(spec.loader)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def check_finite_floats() -> None:
  """Raises ValueError for a float flag set to nan or inf."""
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if (isinstance(flag.parser, flags.FloatParser) and flag.value is not None
        and not math.isfinite(flag.value)):
      raise ValueError(f'--{name}={flag.value}: expected a finite number.')


def _flags_parser(binary: str, preload: str):
  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
    except flags.Error as e:
      fail(binary, e)
    if len(rest) > 1:
      fail(binary, f'unexpected argument {rest[1]!r}: flags are written '
           '--name=value (--helpshort lists them).')
    try:
      check_finite_floats()
    except ValueError as e:
      fail(binary, e)
    if preload:
      # The flags are sound: now the heavy import. TensorFlow must be first
      # imported here, before `main`: imported inside absl's `main` call,
      # Keras later builds models with graph tensors ("'SymbolicTensor'
      # object has no attribute 'node'"), verified on TF 2.14 / Keras 2.14.
      importlib.import_module(preload)
    return rest
  return parse


_received = []  # The signal that is ending the process, if any.


def _exit_on_signal(signum, frame):
  del frame
  _received.append(signum)
  # Raising SystemExit runs the `finally` blocks that stop the TFF worker.
  sys.exit(128 + signum)


def install_signal_handlers() -> None:
  """SIGTERM and SIGINT end the process through SystemExit (no traceback)."""
  signal.signal(signal.SIGTERM, _exit_on_signal)
  signal.signal(signal.SIGINT, _exit_on_signal)


def user_errors() -> tuple[type[BaseException], ...]:
  """Exceptions a binary reports as one line: mistakes and I/O failures."""
  errors = (ValueError, OSError)
  tf = sys.modules.get('tensorflow')
  if tf is not None:
    errors += (tf.errors.PermissionDeniedError, tf.errors.NotFoundError,
               tf.errors.DataLossError, tf.errors.ResourceExhaustedError)
  return errors


def run(main: Callable[[list[str]], None], binary: str,
        preload: str = 'tensorflow') -> None:
  """`app.run(main)` with this module's flag parsing and signal handling.

  `preload` is imported once the flags have parsed and passed their checks
  (empty: nothing), so a flag mistake is reported before that cost.
  """
  install_signal_handlers()
  try:
    app.run(main, flags_parser=_flags_parser(binary, preload))
  except SystemExit:
    if not _received:
      raise
    # Interrupted: the `finally` blocks have run. Interpreter finalization
    # would now tear down TensorFlow's and gRPC's native threads mid-call
    # (seen as "terminate called ... exception not rethrown", SIGABRT), so
    # run the exit hooks and leave at once.
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + _received[0])  # pylint: disable=protected-access
