"""cohort_work's losses: PFedRec's BCE of probabilities against closed forms.

torch.nn.BCELoss of p = sigmoid(x): loss -(y max(log p, -100) + (1 - y)
max(log(1 - p), -100)), gradient in x (p - y) / max(p (1 - p), 1e-12) times
sigmoid's p (1 - p). Values below are worked out by hand from those
formulas in float32.
"""

import math

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import cohort_work


def _loss_and_gradient(loss_fn, labels, logits):
  logits = tf.constant(logits, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(logits)
    loss = loss_fn(tf.constant(labels, tf.float32), logits)
  return loss.numpy(), tape.gradient(loss, logits).numpy()


class ProbabilityCrossEntropyTest(absltest.TestCase):

  def test_closed_forms_including_saturation(self):
    labels = [1.0, 0.0, 0.0, 1.0, 1.0]
    logits = [0.0, 2.0, 20.0, -40.0, -120.0]
    loss, gradient = _loss_and_gradient(
        cohort_work.probability_cross_entropy, labels, logits)
    p2 = 1 / (1 + math.exp(-2.0))
    p40 = math.exp(-40.0) / (1 + math.exp(-40.0))
    np.testing.assert_allclose(loss, [
        math.log(2.0),  # -log(1/2).
        -math.log(1 - p2),
        100.0,  # sigmoid(20) rounds to 1 in float32: log(0) clamped.
        40.0,  # -log(e^-40 / (1 + e^-40)) = 40 + log(1 + e^-40).
        100.0,  # sigmoid(-120) underflows to 0: log(0) clamped.
    ], rtol=1e-5)
    np.testing.assert_allclose(gradient, [
        -0.5,  # p - y, as from logits.
        p2,  # p - y.
        0.0,  # Saturated: sigmoid's gradient p (1 - p) is 0.
        -p40 / 1e-12,  # (p - 1) / 1e-12 * p (1 - p): -4.25e-6, not -1.
        0.0,  # p = 0: no gradient at all.
    ], rtol=1e-4, atol=1e-12)
    # The logits' loss keeps a gradient of |p - y| at every one of them.
    _, from_logits = _loss_and_gradient(cohort_work.cross_entropy, labels,
                                        logits)
    np.testing.assert_allclose(from_logits, [-0.5, p2, 1.0, -1.0, -1.0],
                               rtol=1e-5)

  def test_equals_the_logits_loss_away_from_saturation(self):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200).astype(np.float32)
    logits = rng.uniform(-6, 6, 200).astype(np.float32)
    ours = _loss_and_gradient(cohort_work.probability_cross_entropy, labels,
                              logits)
    theirs = _loss_and_gradient(cohort_work.cross_entropy, labels, logits)
    for have, want in zip(ours, theirs):
      np.testing.assert_allclose(have, want, rtol=2e-4, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
