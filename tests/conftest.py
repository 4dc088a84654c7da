"""pytest session hooks: no TFF worker may outlive the test session."""

import sys

from absl import flags


def pytest_configure(config):
  """Registers the `slow` marker; absltest helpers need parsed absl flags."""
  config.addinivalue_line(
      'markers', 'slow: runs a TFF learning process, a binary or a '
      'multi-round training (deselect with -m "not slow", as make test-fast '
      'does)')
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if 'tensorflow_federated' in sys.modules:
    from research.fedrec.training import runtime  # pylint: disable=g-import-not-at-top
    runtime.release()
