"""The TFF execution runtime: started per run, shut down deterministically.

TFF's local C++ execution context starts a `worker_binary` child process and
stops it only in a `__del__` that sends SIGINT and waits. Two things go wrong:
at interpreter exit that `__del__` may run after the `subprocess` module is
torn down, leaving the worker alive and holding the parent's stdout/stderr
open (a shell pipeline or CI then hangs); and a process started in the
background by a non-interactive shell inherits SIGINT as *ignored*, so the
worker never exits and the wait hangs forever.

A `Runtime` is one execution runtime, started per run and given to the
training loop. `Runtime.start` makes SIGINT interrupt again before a worker is
spawned. `release` (which `Runtime.shutdown` calls) first swaps in a context
that owns no worker (so no new computation starts), then stops this
process's workers itself (SIGINT, then SIGKILL after a grace period), and
stops them once more after releasing the old context, because a
computation interrupted mid-call (say by SIGTERM) can restart its worker from
a background thread. An exit hook does the same as a last resort, so no worker
outlives the run and nothing waits on one that will not exit.

Beyond one worker, TFF's own machinery spreads a round's clients:
`Workers(num_workers=N)` starts N local `worker_binary` processes and
`Workers(addresses=...)` connects to workers already serving elsewhere (started
with `worker_binary --port=P`); either way a `MergeableCompExecutionContext`
splits each computation's clients into one sub-round per worker, runs them in
parallel over gRPC and merges the partial aggregates. Only the order in which
floating-point partial sums are added differs from one worker, so metrics
agree to float32 rounding (about 1e-7 relative).

Over a long run TFF's C++ worker grows (about 0.1 MB per round of 20 small
clients here, in the worker process only) and its rounds slow down (0.60 to
0.79 s over 600 such rounds), as upstream users also report. The training loop
calls `Runtime.round_done` after each round, which restarts the local workers
every `RESTART_EVERY_ROUNDS` rounds: a round's state comes back to Python after every
round, so nothing is lost and results are unchanged; the restart costs one
worker start-up and the re-instantiation of the computation (a second or two
every `RESTART_EVERY_ROUNDS` rounds). Workers at `--worker_addresses` belong to
someone else and are never restarted.
"""

import atexit
import contextlib
import dataclasses
import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

import grpc
import portpicker
import psutil
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import runtime_error_context
from tensorflow_federated.python.core.impl.execution_contexts import async_execution_context
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub
from tensorflow_federated.python.core.impl.types import placements

_GRACE_SECONDS = 10.0
# How long a worker may take to answer before it is reported unreachable.
_CONNECT_SECONDS = 60.0
_ADDRESS = re.compile(r'^[^\s:]+:\d{1,5}$')
RESTART_EVERY_ROUNDS = 100


@dataclasses.dataclass(frozen=True)
class Workers:
  """Where TFF computations run: one local worker (default), N local workers,
  or workers already serving at `addresses` (`host:port`, on any machine)."""

  num_workers: int = 1
  addresses: tuple[str, ...] = ()

  def __post_init__(self):
    if self.num_workers < 1:
      raise ValueError('--num_workers must be >= 1.')
    if self.addresses and self.num_workers != 1:
      raise ValueError('--num_workers starts local workers and '
                       '--worker_addresses uses running ones: give one.')
    for address in self.addresses:
      if not _ADDRESS.match(address):
        raise ValueError(f'--worker_addresses: {address!r} is not host:port.')

  @property
  def count(self) -> int:
    return len(self.addresses) or self.num_workers


def worker_binary_path() -> str:
  """TFF's C++ worker, the program to start on each worker machine."""
  return os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')


_GUARD_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'worker_guard.py')


def guarded_command(args: list[str]) -> list[str]:
  """`args` (a worker_binary command) run through `worker_guard.py`.

  The guard kills the worker as soon as this process is gone, however it
  ended (SIGKILL included), so no worker is ever left behind.
  """
  return [sys.executable, _GUARD_PATH, str(os.getpid())] + list(args)


