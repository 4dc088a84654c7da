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
* Any other exception that escapes `main` (a bug, an out-of-memory error in
  the TFF worker) is also one line, `train.py: error: unexpected ...`, naming
  the phase it happened in (utils/phases.py) and a log file that holds the
  command and the full traceback; exit status 1. The library has already
  rolled back a run directory the failed command created. Running out of
  memory says so, with the allocation that failed.
* Python warnings of the libraries (NumPy, TensorFlow) are not shown, so a
  user's mistake stays one line; `python -W default -m ...` shows them.

Standard library and absl only.
"""

import atexit
import gc
import importlib
import importlib.util
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from typing import Callable, NoReturn

from absl import app
from absl import flags

from research.fedrec.utils import phases


def fail(binary: str, message: str) -> NoReturn:
  """Prints `binary: error: message` (one line) and exits with status 1."""
  print(f'{binary}: error: {" ".join(str(message).split())}',
        file=sys.stderr, flush=True)
  sys.exit(1)


def reparse(module: types.ModuleType, binary: str, args) -> None:
  """Resets `module`'s flags to their defaults, then parses `args` as
  `binary`'s command line (other binaries' flags keep their values).

  Raises:
    ValueError: an unknown flag or a bad value (one line).
  """
  for flag in flags.FLAGS.get_key_flags_for_module(module):
    flag.unparse()
  try:
    flags.FLAGS([binary] + list(args))
  except flags.Error as e:
    raise ValueError(f'{binary} flags {" ".join(args)}: {e}') from None


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


def _in_gc_callback(frame) -> bool:
  """Whether `frame` runs inside a garbage-collector callback (e.g. jax's
  `_xla_gc_callback`), where Python prints and ignores any exception."""
  callbacks = {getattr(c, '__code__', None) for c in gc.callbacks}
  while frame is not None:
    if frame.f_code in callbacks:
      return True
    frame = frame.f_back
  return False


def _exit_on_signal(signum, frame):
  if _in_gc_callback(frame):
    # SystemExit would be printed with a traceback and ignored there: the
    # signal is delivered again once the callback has returned.
    threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
    return
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


def crash_log_path(binary: str) -> str:
  """Where an unexpected failure's traceback is written."""
  name = binary[:-len('.py')] if binary.endswith('.py') else binary
  return os.path.join(tempfile.gettempdir(), f'fedrec-{name}-'
                      f'{time.strftime("%Y%m%d-%H%M%S")}-{os.getpid()}.log')


def report_unexpected(binary: str, error: BaseException) -> NoReturn:
  """One line for an unexpected exception; its traceback goes to a file."""
  path = crash_log_path(binary)
  try:
    with open(path, 'w') as f:
      f.write(' '.join(shlex.quote(a) for a in sys.argv) + '\n\n')
      f.write(''.join(traceback.format_exception(
          type(error), error, error.__traceback__)))
    where = f'the full traceback is in {path}'
  except OSError as e:
    where = f'no traceback file ({e.strerror})'
  during = phases.phase_of(error)
  message = ' '.join(str(error).split())
  oom = re.search(r'OOM when allocating tensor with shape\[[^\]]*\]', message)
  if oom or isinstance(error, MemoryError):
    fail(binary, 'out of memory' + (f' while {during}' if during else '')
         + (f' ({oom.group(0)})' if oom else '') + ': a smaller model (e.g. '
         '--embedding_dim) or fewer --clients_per_round may fit '
         f'({where}).')
  if len(message) > 200:
    message = message[:200] + ' ...'
  fail(binary, f'unexpected {type(error).__name__}'
       + (f' while {during}' if during else '')
       + (f': {message}' if message else '')
       + f' ({where}; please report it with that file).')


def guarded(main: Callable[[list[str]], None],
            binary: str) -> Callable[[list[str]], None]:
  """`main` whose unexpected exceptions are `report_unexpected`."""
  def guarded_main(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      report_unexpected(binary, e)
  return guarded_main


def run(main: Callable[[list[str]], None], binary: str,
        preload: str = 'tensorflow') -> None:
  """`app.run(main)` with this module's flag parsing and signal handling.

  `preload` is imported once the flags have parsed and passed their checks
  (empty: nothing), so a flag mistake is reported before that cost.
  """
  install_signal_handlers()
  if not sys.warnoptions:  # Libraries' warnings are not the user's concern
    warnings.simplefilter('ignore')  # (python -W default shows them).
  try:
    app.run(guarded(main, binary),
            flags_parser=_flags_parser(binary, preload))
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
