"""The TFF execution runtime: started per run, shut down deterministically.

TFF's local C++ execution context starts a `worker_binary` child process and
only kills it in a `__del__`; at interpreter exit that `__del__` can run after
the `subprocess` module is torn down and fail, leaving the worker alive and
holding the parent's stdout/stderr open (a shell pipeline or CI then hangs).
`shutdown` swaps in a context that owns no worker and collects the old one
while the interpreter is whole, so the worker is stopped then and there.
"""

import contextlib
import gc

import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context


def start() -> None:
  """Makes a fresh local C++ execution context the default."""
  tff.backends.native.set_sync_local_cpp_execution_context()


def shutdown() -> None:
  """Stops the local worker; TFF computations raise until `start`."""
  tff.framework.set_default_context(
      runtime_error_context.create_runtime_error_context())
  gc.collect()


@contextlib.contextmanager
def local_runtime():
  """Runs the body with a fresh local runtime and stops it afterwards."""
  start()
  try:
    yield
  finally:
    shutdown()
