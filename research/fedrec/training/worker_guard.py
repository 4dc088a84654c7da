"""Runs TFF's `worker_binary` so that it never outlives the process it serves.

TFF starts its C++ worker as a plain child process and stops it only from
Python (a `__del__`, or this project's `runtime.release`). When the parent is
killed outright (SIGKILL, the out-of-memory killer) nothing runs, and the
worker would serve on forever with parent 1, holding the parent's stdout and
stderr open. `runtime` therefore starts every local worker through this guard:

    python worker_guard.py PARENT_PID worker_binary --port=P ...

The guard starts the worker as its own child, forwards SIGINT / SIGTERM to
it, exits with the worker's exit code, and kills the worker (then exits) as
soon as PARENT_PID is no longer its parent. It imports only the standard
library, so it starts in a few tens of milliseconds. It is a script, not a
module of the package, so it runs without the project on the path.
"""

import os
import signal
import subprocess
import sys

_POLL_SECONDS = 0.2


def main(argv: list[str]) -> int:
  if len(argv) < 3:
    print('usage: worker_guard.py PARENT_PID WORKER [ARGS...]',
          file=sys.stderr)
    return 2
  parent = int(argv[1])
  if os.getppid() != parent:  # The parent died before we started.
    return 1
  worker = subprocess.Popen(argv[2:])

  def forward(signum, frame):
    del frame
    try:
      worker.send_signal(signum)
    except ProcessLookupError:
      pass

  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, forward)
  while True:
    try:
      return worker.wait(timeout=_POLL_SECONDS)
    except subprocess.TimeoutExpired:
      pass
    if os.getppid() != parent:
      worker.kill()
      worker.wait()
      return 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