def worker_environment(base: Optional[dict] = None) -> dict:
  """The environment a local worker_binary starts with: `base` (default
  this process's) with TensorFlow's thread pools set for many small ops,
  unless already set there: one thread per op (TF_NUM_INTRAOP_THREADS=1)
  and as many ops at a time as there are cores (TF_NUM_INTEROP_THREADS).
  A cohort's step is hundreds of ops on small tensors; splitting each over
  the cores cost more in hand-offs than it gained (docs/speed.md: rounds
  about 20% faster, measured 2026-12-07)."""
  env = dict(os.environ if base is None else base)
  env.setdefault('TF_NUM_INTRAOP_THREADS', '1')
  env.setdefault('TF_NUM_INTEROP_THREADS', str(os.cpu_count() or 1))
  return env


class _GuardedPopen(subprocess.Popen):
  """`subprocess.Popen` that starts a worker_binary through its guard, in
  `worker_environment`."""

  def __init__(self, args, *popen_args, **kwargs):
    if args and os.path.basename(str(args[0])) == 'worker_binary':
      args = guarded_command(args)
      kwargs['env'] = worker_environment(kwargs.get('env'))
    super().__init__(args, *popen_args, **kwargs)


class _GuardedSubprocess:
  """`subprocess` as TFF's executor factory sees it: workers get a guard."""

  Popen = _GuardedPopen

  def __getattr__(self, name):
    return getattr(subprocess, name)


# TFF's local C++ context starts its worker with `subprocess.Popen` from this
# module; every worker it starts is guarded.
executor_factory.subprocess = _GuardedSubprocess()


def _start_local_workers(count: int) -> tuple[list[str],
                                               list[subprocess.Popen]]:
  """Starts `count` worker_binary processes on loopback.

  Returns:
    Their addresses and processes.
  """
  addresses, processes = [], []
  for _ in range(count):
    port = portpicker.pick_unused_port()
    processes.append(subprocess.Popen(
        guarded_command([worker_binary_path(), f'--port={port}']),
        env=worker_environment()))
    addresses.append(f'localhost:{port}')
  return addresses, processes


def _remote_context(address: str) -> async_execution_context.AsyncExecutionContext:
  """An async TFF context whose computations run on the worker at `address`.

  Built as TFF's own local C++ context is, with a channel to `address` in
  place of a worker process it starts itself.

  Raises:
    ValueError: no worker answers within `_CONNECT_SECONDS` (one line).
  """
  channel = grpc.insecure_channel(
      address, executor_factory._GRPC_CHANNEL_OPTIONS)  # pylint: disable=protected-access
  try:
    grpc.channel_ready_future(channel).result(timeout=_CONNECT_SECONDS)
  except grpc.FutureTimeoutError:
    channel.close()
    raise ValueError(
        f'--worker_addresses: no TFF worker answers at {address} within '
        f'{_CONNECT_SECONDS:.0f} s (start one there with: worker_binary '
        f'--port={address.rsplit(":", 1)[1]}).') from None
  stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)

  def stack_fn(cardinalities):
    cardinalities.setdefault(placements.CLIENTS, 0)
    executor = remote_executor.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return async_execution_context.AsyncExecutionContext(
      executor_fn=python_executor_stacks.ResourceManagingExecutorFactory(
          executor_stack_fn=stack_fn),
      compiler_fn=compiler.desugar_and_transform_to_native,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result)


