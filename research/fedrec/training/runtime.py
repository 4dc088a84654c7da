"""The TFF execution runtime: started per run, shut down deterministically.

TFF's local C++ execution context starts a `worker_binary` child process and
stops it only in a `__del__` that sends SIGINT and waits. Two things go wrong:
at interpreter exit that `__del__` may run after the `subprocess` module is
torn down, leaving the worker alive and holding the parent's stdout/stderr
open (a shell pipeline or CI then hangs); and a process started in the
background by a non-interactive shell inherits SIGINT as *ignored*, so the
worker never exits and the wait hangs forever.

`start` makes SIGINT interrupt again before a worker is spawned. `shutdown`
first swaps in a context that owns no worker (so no new computation starts),
then stops this process's workers itself (SIGINT, then SIGKILL after a grace
period), and stops them once more after releasing the old context, because a
computation interrupted mid-call (say by SIGTERM) can restart its worker from
a background thread. An exit hook does the same as a last resort, so no worker
outlives the run and nothing waits on one that will not exit.
"""

import atexit
import contextlib
import gc
import signal
import threading
import time

import psutil
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context

_GRACE_SECONDS = 10.0
_exit_hook_registered = False


def start(secure_aggregation: bool = False) -> None:
  """Makes a fresh local C++ execution context the default.

  With `secure_aggregation`, TFF's test context, which runs the secure-sum
  intrinsics as plain sums after the factories' client-side integer encoding
  (so results are those of a real secure aggregation, without the protocol).
  """
  global _exit_hook_registered
  if not _exit_hook_registered:
    atexit.register(_stop_workers)
    _exit_hook_registered = True
  if (threading.current_thread() is threading.main_thread() and
      signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
    # Spawned children inherit an ignored SIGINT; TFF stops its worker with it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
  if secure_aggregation:
    tff.backends.test.set_sync_test_cpp_execution_context()
  else:
    tff.backends.native.set_sync_local_cpp_execution_context()


def _worker_children() -> list[psutil.Process]:
  workers = []
  for child in psutil.Process().children():
    try:
      if 'worker_binary' in ' '.join(child.cmdline()[:1]):
        workers.append(child)
    except psutil.Error:
      continue
  return workers


def _stopped(process: psutil.Process) -> bool:
  try:
    return process.status() == psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return True


def _stop_workers() -> None:
  """Interrupts this process's TFF workers; kills those that ignore it.

  Leaves them as zombies for TFF's own `Popen.wait` to reap.
  """
  workers = _worker_children()
  for signum in (signal.SIGINT, signal.SIGKILL):
    for worker in workers:
      with contextlib.suppress(psutil.Error):
        worker.send_signal(signum)
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline and not all(map(_stopped, workers)):
      time.sleep(0.05)
    workers = [w for w in workers if not _stopped(w)]
    if not workers:
      return


def shutdown() -> None:
  """Stops the local worker; TFF computations raise until `start`."""
  # Holding the old context keeps its `__del__` (which waits on the worker)
  # from running before the worker has been stopped.
  old_context = tff.framework.get_context_stack().current
  tff.framework.set_default_context(
      runtime_error_context.create_runtime_error_context())
  _stop_workers()
  del old_context
  gc.collect()
  _stop_workers()


@contextlib.contextmanager
def local_runtime(secure_aggregation: bool = False):
  """Runs the body with a fresh local runtime and stops it afterwards."""
  start(secure_aggregation)
  try:
    yield
  finally:
    shutdown()
