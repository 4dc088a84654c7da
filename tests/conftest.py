"""pytest session hooks: no TFF worker may outlive the test session."""

import sys

from absl import flags


def pytest_configure(config):
  """absltest helpers (create_tempdir, flagsaver) need parsed absl flags."""
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if 'tensorflow_federated' in sys.modules:
    from research.fedrec.training import runtime  # pylint: disable=g-import-not-at-top
    runtime.shutdown()
