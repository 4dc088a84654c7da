"""Tests of implicit-feedback reconstruction's client examples."""

from absl.testing import absltest
import numpy as np

from research.fedrec.inference import implicit


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


if __name__ == '__main__':
  absltest.main()
