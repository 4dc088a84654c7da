"""Tests of implicit-feedback reconstruction's client examples and of
scoring every item."""

import gc
from unittest import mock
import weakref

from absl.testing import absltest
import numpy as np

from research.fedrec.inference import implicit
from research.fedrec.models import builder
from research.fedrec.models import ncf


class ClientExamplesTest(absltest.TestCase):

  def _negatives(self, excluded=None):
    settings = implicit.Settings(epochs=2, batch_size=8, num_negatives=40)
    items, labels = implicit._client_examples(  # pylint: disable=protected-access
        7, np.array([1, 4]), 6, settings, excluded)
    self.assertEqual(items.shape, (2 * 11, 8))  # 82 examples -> 11 batches.
    self.assertCountEqual(items[labels == 1], [1, 4, 1, 4])
    return set(items[(labels == 0) & (items >= 0)].tolist())

  def test_negatives_avoid_the_known_items(self):
    # 160 draws from {0, 2, 3, 5}: all four come up under this seed.
    self.assertEqual(self._negatives(), {0, 2, 3, 5})

  def test_published_protocol_also_avoids_the_heldout_items(self):
    self.assertEqual(self._negatives(np.array([1, 2, 3, 4])), {0, 5})


class ScoreItemsTest(absltest.TestCase):

  def test_it_equals_keras_predict_in_chunks_and_keeps_no_dead_model(self):
    model = builder.create_keras_model(
        ncf.NeuMFConfig(embedding_dim=4, mlp_layers=(8, 4)), 30, 12).model
    rows = np.array([11, 0, 5, 5, 7])
    expected = model.predict(
        {'user': np.repeat(rows, 30), 'item': np.tile(np.arange(30), 5)},
        verbose=0).reshape(5, 30)
    # 64 pairs per call: two rows a call, the last call one row.
    with mock.patch.object(implicit, 'SCORE_BATCH', 64):
      np.testing.assert_array_equal(implicit.score_items(model, rows, 30),
                                    expected)
    # New weights, the same traced function: the new model's scores.
    model.set_weights([w * 1.5 for w in model.get_weights()])
    np.testing.assert_allclose(
        implicit.score_items(model, rows, 30),
        model.predict({'user': np.repeat(rows, 30),
                       'item': np.tile(np.arange(30), 5)},
                      verbose=0).reshape(5, 30), rtol=1e-6, atol=1e-7)
    self.assertEqual(implicit.score_items(model, [], 30).shape, (0, 30))
    scorers = implicit._SCORERS  # pylint: disable=protected-access
    self.assertIn(model, scorers)
    kept, alive = len(scorers), weakref.ref(model)
    del model
    gc.collect()
    self.assertIsNone(alive())  # Its traced scorer does not keep it.
    self.assertLen(scorers, kept - 1)


if __name__ == '__main__':
  absltest.main()
