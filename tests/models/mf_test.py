"""Tests of the MF model: parameter counts, predictions, regularization."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.models import mf


class MFTest(absltest.TestCase):

  def test_parameter_counts_match_the_formula(self):
    # Items x (dim + item bias) + global bias; users likewise in the table.
    config = mf.MFConfig(embedding_dim=5, use_biases=True)
    recon = mf.create_keras_model(config, num_items=7)
    self.assertEqual(
        sum(int(np.prod(v.shape)) for v in recon.model.trainable_variables),
        7 * 6 + 1 + 6)
    self.assertEqual(mf.count_parameters(config, 7),
                     {'global': 7 * 6 + 1, 'local_per_user': 6})
    self.assertEqual(
        sum(int(np.prod(v.shape)) for layer in recon.global_layers
            for v in layer.trainable_variables), 7 * 6 + 1)
    self.assertEqual(
        sum(int(np.prod(v.shape)) for layer in recon.user_layers
            for v in layer.trainable_variables), 6)
    full = mf.create_keras_model(config, num_items=7, num_users=3)
    self.assertEqual(full.model.count_params(), 7 * 6 + 1 + 3 * 6)
    self.assertEqual(mf.count_parameters(config, 7, 3),
                     {'global': 7 * 6 + 1 + 3 * 6, 'local_per_user': 0})

  def test_without_biases(self):
    config = mf.MFConfig(embedding_dim=4, use_biases=False)
    self.assertEqual(mf.create_keras_model(config, 9).model.count_params(),
                     9 * 4 + 4)
    self.assertEqual(mf.count_parameters(config, 9),
                     {'global': 36, 'local_per_user': 4})

  def test_prediction_is_dot_plus_biases(self):
    config = mf.MFConfig(embedding_dim=2, global_mean=3.0)
    layers = mf.create_keras_model(config, num_items=3, num_users=2)
    model = layers.model
    model.get_layer('user_embedding').set_weights([np.array([[1., 2.],
                                                             [0., -1.]])])
    model.get_layer('item_embedding').set_weights([np.array([[1., 0.],
                                                             [.5, .5],
                                                             [2., 1.]])])
    model.get_layer('user_bias').set_weights([np.array([[.1], [-.2]])])
    model.get_layer('item_bias').set_weights([np.array([[0.], [.3], [-.4]])])
    got = model(collections.OrderedDict(user=np.array([0, 1, 0]),
                                        item=np.array([2, 1, 1])))
    np.testing.assert_allclose(
        got, [3 + .1 - .4 + 4, 3 - .2 + .3 - .5, 3 + .1 + .3 + 1.5],
        rtol=1e-6)

  def test_recon_layout_broadcasts_the_one_user(self):
    config = mf.MFConfig(embedding_dim=2, use_biases=False)
    layers = mf.create_keras_model(config, num_items=2)
    layers.model.get_layer('user_embedding').set_weights([np.array([[2., 1.]])])
    layers.model.get_layer('item_embedding').set_weights(
        [np.array([[1., 1.], [0., 3.]])])
    np.testing.assert_allclose(
        mf.get_rating(layers.model(np.array([1, 0, 1]))), [3, 3, 3])

  def test_seeded_initialization_is_deterministic(self):
    config = mf.MFConfig(embedding_dim=3, seed=5)
    a = mf.create_keras_model(config, 4).model.get_weights()
    b = mf.create_keras_model(config, 4).model.get_weights()
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)

  def test_recon_layout_outputs_per_example_l2_of_the_rated_pair(self):
    config = mf.MFConfig(embedding_dim=2, use_biases=False, l2=0.5)
    model = mf.create_keras_model(config, num_items=3).model
    model.get_layer('user_embedding').set_weights([np.array([[1., 2.]])])
    model.get_layer('item_embedding').set_weights(
        [np.array([[1., 0.], [0., 3.], [5., 5.]])])
    outputs = model(np.array([0, 1]))
    # 0.5 * (|u|^2 + |v_i|^2) for items 0 and 1 (item 2 is not rated).
    np.testing.assert_allclose(outputs[:, 1],
                               [0.5 * (5 + 1), 0.5 * (5 + 9)], rtol=1e-6)
    loss = mf.RegularizedMSE()(np.array([1., 1.]), outputs)
    self.assertAlmostEqual(float(loss), ((1 - 1)**2 + (6 - 1)**2) / 2 +
                           (3 + 7) / 2, places=5)

  def test_classic_layout_adds_the_same_l2_as_a_model_loss(self):
    config = mf.MFConfig(embedding_dim=2, l2=0.5, global_mean=0.0)
    model = mf.create_keras_model(config, num_items=2, num_users=1).model
    model.get_layer('user_embedding').set_weights([np.array([[1., 2.]])])
    model.get_layer('item_embedding').set_weights(
        [np.array([[1., 0.], [0., 3.]])])
    model.get_layer('user_bias').set_weights([np.array([[2.]])])
    model.get_layer('item_bias').set_weights([np.array([[1.], [0.]])])
    model(collections.OrderedDict(user=np.array([0, 0]),
                                  item=np.array([0, 1])))
    # Mean over the batch of 0.5 * (|u|^2 + |v_i|^2 + b_u^2 + b_i^2).
    self.assertAlmostEqual(float(tf.add_n(model.losses)),
                           0.5 * ((5 + 1 + 4 + 1) + (5 + 9 + 4 + 0)) / 2,
                           places=5)
    no_l2 = mf.create_keras_model(mf.MFConfig(embedding_dim=2), 2, 1).model
    self.assertEmpty(no_l2.losses)


if __name__ == '__main__':
  absltest.main()
