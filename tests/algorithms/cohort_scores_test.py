"""Cohort scorers: a weight given once for the cohort scores as its copies.

FedRecon's reconstruction in cohorts (fed_recon_cohort.py) gives the frozen
dense weights without the user axis; every user's scores must be those of
the same weights copied per user (whose scores the exactness tests compare
with the per-client process).
"""

import types

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import cohort_scores

_K, _B, _ITEMS, _FEATURES = 3, 4, 6, 5


def _ncf_params(rng, item_rows: bool):
  """NeuMF's weights (embedding 4, MLP 8-4), user and item parts per user."""
  params = {
      'gmf_user_embedding': rng.normal(size=(_K, 4)),
      'mlp_user_embedding': rng.normal(size=(_K, 4)),
  }
  if item_rows:
    params.update(gmf_item_embedding=rng.normal(size=(_K, _B, 4)),
                  mlp_item_embedding=rng.normal(size=(_K, _B, 4)))
  shared = {
      'mlp_0/kernel': rng.normal(size=(8, 8)),
      'mlp_0/bias': rng.normal(size=(8,)),
      'mlp_1/kernel': rng.normal(size=(8, 4)),
      'mlp_1/bias': rng.normal(size=(4,)),
      'logit/kernel': rng.normal(size=(8, 1)),
      'logit/bias': rng.normal(size=(1,)),
  }
  return params, shared


def _mf_params(rng):
  """MF's user and item parts (embedding 4, with biases), per user."""
  return {'user_embedding': rng.normal(size=(_K, 4)),
          'item_embedding': rng.normal(size=(_K, _B, 4)),
          'user_bias': rng.normal(size=(_K, 1)),
          'item_bias': rng.normal(size=(_K, _B, 1))}


def _both(params, shared):
  """(the shared weights once, the same copied for each of the K users)."""
  def cast(d):
    return {k: tf.constant(v, tf.float32) for k, v in d.items()}
  copied = {k: np.broadcast_to(v, (_K,) + v.shape) for k, v in shared.items()}
  return cast({**params, **shared}), cast({**params, **copied})


class SharedWeightsTest(absltest.TestCase):

  def _assert_same_scores(self, scorer, config, params, shared, inputs=None):
    once, copies = _both(params, shared)
    logits_once, squares_once = scorer(config, once, inputs)
    logits, squares = scorer(config, copies, inputs)
    self.assertEqual(logits_once.shape, (_K, _B))
    np.testing.assert_allclose(logits_once, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(squares_once, squares, rtol=1e-6, atol=1e-6)

  def test_neumf(self):
    rng = np.random.default_rng(0)
    params, shared = _ncf_params(rng, item_rows=True)
    config = types.SimpleNamespace(mlp_layers=(8, 4))
    self._assert_same_scores(cohort_scores.ncf_scores, config, params,
                             shared)

  def test_mf_with_biases(self):
    rng = np.random.default_rng(1)
    params = _mf_params(rng)
    config = types.SimpleNamespace(use_biases=True)
    self._assert_same_scores(cohort_scores.mf_scores, config, params,
                             {'global_bias': np.array(3.5)})

  def _features_config(self, rng, **kwargs):
    return types.SimpleNamespace(
        features=rng.normal(size=(_ITEMS, _FEATURES)).astype(np.float32),
        id_dropout=0.5, seed=7, **kwargs)

  def _features_inputs(self, rng):
    return {'items': tf.constant(rng.integers(0, _ITEMS, size=(_K, _B)),
                                 tf.int32),
            'mask': tf.constant([[1.0] * _B, [1.0] * _B,
                                 [1.0, 1.0, 0.0, 0.0]])}

  def test_mf_with_item_features(self):
    rng = np.random.default_rng(2)
    params = _mf_params(rng)
    shared = {'feature_projection': rng.normal(size=(_FEATURES, 4)),
              'feature_bias': rng.normal(size=(_FEATURES, 1)),
              'global_bias': np.array(-0.5)}
    self._assert_same_scores(
        cohort_scores.mf_features_scores,
        self._features_config(rng, use_biases=True), params, shared,
        self._features_inputs(rng))

  def test_neumf_with_item_features(self):
    rng = np.random.default_rng(3)
    params, shared = _ncf_params(rng, item_rows=True)
    shared.update(gmf_feature_projection=rng.normal(size=(_FEATURES, 4)),
                  mlp_feature_projection=rng.normal(size=(_FEATURES, 4)))
    self._assert_same_scores(
        cohort_scores.neumf_features_scores,
        self._features_config(rng, mlp_layers=(8, 4)), params, shared,
        self._features_inputs(rng))


if __name__ == '__main__':
  absltest.main()