class Runtime:
  """One TFF execution runtime: started, counted round by round, shut down.

  The training loop is given the running `Runtime` and calls `round_done`
  after each round; `local_runtime` is the usual way to hold one. TFF's
  default execution context is one per process, so one Runtime runs at a
  time.
  """

  def __init__(self, secure_aggregation: bool = False,
               workers: Workers = Workers()):
    self.secure_aggregation = secure_aggregation
    self.workers = workers
    self.running = False
    self.rounds_since_start = 0
    self._started: list[subprocess.Popen] = []  # Local workers it launched.

  def start(self) -> 'Runtime':
    """Makes a fresh C++ execution context the default.

    With `secure_aggregation`, TFF's test context, which runs the secure-sum
    intrinsics as plain sums after the factories' client-side integer
    encoding (so results are those of a real secure aggregation, without the
    protocol). With more than one worker (or any address), a context that
    spreads each round's clients over the workers (see the module docstring).

    Raises:
      ValueError: a worker cannot be reached, or secure aggregation was asked
        of several workers (one line).
    """
    self.running, self.rounds_since_start = True, 0
    if (threading.current_thread() is threading.main_thread() and
        signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
      # Spawned children inherit an ignored SIGINT; TFF stops its worker
      # with it.
      signal.signal(signal.SIGINT, signal.default_int_handler)
    if self.workers == Workers():
      if self.secure_aggregation:
        tff.backends.test.set_sync_test_cpp_execution_context()
      else:
        tff.backends.native.set_sync_local_cpp_execution_context()
      return self
    if self.secure_aggregation:
      self.running = False
      raise ValueError('--secure_aggregation runs on one local worker: drop '
                       '--num_workers / --worker_addresses.')
    addresses = list(self.workers.addresses)
    if not addresses:
      addresses, self._started = _start_local_workers(self.workers.num_workers)
    try:
      contexts = [_remote_context(address) for address in addresses]
    except ValueError:
      self.shutdown()
      raise
    tff.backends.native.set_mergeable_comp_execution_context(contexts)
    return self

  def round_done(self) -> bool:
    """Counts a finished round; restarts local workers when they are due.

    Returns:
      Whether the workers were restarted.
    """
    self.rounds_since_start += 1
    if (not self.running or self.workers.addresses or
        self.rounds_since_start < RESTART_EVERY_ROUNDS):
      return False
    self.shutdown()
    self.start()
    return True

  def shutdown(self) -> None:
    """Stops the workers; TFF computations raise until a runtime starts."""
    self.running = False
    release()
    while self._started:  # Reaps the workers `start` launched itself.
      self._started.pop().wait()

  def __enter__(self) -> 'Runtime':
    return self.start()

  def __exit__(self, *exc_info) -> None:
    self.shutdown()


def start(secure_aggregation: bool = False,
          workers: Workers = Workers()) -> Runtime:
  """A started `Runtime` (see `Runtime.start`)."""
  return Runtime(secure_aggregation, workers).start()


def _worker_children(include_guards: bool = False) -> list[psutil.Process]:
  """This process's TFF workers (children or, under a guard, grandchildren).

  With `include_guards`, their `worker_guard.py` processes too.
  """
  workers = []
  for child in psutil.Process().children(recursive=True):
    try:
      command = child.cmdline()[:2]
      if not command:  # A zombie (already exited) has no command line.
        continue
      if (os.path.basename(command[0]) == 'worker_binary' or
          (include_guards and any(c.endswith('worker_guard.py')
                                  for c in command))):
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
  workers = _worker_children(include_guards=True)
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


def release() -> None:
  """Stops this process's TFF workers, whichever runtime started them.

  First swaps in a context that owns no worker (so no new computation
  starts), then stops the workers (see the module docstring).
  """
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
def local_runtime(secure_aggregation: bool = False,
                  workers: Workers = Workers()):
  """Runs the body with a fresh `Runtime` (yielded) and stops it afterwards."""
  with Runtime(secure_aggregation, workers) as runtime:
    yield runtime


# TFF installs a local C++ context when it is imported. Releasing it at exit,
# while every module is still intact, lets its `__del__` run cleanly (during
# interpreter teardown it would print "Exception ignored ... 'NoneType' object
# has no attribute 'Popen'") and stops any worker still running.
atexit.register(release)
