"""Federated Reconstruction on tiny clients, against updates written out.

With one batch per client (batch size >= a client's ratings) the data order
does not matter, so one round can be computed by hand in NumPy:
reconstruction is one SGD step on the user vector with items frozen, then one
SGD step on the rated items' vectors with the user vector frozen; the server
adds the example-weighted mean of the item deltas (server SGD, rate 1).
"""

import collections
import shutil
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import optimizers
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.models import mf
from research.fedrec.training import runtime
from tests.algorithms import testing_data

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

_RECON_LR, _CLIENT_LR = 0.1, 0.2
_MODEL = mf.MFConfig(embedding_dim=2, use_biases=False, init_stddev=0.5,
                     seed=3)
_PIPELINE = pipelines.PipelineConfig(batch_size=8)
_RECON = fed_recon.ReconConfig()


def setUpModule():
  runtime.start()


def tearDownModule():
  runtime.release()


def _initial_user_vector():
  layers = mf.create_keras_model(_MODEL, testing_data.NUM_ITEMS)
  return layers.model.get_layer('user_embedding').get_weights()[0][0].astype(
      np.float64)


def _reconstruct(items_matrix, items, values, u, l2=0.0):
  # Loss: mean_k (u.v_k - r_k)^2 + mean_k l2 (|u|^2 + |v_k|^2).
  error = items_matrix[items] @ u - values
  grad = 2 / len(items) * error @ items_matrix[items] + 2 * l2 * u
  return u - _RECON_LR * grad


def _client_delta(items_matrix, items, values, l2=0.0):
  u = _reconstruct(items_matrix, items, values, _initial_user_vector(), l2)
  error = items_matrix[items] @ u - values
  n = len(items)
  grad = np.zeros_like(items_matrix)
  np.add.at(grad, items, 2 / n * error[:, None] * u[None, :] +
            2 * l2 / n * items_matrix[items])
  return -_CLIENT_LR * grad


class FedReconTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.cache_dir = tempfile.mkdtemp()
    cls.store = client_store.create_client_store(testing_data.create_split(),
                                                 cls.cache_dir)
    cls.optimizers = fed_recon.Optimizers(
        client=optimizers.create_optimizer('sgd', _CLIENT_LR),
        server=optimizers.create_optimizer('sgd', 1.0),
        reconstruction=optimizers.create_optimizer('sgd', _RECON_LR))
    cls.process = fed_recon.build_training_process(
        _MODEL, testing_data.NUM_ITEMS, _RECON, cls.optimizers, _PIPELINE,
        cls.store)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.cache_dir)
    super().tearDownClass()

  def _items_matrix(self, state):
    (matrix,) = self.process.get_model_weights(state).trainable
    return np.asarray(matrix, np.float64)

  def test_one_round_matches_the_hand_computed_update(self):
    state = self.process.initialize()
    before = self._items_matrix(state)
    output = self.process.next(state, ['0', '1'])
    deltas, weights = [], []
    for user in (0, 1):
      items, values = testing_data.client_rows(user)
      deltas.append(_client_delta(before, items, values))
      weights.append(len(items))
    expected = before + np.average(deltas, axis=0, weights=weights)
    np.testing.assert_allclose(self._items_matrix(output.state), expected,
                               rtol=1e-5, atol=1e-6)

  def test_one_round_with_l2_matches_the_hand_computed_update(self):
    l2 = 0.3
    model = mf.MFConfig(embedding_dim=2, use_biases=False, init_stddev=0.5,
                        seed=3, l2=l2)
    process = fed_recon.build_training_process(
        model, testing_data.NUM_ITEMS, _RECON, self.optimizers, _PIPELINE,
        self.store)
    state = process.initialize()
    (before,) = process.get_model_weights(state).trainable
    before = np.asarray(before, np.float64)
    (after,) = process.get_model_weights(
        process.next(state, ['0', '1']).state).trainable
    deltas, weights = [], []
    for user in (0, 1):
      items, values = testing_data.client_rows(user)
      deltas.append(_client_delta(before, items, values, l2))
      weights.append(len(items))
    np.testing.assert_allclose(
        after, before + np.average(deltas, axis=0, weights=weights),
        rtol=1e-5, atol=1e-6)

  def test_server_state_holds_no_user_embedding(self):
    state = self.process.next(self.process.initialize(), ['0', '1']).state
    weights = self.process.get_model_weights(state)
    self.assertEqual([tuple(np.shape(w)) for w in weights.trainable],
                     [(testing_data.NUM_ITEMS, 2)])
    self.assertEmpty(weights.non_trainable)
    # Every tensor anywhere in the state (weights, optimizer, aggregator) is
    # item-shaped or a scalar: no (1, dim) user vector, no user table.
    for name, leaf in tff.program.structure_utils.flatten_with_name(state):
      shape = np.shape(leaf)
      self.assertIn(shape, [(), (testing_data.NUM_ITEMS, 2)],
                    msg=f'{name} has shape {shape}')

  def test_evaluation_reconstructs_then_scores_the_query(self):
    state = self.process.initialize()
    items_matrix = self._items_matrix(state)
    evaluation, client_ids = fed_recon.build_evaluation(
        _MODEL, testing_data.NUM_ITEMS, _RECON,
        self.optimizers.reconstruction, _PIPELINE, self.store, 'test')
    self.assertEqual(client_ids, ['2'])
    eval_state = evaluation.set_model_weights(
        evaluation.initialize(), self.process.get_model_weights(state))
    metrics = evaluation.next(eval_state, client_ids).metrics[
        'client_work']['eval']['current_round_metrics']
    support = testing_data.TEST.support
    u = _reconstruct(items_matrix, support.items,
                     support.ratings.astype(np.float64),
                     _initial_user_vector())
    error = items_matrix[1] @ u - 3.0
    self.assertAlmostEqual(float(metrics['rmse']), abs(error), places=5)
    self.assertAlmostEqual(float(metrics['mse']), error**2, places=5)
    self.assertEqual(float(metrics['rating_accuracy']),
                     float(abs(error) <= 0.5))

  def test_eval_split_separates_support_from_query(self):
    split_fn = fed_recon.create_eval_split_fn(_RECON, _PIPELINE)
    batches = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=collections.OrderedDict(item=np.arange(5, dtype=np.int64),
                                  is_query=np.array([0, 1, 0, 1, 0])),
        y=np.arange(5, dtype=np.float32))).batch(2)
    support, query = split_fn(batches)
    support_items = sorted(int(i) for b in support for i in b['x'])
    query_items = sorted(int(i) for b in query for i in b['x'])
    self.assertEqual((support_items, query_items), ([0, 2, 4], [1, 3]))
    # Evaluation reconstructs for --eval_recon_epochs when set, training's
    # --recon_epochs otherwise.
    for recon, epochs in ((fed_recon.ReconConfig(recon_epochs=2), 2),
                          (fed_recon.ReconConfig(recon_epochs=2,
                                                 eval_recon_epochs=3), 3)):
      support, _ = fed_recon.create_eval_split_fn(recon, _PIPELINE)(batches)
      self.assertEqual(sorted(int(i) for b in support for i in b['x']),
                       sorted([0, 2, 4] * epochs))
    with self.assertRaisesRegex(ValueError, '--eval_recon_epochs must be >= 1'):
      fed_recon.ReconConfig(eval_recon_epochs=0)


if __name__ == '__main__':
  absltest.main()
