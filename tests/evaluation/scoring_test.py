"""Tests of FedRecon's scoring kept across evaluations (scoring.Reconstruction)."""

from unittest import mock

from absl.testing import absltest
import numpy as np

from research.fedrec.data import corpus
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.evaluation import scoring
from research.fedrec.inference import implicit
from research.fedrec.models import builder
from research.fedrec.models import ncf

_DATA = corpus.DataConfig(
    feedback=corpus.Feedback.IMPLICIT,
    synthetic_config=synthetic.SyntheticConfig(
        num_users=30, num_items=90, num_ratings=700, min_ratings_per_user=8,
        max_ratings_per_user=60, selection_affinity=1.5))
_CONFIG = ncf.NeuMFConfig(embedding_dim=4, mlp_layers=(8, 4), l2=0.01)
_SETTINGS = implicit.Settings(epochs=2, batch_size=8, num_negatives=3,
                              learning_rate=0.5, seed=5)
_BATCH = 8  # Users per reconstruction batch: 30 users in 4 batches.


def _global_model(seed: int):
  """A reconstruction-layout NeuMF with weights drawn from `seed`."""
  model = builder.create_keras_model(_CONFIG, _DATA.synthetic_config.num_items
                                     ).model
  rng = np.random.default_rng(seed)
  model.set_weights([w + rng.normal(0.0, 0.3, w.shape).astype(np.float32)
                     for w in model.get_weights()])
  return model


def _reference(global_model, partition, rows):
  """Scores as `reconstruct_users` and `score_items` give them in a fresh
  classic-layout model (nothing kept from an earlier call)."""
  num_items = partition.task.num_items
  classic = builder.create_keras_model(_CONFIG, num_items, _BATCH).model
  initial = builder.initial_user_vectors(_CONFIG, num_items)
  for layer in global_model.layers:
    if layer.weights and layer.name not in initial:
      classic.get_layer(layer.name).set_weights(layer.get_weights())
  implicit.reconstruct_users(
      classic, list(initial), list(initial.values()),
      partition.task.users[rows], partition.support[rows], _SETTINGS)
  return implicit.score_items(classic, np.arange(len(rows)), num_items)


class ReconstructionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    data = corpus.load_corpus(_DATA)
    split = splits.split(data.ratings, splits.SplitConfig(
        kind=splits.SplitKind.LEAVE_ONE_OUT))
    cls.partition = scoring.build_partition(data, split, 'val')
    cls.batches = [np.arange(s, min(s + _BATCH, 30)) for s in range(0, 30,
                                                                     _BATCH)]

  def _scores(self, reconstruction, model):
    score = reconstruction.scores(model)
    return [score(rows) for rows in self.batches]

  def test_kept_for_many_models_it_scores_each_as_a_fresh_one(self):
    first, second = _global_model(1), _global_model(2)
    reconstruction = scoring.Reconstruction(_CONFIG, self.partition,
                                            _SETTINGS, _BATCH)
    scores_first = self._scores(reconstruction, first)
    scores_second = self._scores(reconstruction, second)
    again = self._scores(reconstruction, first)
    for rows, a, b, c in zip(self.batches, scores_first, scores_second,
                             again):
      self.assertEqual(a.shape, (len(rows), 90))
      np.testing.assert_array_equal(c, a)  # Nothing left from `second`.
      np.testing.assert_allclose(
          b, _reference(second, self.partition, rows), rtol=1e-5, atol=1e-6)
      self.assertGreater(np.abs(a - b).max(), 1e-2)  # The models differ.

  def test_batches_past_the_cache_budget_are_redrawn_alike(self):
    model = _global_model(3)
    cached = self._scores(scoring.Reconstruction(
        _CONFIG, self.partition, _SETTINGS, _BATCH), model)
    with mock.patch.object(scoring, 'EXAMPLES_CACHE_BYTES', 0):
      reconstruction = scoring.Reconstruction(_CONFIG, self.partition,
                                              _SETTINGS, _BATCH)
      uncached = self._scores(reconstruction, model)
      self.assertEmpty(reconstruction._examples)  # pylint: disable=protected-access
    for a, b in zip(cached, uncached):
      np.testing.assert_array_equal(a, b)


if __name__ == '__main__':
  absltest.main()
