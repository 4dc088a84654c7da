"""Tests of the TFF-free model export."""

import json
import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from research.fedrec.data import side_info
from research.fedrec.inference import demographics
from research.fedrec.inference import export as export_lib
from research.fedrec.inference import reconstruction


def _model(use_biases):
  rng = np.random.default_rng(0)
  return reconstruction.ItemModel(
      item_embeddings=rng.normal(size=(5, 3)).astype(np.float32),
      item_bias=rng.normal(size=5).astype(np.float32) if use_biases else None,
      global_bias=3.25 if use_biases else 0.0,
      initial_user_vector=rng.normal(size=3).astype(np.float32))


class ExportTest(absltest.TestCase):

  def _write(self, model, source=export_lib.RECONSTRUCT, **kwargs):
    path = os.path.join(self.create_tempdir().full_path, 'export')
    export_lib.write(path, export_lib.Export(
        model=model,
        settings=reconstruction.Settings(epochs=2, learning_rate=0.3),
        user_source=source, raw_users=np.array([7, 9]),
        raw_items=np.array([11, 12, 13, 14, 15]),
        titles=['One', 'Two, with comma', 'Trois "é"', '', 'Five'],
        item_train_counts=np.array([3, 0, 1, 2, 5]),
        rating_scale=(0.5, 5.0, 0.5),
        metadata=dict(dataset='ml-test', raw_ids_numeric=True), **kwargs))
    return path

  def test_round_trip_and_keras_model_predicts_the_same(self):
    for use_biases in (True, False):
      model = _model(use_biases)
      path = self._write(model)
      self.assertCountEqual(os.listdir(path), ['model', 'export.json',
                                               'items.csv', 'users.csv'])
      loaded = export_lib.load_export(path)
      np.testing.assert_array_equal(loaded.model.item_embeddings,
                                    model.item_embeddings)
      self.assertEqual(loaded.model.global_bias, model.global_bias)
      np.testing.assert_array_equal(loaded.model.initial_user_vector,
                                    model.initial_user_vector)
      self.assertEqual(loaded.settings.epochs, 2)
      self.assertEqual(loaded.titles[1:3], ['Two, with comma', 'Trois "é"'])
      self.assertEqual(loaded.raw_items.tolist(), [11, 12, 13, 14, 15])
      self.assertEqual(loaded.raw_users.tolist(), [7, 9])
      self.assertEqual(loaded.rating_scale, (0.5, 5.0, 0.5))
      keras_model = tf.keras.models.load_model(os.path.join(path, 'model'),
                                               compile=False)
      vectors = np.random.default_rng(1).normal(size=(5, 3)).astype(
          np.float32)
      biases = np.linspace(-1, 1, 5).astype(np.float32)
      items = np.array([4, 0, 2, 2, 1])
      got = keras_model({'user_vector': vectors, 'user_bias': biases,
                         'item': items}).numpy()
      np.testing.assert_allclose(got, model.predict(vectors, biases, items),
                                 rtol=1e-6)

  def test_user_table(self):
    table = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = self._write(_model(True), export_lib.USER_TABLE,
                       user_vectors=table,
                       user_biases=np.array([0.5, -0.5], np.float32))
    loaded = export_lib.load_export(path)
    np.testing.assert_array_equal(loaded.user_vectors, table)
    self.assertEqual(loaded.user_biases.tolist(), [0.5, -0.5])

  def test_user_prior_round_trip(self):
    info = side_info.UserInfo(np.arange(3), {
        'age': np.array(['30', '19', '30']), 'gender': np.array(['F', 'M', '']),
        'occupation': np.array(['a=b', 'x', 'x'])}, 't')
    encoder = side_info.DemographicEncoder.fit(info)
    targets = np.arange(12, dtype=np.float64).reshape(3, 4)
    noised = demographics.UserPrior.of(encoder, encoder.encode(info), targets,
                                       clip=2.0, noise_multiplier=0.5, seed=1)
    for prior in (demographics.UserPrior.of(encoder, encoder.encode(info),
                                            targets),
                  demographics.UserPrior.of(None, None, targets), noised):
      path = self._write(_model(True), user_prior=prior)
      self.assertIn(export_lib.USER_PRIOR_FILE, os.listdir(path))
      loaded = export_lib.load_export(path).user_prior
      np.testing.assert_array_equal(loaded.gram, prior.gram)
      np.testing.assert_array_equal(loaded.cross, prior.cross)
      self.assertEqual(loaded.encoder, prior.encoder)
      self.assertEqual((loaded.noise_std, loaded.clip),
                       (prior.noise_std, prior.clip))
      if prior is not noised:
        self.assertEqual(loaded.num_users, 3)
        np.testing.assert_array_equal(loaded.mean_row(), [4, 5, 6, 7])
    self.assertIsNone(export_lib.load_export(self._write(_model(True))
                                            ).user_prior)

  def test_rewrite_replaces_and_leaves_no_temporary(self):
    path = self._write(_model(True))
    parent = os.path.dirname(path)
    model = _model(True)
    export_lib.write(path, export_lib.Export(
        model=model, settings=reconstruction.Settings(),
        user_source=export_lib.RECONSTRUCT, raw_users=np.array([1]),
        raw_items=np.arange(5), titles=[''] * 5,
        item_train_counts=np.zeros(5, np.int64), rating_scale=(1.0, 5.0, 1.0),
        metadata={}))
    self.assertEqual(os.listdir(parent), ['export'])
    with open(os.path.join(path, 'export.json')) as f:
      self.assertEqual(json.load(f)['num_users'], 1)

  def test_missing_export_is_one_clear_error(self):
    with self.assertRaisesRegex(ValueError, 'no exported model'):
      export_lib.load_export(self.create_tempdir().full_path)


if __name__ == '__main__':
  absltest.main()
