"""Tests of optimizers by name: one step of each written out."""

from absl.testing import absltest
import tensorflow as tf

from research.fedrec.algorithms import optimizers


def _one_step(name, lr, weight=1.0, grad=0.5):
  optimizer = optimizers.create_optimizer(name, lr)
  spec = (tf.TensorSpec([], tf.float32),)
  state = optimizer.initialize(spec)
  _, (new_weight,) = optimizer.next(state, (tf.constant(weight),),
                                    (tf.constant(grad),))
  return float(new_weight)


class OptimizersTest(absltest.TestCase):

  def test_first_steps_by_hand(self):
    self.assertAlmostEqual(_one_step('sgd', 0.1), 1 - 0.1 * 0.5)
    self.assertAlmostEqual(_one_step('sgdm', 0.1), 1 - 0.1 * 0.5)
    # Adam's first step is lr * sign(g) (bias-corrected m / sqrt(v) = 1).
    self.assertAlmostEqual(_one_step('adam', 0.1), 0.9, places=4)
    self.assertLess(_one_step('adagrad', 0.1), 1.0)
    self.assertLess(_one_step('yogi', 0.1), 1.0)

  def test_schedules(self):
    rate = optimizers.scheduled_learning_rate
    self.assertEqual([rate('constant', 0.1, r, 4) for r in (1, 4)],
                     [0.1, 0.1])
    self.assertEqual([rate('linear', 2.0, r, 4) for r in (1, 2, 3, 4)],
                     [2.0, 1.5, 1.0, 0.5])
    cosine = [rate('cosine', 2.0, r, 4) for r in (1, 2, 3, 4)]
    expected = [2.0, 1 + 0.5**0.5, 1.0, 1 - 0.5**0.5]
    for got, want in zip(cosine, expected):
      self.assertAlmostEqual(got, want, places=12)
    with self.assertRaisesRegex(ValueError, 'outside 1..4'):
      rate('cosine', 1.0, 5, 4)
    with self.assertRaises(ValueError):
      rate('step', 1.0, 1, 4)

  def test_bad_name_and_rate(self):
    with self.assertRaises(ValueError):
      optimizers.create_optimizer('rmsprop', 0.1)
    with self.assertRaisesRegex(ValueError, 'must be > 0'):
      optimizers.create_optimizer('sgd', 0.0)


if __name__ == '__main__':
  absltest.main()
