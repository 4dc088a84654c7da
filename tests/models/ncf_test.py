"""Tests of the NCF models, U-AutoRec and the model builder."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.models import autorec
from research.fedrec.models import builder
from research.fedrec.models import mf
from research.fedrec.models import ncf


class NCFTest(absltest.TestCase):

  def test_layouts_agree_and_user_part_is_local(self):
    for config in (ncf.GMFConfig(embedding_dim=4, l2=0.1),
                   ncf.MLPConfig(mlp_layers=(8, 4), l2=0.1),
                   ncf.NeuMFConfig(embedding_dim=4, mlp_layers=(8, 4), l2=0.1)):
      recon = builder.create_keras_model(config, num_items=7)
      classic = builder.create_keras_model(config, num_items=7, num_users=3)
      for layer in recon.global_layers:
        classic.model.get_layer(layer.name).set_weights(layer.get_weights())
      for layer in recon.user_layers:
        table = classic.model.get_layer(layer.name)
        table.set_weights([np.tile(layer.get_weights()[0], (3, 1))])
      items = np.array([0, 3, 6], np.int64)
      recon_out = recon.model(items).numpy()
      self.assertEqual(recon_out.shape, (3, 2))  # (logit, L2).
      classic_out = classic.model({'user': np.array([2, 2, 2]),
                                   'item': items}).numpy()
      np.testing.assert_allclose(recon_out[:, 0], classic_out, rtol=1e-6)
      np.testing.assert_allclose(classic.model.losses[0],
                                 recon_out[:, 1].mean(), rtol=1e-6)
      # Only user embeddings are local; no item-shaped tensor among them.
      self.assertTrue(all('user' in layer.name for layer in recon.user_layers))
      self.assertLen(recon.user_layers,
                     2 if isinstance(config, ncf.NeuMFConfig) else 1)

  def test_gmf_logit_by_hand(self):
    config = ncf.GMFConfig(embedding_dim=2)
    layers = builder.create_keras_model(config, num_items=2)
    layers.model.get_layer('gmf_user_embedding').set_weights(
        [np.array([[1.0, 2.0]])])
    layers.model.get_layer('gmf_item_embedding').set_weights(
        [np.array([[3.0, 4.0], [0.5, -1.0]])])
    layers.model.get_layer('logit').set_weights(
        [np.array([[1.0], [0.5]]), np.array([0.25])])
    # item 0: 1*3*1 + 2*4*0.5 + 0.25; item 1: 0.5 - 1 + 0.25.
    np.testing.assert_allclose(layers.model(np.array([0, 1]))[:, 0],
                               [7.25, -0.25], rtol=1e-6)

  def test_regularized_bce_by_hand(self):
    outputs = tf.constant([[0.0, 0.5], [2.0, 0.1]])
    expected = (np.log(2) + np.log1p(np.exp(2.0))) / 2 + 0.3
    self.assertAlmostEqual(
        float(mf.RegularizedBCE()(np.array([1.0, 0.0]), outputs)), expected,
        places=5)


class AutoRecTest(absltest.TestCase):

  def test_masked_bce_ignores_unlabelled_entries(self):
    logits = tf.constant([[0.0, 3.0, -2.0, 9.0]])
    labels = np.array([[1.0, autorec.MASKED, 0.0, autorec.MASKED]])
    expected = (np.log(2) + np.log1p(np.exp(-2.0))) / 2
    self.assertAlmostEqual(float(autorec.MaskedBCE()(labels, logits)),
                           expected, places=6)

  def test_whole_model_is_global(self):
    config = autorec.AutoRecConfig(hidden_units=5)
    layers = builder.create_keras_model(config, num_items=9, num_users=4)
    self.assertEqual(layers.user_layers, [])
    self.assertEqual(layers.model.count_params(), 9 * 5 + 5 + 5 * 9 + 9)


class BuilderTest(absltest.TestCase):

  def test_unsupported_settings_are_one_line_errors(self):
    with self.assertRaisesRegex(ValueError, '--model=neumf learns from '
                                'implicit feedback'):
      builder.check_supported(ncf.NeuMFConfig(), False,
                              False)
    with self.assertRaisesRegex(ValueError, 'no user-specific part'):
      builder.check_supported(autorec.AutoRecConfig(), True,
                              True)
    builder.check_supported(mf.MFConfig(), True, True)  # FedMF is fine.


if __name__ == '__main__':
  absltest.main()
