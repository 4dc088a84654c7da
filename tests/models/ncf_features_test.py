"""Tests of NeuMF with item features: closed forms, id dropout, layouts."""

import collections

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.data import side_info
from research.fedrec.models import builder
from research.fedrec.models import mf_features
from research.fedrec.models import ncf_features

# Four items: one genre flag and a year (the third unknown), as in
# mf_features_test.
_INFO = side_info.ItemInfo(
    np.arange(1, 5), np.array(['a', 'b', 'c', 'd']),
    np.array([2000.0, 1990.0, np.nan, 2010.0]), ('Comedy',),
    np.array([[1], [0], [1], [0]], np.float32), 'test')


def _prepared(**settings):
  config = ncf_features.NeuMFFeaturesConfig(
      embedding_dim=3, mlp_layers=(4, 3), seed=1, **settings)
  return builder.prepared(config, 0.0, lambda: _INFO)


def _randomize(model, seed):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if layer.trainable_weights:
      layer.set_weights([rng.normal(size=w.shape).astype(np.float32)
                         for w in layer.get_weights()])


def _logits_by_hand(model, config, users, items, keep):
  """NeuMF's logit in NumPy, the id parts times `keep` (0 or 1 each)."""
  get = lambda name: model.get_layer(name).get_weights()
  x = config.features[items]
  gmf_item = (get('gmf_item_embedding')[0][items] * keep[:, None] +
              x @ get('gmf_feature_projection')[0])
  mlp_item = (get('mlp_item_embedding')[0][items] * keep[:, None] +
              x @ get('mlp_feature_projection')[0])
  gmf = get('gmf_user_embedding')[0][users] * gmf_item
  hidden = np.concatenate([get('mlp_user_embedding')[0][users], mlp_item], 1)
  for index in range(len(config.mlp_layers)):
    kernel, bias = get(f'mlp_{index}')
    hidden = np.maximum(hidden @ kernel + bias, 0.0)
  kernel, bias = get('logit')
  return (np.concatenate([gmf, hidden], 1) @ kernel + bias)[:, 0]


class NeuMFFeaturesTest(absltest.TestCase):

  def test_prepared_loads_the_scaled_feature_table_as_mf_features(self):
    config = _prepared()
    reference = builder.prepared(mf_features.FeatureMFConfig(), 0.0,
                                 lambda: _INFO)
    np.testing.assert_array_equal(config.features, reference.features)
    self.assertEqual(config.encoder, reference.encoder)
    self.assertEqual(config.feature_multiplier, reference.feature_multiplier)

  def test_logits_are_neumf_of_id_plus_projected_features(self):
    config = _prepared(id_dropout=0.5)
    layers = builder.create_keras_model(config, 4, num_users=2)
    _randomize(layers.model, 0)
    users, items = np.array([0, 1, 1, 0, 1]), np.array([0, 1, 2, 3, 3])
    inputs = collections.OrderedDict(user=tf.constant(users),
                                     item=tf.constant(items))
    np.testing.assert_allclose(
        layers.model(inputs, training=False).numpy(),
        _logits_by_hand(layers.model, config, users, items, np.ones(5)),
        rtol=1e-5, atol=1e-6)

  def test_id_dropout_drops_both_towers_id_parts_together(self):
    config = _prepared(id_dropout=0.5)
    layers = builder.create_keras_model(config, 4, num_users=2)
    _randomize(layers.model, 1)
    users, items = np.zeros(64, np.int64), np.arange(64) % 4
    inputs = collections.OrderedDict(user=tf.constant(users),
                                     item=tf.constant(items))
    trained = layers.model(inputs, training=True).numpy()
    full = _logits_by_hand(layers.model, config, users, items, np.ones(64))
    dropped = _logits_by_hand(layers.model, config, users, items,
                              np.zeros(64))
    # Dropping one tower's id part only would match neither.
    is_full = np.isclose(trained, full, rtol=1e-5, atol=1e-6)
    is_dropped = np.isclose(trained, dropped, rtol=1e-5, atol=1e-6)
    self.assertTrue(np.all(is_full | is_dropped))
    self.assertBetween(int(is_dropped.sum()), 16, 48)
    # The draw is a function of (seed, the batch's items): repeated.
    np.testing.assert_array_equal(
        layers.model(inputs, training=True).numpy(), trained)

  def test_reconstruction_layout_keeps_the_user_part_local(self):
    layers = builder.create_keras_model(_prepared(), 4)
    self.assertEqual([layer.name for layer in layers.user_layers],
                     ['gmf_user_embedding', 'mlp_user_embedding'])
    self.assertEqual([layer.name for layer in layers.global_layers],
                     ['gmf_item_embedding', 'gmf_feature_projection',
                      'mlp_0', 'mlp_1', 'mlp_item_embedding',
                      'mlp_feature_projection', 'logit'])
    grouped = {id(w) for layer in layers.user_layers + layers.global_layers
               for w in layer.weights}
    self.assertEqual(grouped, {id(w) for w in layers.model.weights})
    # A new item's id parts start (and, untouched, stay) at zero.
    for name in ('gmf_item_embedding', 'mlp_item_embedding'):
      np.testing.assert_array_equal(
          layers.model.get_layer(name).get_weights()[0], 0.0)

  def test_bad_settings_are_one_line(self):
    with self.assertRaisesRegex(ValueError, r'^--item_features=plot: '
                                'expected distinct names among'):
      ncf_features.NeuMFFeaturesConfig(item_features=('plot',))
    with self.assertRaisesRegex(ValueError, r'^--id_dropout=1: expected'):
      ncf_features.NeuMFFeaturesConfig(id_dropout=1.0)
    with self.assertRaisesRegex(ValueError, '^neumf_features: the item '
                                'features are not loaded'):
      builder.create_keras_model(ncf_features.NeuMFFeaturesConfig(), 4)
    with self.assertRaisesRegex(ValueError, '4 items have features, the '
                                'corpus has 5'):
      builder.create_keras_model(_prepared(), 5)
    with self.assertRaisesRegex(ValueError, 'learns from implicit feedback'):
      builder.check_supported(_prepared(), implicit=False,
                              reconstruction=True)


if __name__ == '__main__':
  absltest.main()
