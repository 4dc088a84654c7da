"""FedAvg on tiny clients, against one round written out in NumPy.

Each client takes one SGD step (one batch) on its rows of the user table and
its rated items; the server adds the example-weighted mean of the deltas.
"""

import shutil
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from research.fedrec.algorithms import fed_avg
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import optimizers
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.models import mf
from research.fedrec.training import runtime
from tests.algorithms import testing_data

# Every test here runs a TFF process, a binary or a training run.
pytestmark = pytest.mark.slow

_CLIENT_LR = 0.3
_MODEL = mf.MFConfig(embedding_dim=2, use_biases=False, init_stddev=0.5,
                     seed=1)


def setUpModule():
  runtime.start()


def tearDownModule():
  runtime.release()


def _client_delta(users_matrix, items_matrix, user, items, values, l2=0.0):
  # Loss: mean_k (u.v_k - r_k)^2 + mean_k l2 (|u|^2 + |v_k|^2).
  u = users_matrix[user]
  error = items_matrix[items] @ u - values
  n = len(items)
  user_grad = np.zeros_like(users_matrix)
  user_grad[user] = 2 / n * error @ items_matrix[items] + 2 * l2 * u
  item_grad = np.zeros_like(items_matrix)
  np.add.at(item_grad, items, 2 / n * error[:, None] * u[None, :] +
            2 * l2 / n * items_matrix[items])
  return -_CLIENT_LR * user_grad, -_CLIENT_LR * item_grad


class FedAvgTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.cache_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.cache_dir)
    self.store = client_store.create_client_store(testing_data.create_split(),
                                                  self.cache_dir)

  def _process(self, uniform_weighting, model=_MODEL):
    opt = fed_recon.Optimizers(
        client=optimizers.create_optimizer('sgd', _CLIENT_LR),
        server=optimizers.create_optimizer('sgd', 1.0),
        reconstruction=optimizers.create_optimizer('sgd', 0.1))
    return fed_avg.build_training_process(
        model, testing_data.NUM_ITEMS, testing_data.NUM_USERS, opt,
        pipelines.PipelineConfig(batch_size=8), self.store,
        uniform_weighting=uniform_weighting)

  def _run_round(self, uniform_weighting, model=_MODEL):
    process = self._process(uniform_weighting, model)
    state = process.initialize()
    names = [v.name for v in mf.create_keras_model(
        model, testing_data.NUM_ITEMS,
        testing_data.NUM_USERS).model.trainable_variables]
    before = dict(zip(names, (np.asarray(w, np.float64) for w in
                              process.get_model_weights(state).trainable)))
    after = dict(zip(names, (np.asarray(w, np.float64) for w in
                             process.get_model_weights(
                                 process.next(state, ['0', '1']).state
                             ).trainable)))
    users = before['user_embedding/embeddings:0']
    items = before['item_embedding/embeddings:0']
    user_deltas, item_deltas, weights = [], [], []
    for user in (0, 1):
      rated, values = testing_data.client_rows(user)
      du, di = _client_delta(users, items, user, rated, values, model.l2)
      user_deltas.append(du)
      item_deltas.append(di)
      weights.append(1.0 if uniform_weighting else len(rated))
    np.testing.assert_allclose(
        after['user_embedding/embeddings:0'],
        users + np.average(user_deltas, axis=0, weights=weights),
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        after['item_embedding/embeddings:0'],
        items + np.average(item_deltas, axis=0, weights=weights),
        rtol=1e-5, atol=1e-6)

  def test_weighted_round_matches_the_hand_computed_update(self):
    self._run_round(uniform_weighting=False)

  def test_unweighted_round_matches_the_hand_computed_update(self):
    self._run_round(uniform_weighting=True)

  def test_round_with_l2_matches_the_hand_computed_update(self):
    # The L2 term reaches TFF's loss as an output column, not via add_loss.
    self._run_round(uniform_weighting=False,
                    model=mf.MFConfig(embedding_dim=2, use_biases=False,
                                      init_stddev=0.5, seed=1, l2=0.3))


if __name__ == '__main__':
  absltest.main()
