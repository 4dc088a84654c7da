"""Per-user optimizers of cohorts against TFF's own optimizers.

Each of three users holds its copy of two weights and takes its own
sequence of steps, idle at some of them (its batches ran out, or it waits
between epochs); the reference steps TFF's optimizer (as
`optimizers.create_optimizer` builds it) for that user alone on its active
steps, from a fresh state. Weights must agree to 1e-5 relative (the
reference computes Adam's bias correction in float64), and idle
users must not move.
"""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import cohort_optimizers
from research.fedrec.algorithms import optimizers

# Step by user: user 0 steps every time; user 1 pauses (as between
# epochs); user 2 stops after two steps.
_ACTIVE = np.array([[1, 1, 1], [1, 0, 1], [1, 0, 0], [1, 1, 0],
                    [1, 1, 0], [1, 0, 0]], bool)
_SHAPES = ([3, 4, 2], [3, 5])


def _run(name, initial, grads):
  """Every user of the cohort, stepped by `UserOptimizer`."""
  optimizer = cohort_optimizers.UserOptimizer(name, 0.05)
  copies = [tf.constant(w) for w in initial]
  state = optimizer.initialize(copies)
  for t, active in enumerate(_ACTIVE):
    state, copies = optimizer.next(state, copies,
                                   [tf.constant(g[t]) for g in grads],
                                   tf.constant(active))
  return [c.numpy() for c in copies], state[0].numpy()


def _reference(name, initial, grads, user):
  """User `user` alone, stepped by TFF's optimizer on its active steps."""
  optimizer = optimizers.create_optimizer(name, 0.05)
  weights = tuple(tf.constant(w[user]) for w in initial)
  state = optimizer.initialize(
      tuple(tf.TensorSpec(w.shape, w.dtype) for w in weights))
  for t, active in enumerate(_ACTIVE):
    if active[user]:
      state, weights = optimizer.next(
          state, weights, tuple(tf.constant(g[t][user]) for g in grads))
  return [w.numpy() for w in weights]


class UserOptimizerTest(parameterized.TestCase):

  @parameterized.parameters(*[n.value for n in optimizers.OptimizerName])
  def test_equals_tff_optimizer_per_user(self, name):
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=s).astype(np.float32) for s in _SHAPES]
    grads = [rng.normal(size=(len(_ACTIVE),) + tuple(s)).astype(np.float32)
             for s in _SHAPES]
    # Some rows without gradient at some steps: a stateful optimizer still
    # moves them (TFF densifies), SGD does not.
    grads[0][2:, :, 1] = 0.0
    copies, steps = _run(name, initial, grads)
    np.testing.assert_array_equal(steps, _ACTIVE.sum(axis=0))
    for user in range(3):
      expected = _reference(name, initial, grads, user)
      for got, want in zip(copies, expected):
        np.testing.assert_allclose(got[user], want, rtol=1e-5, atol=1e-6)

  def test_idle_user_does_not_move(self):
    # User 2 is idle after step 2 with zero gradients: Adam's momentum
    # would move it on; frozen, it keeps the weights of its step 2.
    initial = [np.ones(s, np.float32) for s in _SHAPES]
    grads = [np.ones((len(_ACTIVE),) + tuple(s), np.float32) for s in _SHAPES]
    for g in grads:
      g[2:, 2] = 0.0
    copies, _ = _run('adam', initial, grads)
    # Two Adam steps of gradient 1: each moves by the learning rate.
    np.testing.assert_allclose(copies[0][2], np.full([4, 2], 0.9), rtol=1e-5)

  def test_stateful(self):
    self.assertFalse(cohort_optimizers.UserOptimizer('sgd', 1.0).stateful)
    self.assertTrue(cohort_optimizers.UserOptimizer('adam', 1.0).stateful)


if __name__ == '__main__':
  absltest.main()
