"""Hand-checkable top-K, group and cold-start recommendation."""

import dataclasses

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from research.fedrec.inference import demographics
from research.fedrec.inference import export as export_lib
from research.fedrec.inference import reconstruction
from research.fedrec.inference import recommender as recommender_lib

# Predicted ratings of 3 users for 4 items. Item embeddings are the identity
# and there are no biases, so user u's vector is row u and predicts it exactly.
PREDICTIONS = np.array([[3, 3, 4, 3],
                        [1, 4, 4, 5],
                        [4, 2, 2, 4]], np.float32)


def _exported(user_source=export_lib.USER_TABLE, use_biases=False):
  model = reconstruction.ItemModel(
      item_embeddings=np.eye(4, dtype=np.float32),
      item_bias=np.array([0.5, -0.5, 0.0, 0.0], np.float32)
      if use_biases else None,
      global_bias=3.0 if use_biases else 0.0,
      initial_user_vector=np.zeros(4, np.float32))
  return export_lib.Export(
      model=model, settings=reconstruction.Settings(learning_rate=0.5),
      user_source=user_source, raw_users=np.array([10, 20, 30]),
      raw_items=np.array([1, 2, 3, 4]), titles=['A', 'B', 'C', 'D'],
      item_train_counts=np.array([5, 9, 9, 1]),
      rating_scale=(1.0, 5.0, 1.0), metadata={},
      user_vectors=PREDICTIONS.copy(), user_biases=np.zeros(3, np.float32))


def _no_history():
  return recommender_lib.UserRatings(np.zeros(0, np.int64),
                                     np.zeros(0, np.float32))


class RecommenderTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.recommender = recommender_lib.Recommender(_exported())

  def test_top_k_excludes_rated_items(self):
    scores = self.recommender.user_scores(0, _no_history())
    np.testing.assert_array_equal(scores, PREDICTIONS[0])
    # User 0 rated item 2 (its favourite); ties 3,3,3 go by item index.
    self.assertEqual(self.recommender.recommend(scores, [2], 3).tolist(),
                     [0, 1, 3])
    self.assertEqual(self.recommender.recommend(scores, [2], 2).tolist(),
                     [0, 1])
    # User 1 rated items 3 and 0: 1 and 2 tie at 4.
    scores = self.recommender.user_scores(1, _no_history())
    self.assertEqual(self.recommender.recommend(scores, [3, 0], 10).tolist(),
                     [1, 2])

  # Group of all three, nothing rated. By hand:
  #   average       8/3, 3, 10/3, 4        -> 3, 2, 1, 0
  #   least misery  1, 2, 2, 3             -> 3, 1, 2, 0 (tie by index)
  #   most pleasure 4, 4, 4, 5             -> 3, 0, 1, 2
  #   borda points (candidates ranked below, ties share the mean):
  #     user 0: 1, 1, 3, 1; user 1: 0, 1.5, 1.5, 3; user 2: 2.5, .5, .5, 2.5
  #     sum 3.5, 3, 5, 6.5                 -> 3, 2, 0, 1
  @parameterized.parameters(
      ('average', [3, 2, 1, 0], [8 / 3, 3, 10 / 3, 4]),
      ('least_misery', [3, 1, 2, 0], [1, 2, 2, 3]),
      ('most_pleasure', [3, 0, 1, 2], [4, 4, 4, 5]),
      ('borda', [3, 2, 0, 1], [3.5, 3, 5, 6.5]),
  )
  def test_group_strategies(self, strategy, ranking, scores):
    items, group = self.recommender.recommend_group(PREDICTIONS, [], 4,
                                                    strategy)
    self.assertEqual(items.tolist(), ranking)
    np.testing.assert_allclose(group, scores, rtol=1e-6)

  def test_group_excludes_items_any_member_rated(self):
    # Item 3 excluded: borda over items 0..2 is 2.5, 2.5, 4.
    items, group = self.recommender.recommend_group(PREDICTIONS, [3], 4,
                                                    'borda')
    self.assertEqual(items.tolist(), [2, 0, 1])
    np.testing.assert_allclose(group[:3], [2.5, 2.5, 4])
    items, _ = self.recommender.recommend_group(PREDICTIONS, [3], 4,
                                                'average')
    self.assertEqual(items.tolist(), [2, 1, 0])

  def test_cold_start_moves_toward_given_ratings(self):
    recommender = recommender_lib.Recommender(
        _exported(export_lib.RECONSTRUCT, use_biases=True))
    history = recommender_lib.UserRatings(np.array([0, 1]),
                                          np.array([5.0, 1.0], np.float32))
    before = recommender.initial_scores()
    after = recommender.new_user_scores(history)
    self.assertGreater(after[0], before[0])
    self.assertLess(after[1], before[1])
    # Items without ratings keep their item-side prediction (identity
    # embeddings: only the user's bias moves them).
    self.assertAlmostEqual(after[2] - before[2], after[3] - before[3],
                           places=6)
    # Deterministic.
    np.testing.assert_array_equal(after, recommender.new_user_scores(history))
    with self.assertRaisesRegex(ValueError, 'No ratings'):
      recommender.new_user_scores(_no_history())

  def test_known_user_under_fedrecon_is_reconstructed_from_history(self):
    recommender = recommender_lib.Recommender(
        _exported(export_lib.RECONSTRUCT, use_biases=True))
    history = recommender_lib.UserRatings(np.array([3]),
                                          np.array([5.0], np.float32))
    np.testing.assert_array_equal(recommender.user_scores(1, history),
                                  recommender.new_user_scores(history))

  def test_fallback_ranks_by_bias_then_popularity(self):
    recommender = recommender_lib.Recommender(
        _exported(export_lib.RECONSTRUCT, use_biases=True))
    key, shown, what = recommender.fallback_scores()
    # b_i + g = 3.5, 2.5, 3, 3; items 2 and 3 tie, item 2 is more popular.
    self.assertEqual(recommender.recommend(key, [], 4).tolist(), [0, 2, 3, 1])
    np.testing.assert_allclose(shown, [3.5, 2.5, 3.0, 3.0])
    self.assertIn('average user (item bias + global bias)', what)
    key, shown, what = self.recommender.fallback_scores()  # No biases.
    self.assertIsNone(shown)
    self.assertEqual(what, 'popularity (training ratings)')
    self.assertEqual(self.recommender.recommend(key, [], 4).tolist(),
                     [1, 2, 0, 3])

  def test_fallback_is_the_mean_training_user_of_the_prior(self):
    # Two training users [p_u, b_u]: mean vector (0, 0.5, 0.5, -1), mean
    # bias 0.25; identity item embeddings, b_i + g = 3.5, 2.5, 3, 3, so
    # the mean user rates 3.75, 3.25, 3.75, 2.25: items 0 and 2 tie, item 2
    # is more popular.
    prior = demographics.UserPrior.of(None, None, np.array(
        [[1.0, 0.0, 1.0, -1.0, 0.5], [-1.0, 1.0, 0.0, -1.0, 0.0]]))
    recommender = recommender_lib.Recommender(dataclasses.replace(
        _exported(export_lib.RECONSTRUCT, use_biases=True), user_prior=prior))
    key, shown, what = recommender.fallback_scores()
    np.testing.assert_allclose(shown, [3.75, 3.25, 3.75, 2.25])
    self.assertEqual(recommender.recommend(key, [], 4).tolist(), [2, 0, 1, 3])
    self.assertEqual(what, 'the model\'s rating for the mean of its 2 '
                     'training users (their vectors and biases)')


if __name__ == '__main__':
  absltest.main()
