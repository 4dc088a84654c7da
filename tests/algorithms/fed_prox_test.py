"""FedProx on two tiny clients: FedAvg at mu = 0, a hand-computed round else.

Each client holds two ratings and takes two local SGD steps (two epochs of one
batch of two), so the proximal term, zero at the first step, moves the second:
w2 = w1 - lr (grad(w1) + mu (w1 - w0)).
"""

import shutil
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow_federated as tff

from research.fedrec.algorithms import fed_avg
from research.fedrec.algorithms import fed_prox
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import optimizers
from research.fedrec.algorithms import registry
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.data import splits
from research.fedrec.models import mf
from research.fedrec.training import runtime
from tests.algorithms import testing_data

# Every test here runs a TFF process.
pytestmark = pytest.mark.slow

_CLIENT_LR = 0.3
_MODEL = mf.MFConfig(embedding_dim=2, use_biases=False, init_stddev=0.5,
                     seed=1)
# Users 0 and 1 each rate two items.
_TRAIN = testing_data.table([0, 0, 1, 1], [0, 1, 1, 2], [4, 2, 3, 5])
_PIPELINE = pipelines.PipelineConfig(batch_size=2, local_epochs=2)


def setUpModule():
  runtime.start()


def tearDownModule():
  runtime.release()


def _gradients(users, items, user, rated, values):
  """Of mean_k (u . v_k - r_k)^2 with respect to both tables."""
  u = users[user]
  error = items[rated] @ u - values
  n = len(rated)
  user_grad = np.zeros_like(users)
  user_grad[user] = 2 / n * error @ items[rated]
  item_grad = np.zeros_like(items)
  np.add.at(item_grad, rated, 2 / n * error[:, None] * u[None, :])
  return user_grad, item_grad


def _proximal_delta(users, items, user, mu, steps=2):
  """A client's update after `steps` full-batch proximal SGD steps."""
  mask = _TRAIN.users == user
  rated, values = _TRAIN.items[mask], _TRAIN.ratings[mask].astype(np.float64)
  start_users, start_items = users.copy(), items.copy()
  for _ in range(steps):
    user_grad, item_grad = _gradients(users, items, user, rated, values)
    users = users - _CLIENT_LR * (user_grad + mu * (users - start_users))
    items = items - _CLIENT_LR * (item_grad + mu * (items - start_items))
  return users - start_users, items - start_items


class FedProxTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    cache_dir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, cache_dir)
    self.store = client_store.create_client_store(
        splits.Split(_TRAIN, testing_data.TEST, testing_data.TEST), cache_dir)

  def _inputs(self, **settings):
    return registry.ProcessInputs(
        model_config=_MODEL, num_items=testing_data.NUM_ITEMS,
        num_users=testing_data.NUM_USERS,
        optimizers=fed_recon.Optimizers(
            client=optimizers.create_optimizer('sgd', _CLIENT_LR),
            server=optimizers.create_optimizer('sgd', 1.0),
            reconstruction=optimizers.create_optimizer('sgd', 0.1)),
        recon=fed_recon.ReconConfig(), pipeline=_PIPELINE,
        store_path=self.store, aggregator=None, uniform_weighting=False,
        implicit=False, settings=settings)

  def _rounds(self, method, rounds, **settings):
    """(weights after each round, metrics of each round)."""
    process = method.build_process(self._inputs(**settings))
    state = process.initialize()
    weights = [[np.asarray(w, np.float64) for w in
                process.get_model_weights(state).trainable]]
    metrics = []
    for _ in range(rounds):
      output = process.next(state, ['0', '1'])
      state = output.state
      weights.append([np.asarray(w, np.float64) for w in
                      process.get_model_weights(state).trainable])
      metrics.append(output.metrics['client_work'])
    return weights, metrics

  def test_strength_zero_is_fedavg(self):
    prox_weights, prox_metrics = self._rounds(fed_prox.METHOD, 2,
                                              proximal_strength=0.0)
    avg_weights, avg_metrics = self._rounds(fed_avg.METHOD, 2)
    for prox, avg in zip(prox_weights, avg_weights):
      for p, a in zip(prox, avg):
        np.testing.assert_allclose(p, a, rtol=0, atol=1e-6)
    for prox, avg in zip(prox_metrics, avg_metrics):
      flat_prox = tff.structure.flatten(prox)
      flat_avg = tff.structure.flatten(avg)
      self.assertLen(flat_prox, len(flat_avg))
      np.testing.assert_allclose(flat_prox, flat_avg, rtol=0, atol=1e-6)

  def test_round_matches_the_hand_computed_proximal_steps(self):
    mu = 0.5
    (before, after), _ = self._rounds(fed_prox.METHOD, 1,
                                      proximal_strength=mu)
    users, items = before  # The trainable order: user table, item table.
    self.assertEqual(users.shape, (testing_data.NUM_USERS, 2))
    deltas = [_proximal_delta(users, items, user, mu) for user in (0, 1)]
    # Both clients saw 4 examples: the weighted mean is the plain mean.
    np.testing.assert_allclose(
        after[0], users + np.mean([d[0] for d in deltas], axis=0),
        rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        after[1], items + np.mean([d[1] for d in deltas], axis=0),
        rtol=1e-5, atol=1e-6)
    # And the proximal term mattered: mu = 0 gives another round.
    plain = [_proximal_delta(users, items, user, 0.0) for user in (0, 1)]
    self.assertGreater(np.abs(np.mean([d[1] for d in deltas], axis=0) -
                              np.mean([d[1] for d in plain], axis=0)).max(),
                       1e-3)

  def test_tff_fed_prox_pushes_clients_away_from_the_global_model(self):
    # Why fedrec owns FedProx's client work: TFF 0.87's FedProx adds
    # mu (w_global - w) to the gradient. If an upgrade fixes it, this fails:
    # then build on tff.learning.algorithms.build_weighted_fed_prox again.
    mu = 0.5
    inputs = self._inputs()
    model_fn = fed_avg.create_model_fn(_MODEL, testing_data.NUM_ITEMS,
                                       testing_data.NUM_USERS)
    process = fed_avg.with_client_data(
        tff.learning.algorithms.build_weighted_fed_prox(
            model_fn, proximal_strength=mu,
            client_optimizer_fn=inputs.optimizers.client,
            server_optimizer_fn=inputs.optimizers.server),
        _MODEL, testing_data.NUM_ITEMS, _PIPELINE, self.store, False)
    state = process.initialize()
    users, items = (np.asarray(w, np.float64) for w in
                    process.get_model_weights(state).trainable)
    after = [np.asarray(w, np.float64) for w in process.get_model_weights(
        process.next(state, ['0', '1']).state).trainable]
    away = [_proximal_delta(users, items, user, -mu) for user in (0, 1)]
    np.testing.assert_allclose(
        after[1], items + np.mean([d[1] for d in away], axis=0),
        rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  absltest.main()
