"""Tests of MF with item features: closed forms, id dropout, preparation."""

import collections
import dataclasses

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.data import side_info
from research.fedrec.models import builder
from research.fedrec.models import mf_features

# Four items: one genre flag and a year (the third unknown). Known years
# 2000, 1990, 2010: mean 2000, standard deviation sqrt(200 / 3).
_INFO = side_info.ItemInfo(
    np.arange(1, 5), np.array(['a', 'b', 'c', 'd']),
    np.array([2000.0, 1990.0, np.nan, 2010.0]), ('Comedy',),
    np.array([[1], [0], [1], [0]], np.float32), 'test')
_Z = 10 / np.sqrt(200 / 3)
_FEATURES = np.array([[1.0, 0.0], [0.0, -_Z], [1.0, 0.0], [0.0, _Z]])


def _prepared(**settings):
  config = mf_features.FeatureMFConfig(embedding_dim=3, seed=1, **settings)
  return builder.prepared(config, 3.5, lambda: _INFO)


def _randomize(model, seed):
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if layer.trainable_weights:
      layer.set_weights([rng.normal(size=w.shape).astype(np.float32)
                         for w in layer.get_weights()])


class FeatureMFTest(absltest.TestCase):

  def test_prepared_scales_the_features(self):
    config = _prepared()
    # The longest rows, (0, -+z), get norm feature_scale = 0.3.
    np.testing.assert_allclose(config.features, _FEATURES * (0.3 / _Z),
                               rtol=1e-6, atol=1e-7)
    self.assertAlmostEqual(config.feature_multiplier, 0.3 / _Z)
    self.assertEqual(config.encoder, side_info.FeatureEncoder(
        ('genres', 'year'), ('Comedy',), 2000.0, np.sqrt(200 / 3)))
    self.assertEqual(config.global_mean, 3.5)
    self.assertEqual(config.item_features, ('genres', 'year'))

  def test_predictions_are_the_rating_parts_closed_form(self):
    config = _prepared(l2=0.0)
    layers = builder.create_keras_model(config, 4, num_users=2)
    _randomize(layers.model, 0)
    parts = builder.rating_parts(config, layers.model, 4)
    get = lambda name: layers.model.get_layer(name).get_weights()[0]
    x = config.features
    np.testing.assert_allclose(
        parts.item_embeddings,
        get('item_embedding') + x @ get('feature_projection'), rtol=1e-6)
    np.testing.assert_allclose(
        parts.item_bias, get('item_bias')[:, 0] + (x @ get('feature_bias'))[
            :, 0], rtol=1e-6)
    users, items = np.array([0, 1, 1, 0]), np.array([0, 1, 2, 3])
    expected = (np.sum(parts.user_vectors[users] *
                       parts.item_embeddings[items], axis=1) +
                parts.user_biases[users] + parts.item_bias[items] +
                parts.global_bias)
    predicted = layers.model(collections.OrderedDict(
        user=tf.constant(users), item=tf.constant(items)), training=False)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)

  def test_id_dropout_leaves_the_features_alone_and_repeats(self):
    config = _prepared(id_dropout=0.5)
    layers = builder.create_keras_model(config, 4, num_users=2)
    _randomize(layers.model, 1)
    parts = builder.rating_parts(config, layers.model, 4)
    get = lambda name: layers.model.get_layer(name).get_weights()[0]
    x = config.features
    features_only = (x @ get('feature_projection'),
                     (x @ get('feature_bias'))[:, 0])
    users = np.zeros(64, np.int64)
    items = np.arange(64) % 4
    inputs = collections.OrderedDict(user=tf.constant(users),
                                     item=tf.constant(items))
    trained = layers.model(inputs, training=True).numpy()
    full = (parts.user_vectors[0] @ parts.item_embeddings[items].T +
            parts.user_biases[0] + parts.item_bias[items] + parts.global_bias)
    dropped = (parts.user_vectors[0] @ features_only[0][items].T +
               parts.user_biases[0] + features_only[1][items] +
               parts.global_bias)
    # Each example is either whole or has its id part (vector and bias)
    # zeroed, some of each; the same batch drops the same examples.
    is_full = np.isclose(trained, full, rtol=1e-5)
    is_dropped = np.isclose(trained, dropped, rtol=1e-5)
    self.assertTrue(np.all(is_full | is_dropped))
    self.assertBetween(int(is_dropped.sum()), 16, 48)
    np.testing.assert_array_equal(
        layers.model(inputs, training=True).numpy(), trained)
    np.testing.assert_allclose(layers.model(inputs, training=False).numpy(),
                               full, rtol=1e-5)

  def test_reconstruction_layout_keeps_the_user_part_local(self):
    layers = builder.create_keras_model(_prepared(), 4)
    self.assertEqual([layer.name for layer in layers.user_layers],
                     ['user_embedding', 'user_bias'])
    self.assertEqual([layer.name for layer in layers.global_layers],
                     ['item_embedding', 'feature_projection', 'item_bias',
                      'feature_bias', 'global_bias'])
    # Every weight is in a group (the feature table is a constant).
    grouped = {id(w) for layer in layers.user_layers + layers.global_layers
               for w in layer.weights}
    self.assertEqual(grouped, {id(w) for w in layers.model.weights})
    # A new item's id part starts (and, untouched, stays) at zero.
    np.testing.assert_array_equal(
        layers.model.get_layer('item_embedding').get_weights()[0], 0.0)

  def test_a_described_item_is_scored_like_a_new_corpus_item(self):
    config = _prepared()
    layers = builder.create_keras_model(config, 4, num_users=2)
    _randomize(layers.model, 2)
    parts = builder.new_item_parts(config, layers.model)
    encoder = side_info.FeatureEncoder(
        tuple(parts['names']), tuple(parts['genre_names']),
        float(parts['year_mean']), float(parts['year_std']))
    # Item d (year 2010, no genre) described anew gives its feature part.
    x = encoder.encode_one([], 2010.0) * float(parts['multiplier'])
    get = lambda name: layers.model.get_layer(name).get_weights()[0]
    np.testing.assert_allclose(x @ parts['projection'],
                               config.features[3] @ get('feature_projection'),
                               rtol=1e-6)
    np.testing.assert_allclose(x @ parts['bias'],
                               config.features[3] @ get('feature_bias')[:, 0],
                               rtol=1e-6)
    with self.assertRaisesRegex(ValueError, "^genre 'Noir' is not one of "
                                "the corpus's: Comedy"):
      encoder.encode_one(['Noir'], None)

  def test_genome_columns_and_a_described_item_unscored(self):
    info = dataclasses.replace(_INFO, genome=np.float32(
        [[1, -1], [np.nan, np.nan], [0.5, 0.5], [-1.5, 0.5]]))
    config = builder.prepared(mf_features.FeatureMFConfig(
        embedding_dim=3, item_features=('genres', 'year', 'genome')), 0.0,
                              lambda: info)
    rows = np.column_stack([_FEATURES, [[1, -1, 0], [0, 0, 1], [0.5, 0.5, 0],
                                        [-1.5, 0.5, 0]]])
    multiplier = 0.3 / np.linalg.norm(rows, axis=1).max()
    self.assertAlmostEqual(config.feature_multiplier, multiplier)
    np.testing.assert_allclose(config.features, rows * multiplier,
                               rtol=1e-6, atol=1e-7)
    layers = builder.create_keras_model(config, 4, num_users=2)
    parts = builder.new_item_parts(config, layers.model)
    self.assertEqual(int(parts['genome_components']), 2)
    encoder = side_info.FeatureEncoder(
        tuple(parts['names']), tuple(parts['genre_names']),
        float(parts['year_mean']), float(parts['year_std']),
        int(parts['genome_components']))
    # Item b (1990, no genre, not in the genome) described anew: its row.
    np.testing.assert_allclose(
        encoder.encode_one([], 1990.0) * float(parts['multiplier']),
        config.features[1], rtol=1e-6)

  def test_bad_settings_are_one_line(self):
    with self.assertRaisesRegex(ValueError, r'^--item_features=plot: '
                                'expected distinct names among genres, '
                                'year'):
      mf_features.FeatureMFConfig(item_features=('plot',))
    with self.assertRaisesRegex(ValueError, r'^--id_dropout=1: expected'):
      mf_features.FeatureMFConfig(id_dropout=1.0)
    with self.assertRaisesRegex(ValueError, 'the item features are not '
                                'loaded'):
      builder.create_keras_model(mf_features.FeatureMFConfig(), 4)
    with self.assertRaisesRegex(ValueError, '4 items have features, the '
                                'corpus has 5'):
      builder.create_keras_model(_prepared(), 5)


if __name__ == '__main__':
  absltest.main()
