"""Tests of the TFF-free, vectorized Federated Reconstruction step."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from absl.testing import parameterized

from research.fedrec.algorithms import optimizers
from research.fedrec.inference import reconstruction


def _model(use_biases=True, seed=0):
  rng = np.random.default_rng(seed)
  return reconstruction.ItemModel(
      item_embeddings=rng.normal(0, 0.5, (6, 3)).astype(np.float32),
      item_bias=(rng.normal(0, 0.3, 6).astype(np.float32)
                 if use_biases else None),
      global_bias=3.0 if use_biases else 0.0,
      initial_user_vector=rng.normal(0, 0.1, 3).astype(np.float32))


class OptimizerTest(parameterized.TestCase):

  @parameterized.parameters(*reconstruction.OPTIMIZERS)
  def test_matches_tff_optimizer(self, name):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(4, 3)).astype(np.float32),
               rng.normal(size=4).astype(np.float32)]
    tff_optimizer = optimizers.create_optimizer(name, 0.05)
    specs = tuple(tf.TensorSpec(w.shape, tf.float32) for w in weights)
    state = tff_optimizer.initialize(specs)
    expected = tuple(tf.constant(w) for w in weights)
    ours = [w.copy() for w in weights]
    optimizer = reconstruction.Optimizer(name, 0.05,
                                          [w.shape for w in weights])
    for _ in range(5):
      grads = [rng.normal(size=w.shape).astype(np.float32) for w in weights]
      state, expected = tff_optimizer.next(
          state, expected, tuple(tf.constant(g) for g in grads))
      optimizer.step(ours, grads, np.ones(4, bool))
    for got, want in zip(ours, expected):
      np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)

  def test_inactive_rows_are_frozen(self):
    weights = [np.ones((3, 2), np.float32)]
    optimizer = reconstruction.Optimizer('sgd', 0.5, [(3, 2)])
    optimizer.step(weights, [np.ones((3, 2), np.float32)],
                   np.array([True, False, True]))
    np.testing.assert_array_equal(weights[0][:, 0], [0.5, 1.0, 0.5])


class ShuffleOrderTest(absltest.TestCase):

  def test_is_the_tf_data_permutation_without_graph_seed(self):
    orders = reconstruction.shuffle_orders([0, 1, 7, 30], seed=5)
    self.assertEqual(orders[0].size, 0)
    self.assertEqual(orders[1].tolist(), [0])
    for n in (7, 30):
      self.assertCountEqual(orders[n].tolist(), range(n))
    with tf.Graph().as_default():
      element = tf.data.Dataset.range(30).shuffle(
          10_000, seed=5, reshuffle_each_iteration=False).batch(
              30).get_single_element()
      with tf.compat.v1.Session() as session:
        np.testing.assert_array_equal(session.run(element), orders[30])


class ReconstructTest(absltest.TestCase):

  def test_one_sgd_step_by_hand(self):
    model = _model()
    items, ratings = np.array([1, 4]), np.array([5.0, 2.0], np.float32)
    settings = reconstruction.Settings(batch_size=8, learning_rate=0.1,
                                       l2=0.01)
    vectors, biases = reconstruction.reconstruct(model, [items], [ratings],
                                                 settings)
    u, b = model.initial_user_vector.astype(np.float64), 0.0
    q = model.item_embeddings[items].astype(np.float64)
    prediction = q @ u + b + model.item_bias[items] + model.global_bias
    residual = prediction - ratings
    grad_u = 2 * residual @ q / 2 + 2 * 0.01 * u
    grad_b = 2 * residual.sum() / 2 + 2 * 0.01 * b
    np.testing.assert_allclose(vectors[0], u - 0.1 * grad_u, atol=1e-6)
    np.testing.assert_allclose(biases[0], b - 0.1 * grad_b, atol=1e-6)

  def test_fine_tuning_starts_from_the_given_parameters(self):
    model = _model()
    items, ratings = np.array([0, 3, 5]), np.array([1.0, 4.0, 2.0], np.float32)
    settings = reconstruction.Settings(batch_size=8, learning_rate=0.1,
                                       l2=0.01)
    start_u = np.array([[0.3, -0.2, 0.5], [0.0, 0.0, 0.0]], np.float32)
    start_b = np.array([0.4, 0.0], np.float32)
    vectors, biases = reconstruction.reconstruct(
        model, [items, items[:0]], [ratings, ratings[:0]], settings,
        initial=(start_u, start_b))
    u, b = start_u[0].astype(np.float64), 0.4
    q = model.item_embeddings[items].astype(np.float64)
    residual = q @ u + b + model.item_bias[items] + model.global_bias - ratings
    grad_u = 2 * residual @ q / 3 + 2 * 0.01 * u
    grad_b = 2 * residual.sum() / 3 + 2 * 0.01 * b
    np.testing.assert_allclose(vectors[0], u - 0.1 * grad_u, atol=1e-6)
    np.testing.assert_allclose(biases[0], b - 0.1 * grad_b, atol=1e-6)
    # A user without ratings keeps the given parameters.
    np.testing.assert_array_equal(vectors[1], start_u[1])
    self.assertEqual(biases[1], 0.0)
    # The given arrays are not modified.
    self.assertEqual(start_u[0].tolist(), np.float32([0.3, -0.2, 0.5]).tolist())

  def test_users_are_independent_and_padding_is_ignored(self):
    model = _model()
    settings = reconstruction.Settings(epochs=3, batch_size=2,
                                       learning_rate=0.2, l2=0.01,
                                       optimizer='adam')
    users_items = [np.array([0, 1, 2, 3, 4]), np.array([5]),
                   np.array([2, 3])]
    users_ratings = [np.array([5, 4, 3, 2, 1], np.float32),
                     np.array([1], np.float32), np.array([4, 4], np.float32)]
    together = reconstruction.reconstruct(model, users_items, users_ratings,
                                          settings)
    for u in range(3):
      alone = reconstruction.reconstruct(model, users_items[u:u + 1],
                                         users_ratings[u:u + 1], settings)
      np.testing.assert_allclose(together[0][u], alone[0][0], atol=1e-6)
      np.testing.assert_allclose(together[1][u], alone[1][0], atol=1e-6)

  def test_steps_cap_and_no_ratings(self):
    model = _model()
    items = [np.arange(6), np.zeros(0, np.int64)]
    ratings = [np.full(6, 5.0, np.float32), np.zeros(0, np.float32)]
    capped = reconstruction.reconstruct(
        model, items, ratings,
        reconstruction.Settings(epochs=5, batch_size=2, steps_max=1))
    one_batch = reconstruction.reconstruct(
        model, [items[0][reconstruction.shuffle_orders([6], 0)[6][:2]]],
        [ratings[0][:2]], reconstruction.Settings(batch_size=2))
    np.testing.assert_allclose(capped[0][0], one_batch[0][0], atol=1e-7)
    np.testing.assert_array_equal(capped[0][1], model.initial_user_vector)
    self.assertEqual(capped[1][1], 0.0)

  def test_moves_predictions_toward_the_given_ratings(self):
    model = _model()
    items = np.array([0, 2, 5])
    ratings = np.array([5.0, 1.0, 5.0], np.float32)
    before = model.predict(np.tile(model.initial_user_vector, (3, 1)),
                           np.zeros(3, np.float32), items)
    vectors, biases = reconstruction.reconstruct(
        model, [items], [ratings],
        reconstruction.Settings(epochs=20, learning_rate=0.1))
    after = model.predict(np.tile(vectors[0], (3, 1)),
                          np.full(3, biases[0]), items)
    self.assertLess(np.mean((after - ratings)**2),
                    0.5 * np.mean((before - ratings)**2))

  def test_without_biases_the_bias_stays_zero(self):
    model = _model(use_biases=False)
    _, biases = reconstruction.reconstruct(
        model, [np.array([0, 1])], [np.array([5.0, 1.0], np.float32)],
        reconstruction.Settings())
    self.assertEqual(biases.tolist(), [0.0])

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, 'optimizer'):
      reconstruction.Settings(optimizer='rmsprop')
    with self.assertRaisesRegex(ValueError, 'steps_max'):
      reconstruction.Settings(steps_max=0)



if __name__ == '__main__':
  absltest.main()
