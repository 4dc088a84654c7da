"""Client optimizers stepping each user of a cohort on its own.

A cohort holds K users' copies of what they train, stacked on a leading
axis ([K, ...] per weight). Per client, TFF gives each user a fresh
optimizer state at the start of a phase (`optimizer.initialize` in TFF's
FedAvg and FedRecon client work) and steps it once per batch the user has.
`UserOptimizer` does the same for K users at once: one state per user
(accumulators shaped like the copies, a step count per user), and a user
without a batch at a step (idle: its data ran out, or it is between the
epochs of a phase) is frozen, weights and state, since a stateful
optimizer would otherwise go on moving it by its momentum.

The arithmetic is that of the `tff.learning.optimizers` that
`optimizers.create_optimizer` builds (same hyperparameters, same order of
operations): `tests/algorithms/cohort_optimizers_test.py` checks each
against TFF's own on users with different idle steps. As TFF densifies
sparse gradients, a row of a user's copy whose accumulator is non-zero
keeps moving at steps where its gradient is zero; the caller passes dense
gradients over the whole copy for that reason.
"""

import tensorflow as tf

from research.fedrec.algorithms import optimizers

# Hyperparameters of `tff.learning.optimizers.build_*`'s defaults, which
# `optimizers.create_optimizer` uses.
_BETA_1, _BETA_2 = 0.9, 0.999
_ADAM_EPSILON = 1e-7
_ADAGRAD_INITIAL, _ADAGRAD_EPSILON = 0.1, 1e-7
_YOGI_INITIAL, _YOGI_EPSILON = 1e-6, 1e-3


@tf.autograph.experimental.do_not_convert
def per_user(values, like):
  """[K] values shaped to broadcast against `like` ([K, ...])."""
  return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


class UserOptimizer:
  """One optimizer per user over stacked copies (see the module doc)."""

  def __init__(self, name: optimizers.OptimizerName | str,
               learning_rate: float):
    self.name = optimizers.OptimizerName(name)
    self.learning_rate = learning_rate

  @property
  def stateful(self) -> bool:
    return self.name != optimizers.OptimizerName.SGD

  @tf.autograph.experimental.do_not_convert
  def initialize(self, copies):
    """The fresh state of every user: (steps [K], per-weight accumulators);
    `()` for no copies (e.g. MF without biases has no global non-table
    weight), which `step` and `next` pass through."""
    if not copies:
      return ()
    name = self.name
    steps = tf.zeros(tf.shape(copies[0])[:1], tf.float32)
    if name == optimizers.OptimizerName.SGD:
      return steps, ()
    if name == optimizers.OptimizerName.SGDM:
      return steps, tuple((tf.zeros_like(c),) for c in copies)
    if name == optimizers.OptimizerName.ADAGRAD:
      return steps, tuple((tf.ones_like(c) * _ADAGRAD_INITIAL,)
                          for c in copies)
    if name == optimizers.OptimizerName.ADAM:
      return steps, tuple((tf.zeros_like(c), tf.zeros_like(c))
                          for c in copies)
    return steps, tuple((tf.zeros_like(c), tf.ones_like(c) * _YOGI_INITIAL)
                        for c in copies)

  @tf.autograph.experimental.do_not_convert
  def step(self, state, copies, grads, active, rows, extra=None):
    """One step on gradients of which some are of a batch's rows only.

    `rows[i]` is None where `grads[i]` is of the whole copy, else the
    [K, B, 2] (user, row) index of the copy's rows the batch's positions
    use: their gradients are scattered in, duplicates adding up, as an
    embedding's are. `extra[i]` (optional) is a gradient term of the whole
    copy (FedProx's pull). SGD updates the touched rows alone; a stateful
    optimizer steps on the whole copies' gradient (module doc).
    """
    if not copies:
      return state, []
    if not self.stateful:
      lr, updated = self.learning_rate, []
      for i, (copy, grad) in enumerate(zip(copies, grads)):
        if extra is not None:
          copy -= lr * extra[i]
        updated.append(copy - lr * grad if rows[i] is None else
                       tf.tensor_scatter_nd_sub(copy, rows[i], lr * grad))
      return state, updated
    whole = [grad if index is None else
             tf.tensor_scatter_nd_add(tf.zeros_like(copy), index, grad)
             for copy, grad, index in zip(copies, grads, rows)]
    if extra is not None:
      whole = [grad + term for grad, term in zip(whole, extra)]
    return self.next(state, copies, whole, active)

  @tf.autograph.experimental.do_not_convert
  def next(self, state, copies, grads, active):
    """One step of the users where `active` ([K] bool); the others frozen.

    Returns (state, copies), as `tff.learning.optimizers.Optimizer.next`.
    """
    if not copies:
      return state, []
    steps, slots = state
    lr = self.learning_rate
    name = self.name
    new_steps = steps + 1.0
    if name in (optimizers.OptimizerName.ADAM, optimizers.OptimizerName.YOGI):
      # Bias correction of each user's own step count.
      scale = lr * tf.math.sqrt(1.0 - tf.math.pow(_BETA_2, new_steps)) / (
          1.0 - tf.math.pow(_BETA_1, new_steps))
    new_copies, new_slots = [], []
    for i, (w, g) in enumerate(zip(copies, grads)):
      if name == optimizers.OptimizerName.SGD:
        moved, kept = w - lr * g, ()
      elif name == optimizers.OptimizerName.SGDM:
        a = optimizers.MOMENTUM * slots[i][0] + g
        moved, kept = w - lr * a, (a,)
      elif name == optimizers.OptimizerName.ADAGRAD:
        p = slots[i][0] + tf.math.square(g)
        moved = w - lr * g / tf.math.sqrt(p + _ADAGRAD_EPSILON)
        kept = (p,)
      elif name == optimizers.OptimizerName.ADAM:
        a, p = slots[i]
        a = a + (g - a) * (1.0 - _BETA_1)
        p = p + (tf.math.square(g) - p) * (1.0 - _BETA_2)
        moved = w - per_user(scale, w) * a / (tf.math.sqrt(p) + _ADAM_EPSILON)
        kept = (a, p)
      else:  # Yogi.
        a, p = slots[i]
        a = a + (g - a) * (1.0 - _BETA_1)
        g2 = tf.math.square(g)
        p = p + (1 - _BETA_2) * tf.sign(g2 - p) * g2
        moved = w - per_user(scale, w) * a / (tf.math.sqrt(p) + _YOGI_EPSILON)
        kept = (a, p)
      on = tf.cast(per_user(active, w), tf.bool)
      on = tf.broadcast_to(on, tf.shape(w))
      new_copies.append(tf.where(on, moved, w))
      new_slots.append(tuple(tf.where(on, k, old)
                             for k, old in zip(kept, slots[i]))
                       if kept else ())
    steps = tf.where(active, new_steps, steps)
    return (steps, tuple(new_slots) if slots else ()), new_copies
