"""Stateful clients (FedMF, PFedRec, FedRecon + DualPer) against a NumPy
reference of their rounds.

The reference below is written from the methods' definitions (fed_mf.py,
pfedrec.py: PFedRec's official `engine.py`), not from the TF code: each user
trains MF with biases and L2 from its own kept vector and bias and the
broadcast item side, batch by batch in the packer's order (the data order is
the pipeline's, tested elsewhere), jointly (FedMF) or first its own part then
the item side at a scaled rate (PFedRec), or rebuilds its part from FedRecon's
initial value and then trains the item side with it frozen (FedRecon +
DualPer); its kept state is written back; the
server applies the example-weighted mean of the item-side updates (SGD, rate
1). Two rounds in which some users come back check that the state persists;
per client (one user per TFF client) must equal cohorts, and a resumed run
the uninterrupted one, bit for bit, users' states included.
"""

import dataclasses
import os

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow_federated as tff

from research.fedrec.algorithms import client_data
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import registry
from research.fedrec.algorithms import sampling
from research.fedrec.algorithms import stateful
from research.fedrec.data import pipelines
from research.fedrec.models import mf
from research.fedrec.privacy import aggregation
from research.fedrec.privacy import settings as privacy_settings
from research.fedrec.training import experiment
from research.fedrec.training import loop
from tests.algorithms import cohort_testing

# Every test here runs TFF processes.
pytestmark = pytest.mark.slow

_NUM_USERS, _NUM_ITEMS = cohort_testing.NUM_USERS, cohort_testing.NUM_ITEMS
_MODEL = mf.MFConfig(embedding_dim=3, l2=0.05, seed=2)
# PFedRec's own model: no item, user or global bias.
_NO_BIASES = dataclasses.replace(_MODEL, use_biases=False)
_PIPELINE = pipelines.PipelineConfig(batch_size=4, local_epochs=2, seed=3)
_CLIENT_LR = 0.1
_RECON_LR = 0.3
_RECON = fed_recon.ReconConfig(recon_epochs=2, post_recon_epochs=1)
_ROUNDS = (['0', '3', '4', '7', '9', '12', '15', '16'],
           ['0', '1', '3', '9', '15', '20'])


def _inputs(store, state_dir, cohort_size=0, aggregator=None,
            clip_query=None, uniform=False, model=_MODEL):
  optimizer_settings = experiment.OptimizerConfig(
      client='sgd', client_learning_rate=_CLIENT_LR, server='sgd',
      server_learning_rate=1.0, reconstruction='sgd',
      reconstruction_learning_rate=_RECON_LR)
  return registry.ProcessInputs(
      model_config=model, num_items=_NUM_ITEMS, num_users=_NUM_USERS,
      optimizers=optimizer_settings.create(), recon=_RECON,
      pipeline=_PIPELINE, store_path=store, aggregator=aggregator,
      uniform_weighting=uniform, implicit=False, settings={},
      in_cohorts=True, cohort_size=cohort_size,
      optimizer_settings=optimizer_settings, clip_query=clip_query,
      client_state_dir=state_dir, seed=4)


def _user_round(weights, p, bu, items, ratings, rules, recon_p=None):
  """One user's local epochs in NumPy: (final item side, p, bu, examples).

  With `rules.reconstruct` the user's kept p, bu are not used: its part
  starts at FedRecon's initial value (`recon_p`, bias 0) and takes
  `_RECON.recon_epochs` epochs at `_RECON_LR` with the item side frozen.
  """
  biases = len(weights) > 1  # Else no item, user or global bias (all 0).
  q = np.array(weights[0], np.float64)
  c = np.array(weights[1], np.float64)[:, 0] if biases else np.zeros(len(q))
  g = float(np.reshape(weights[2], -1)[0]) if biases else 0.0
  p, bu = np.array(p, np.float64), float(bu)
  lr, l2, batch = _CLIENT_LR, _MODEL.l2, _PIPELINE.batch_size
  table_lr = lr * rules.item_learning_rate_scale
  examples = 0

  def batches():
    for start in range(0, len(items), batch):
      yield items[start:start + batch], ratings[start:start + batch]

  def user_step(p, bu, i, r, rate):
    n = len(i)
    e = q[i] @ p + bu + c[i] + g - r
    gp = 2 / n * e @ q[i] + 2 * l2 * p
    gbu = 2 / n * e.sum() + 2 * l2 * bu
    return p - rate * gp, bu - rate * gbu if biases else 0.0

  epochs = _PIPELINE.local_epochs
  if rules.reconstruct:
    p, bu = np.array(recon_p, np.float64), 0.0
    for _ in range(_RECON.recon_epochs):
      for i, r in batches():
        p, bu = user_step(p, bu, i, r, _RECON_LR)
    epochs = _RECON.post_recon_epochs
  for _ in range(epochs):
    for i, r in batches():
      n = len(i)
      examples += n
      if rules.alternating:
        p, bu = user_step(p, bu, i, r, lr)
      e = q[i] @ p + bu + c[i] + g - r
      gq = np.zeros_like(q)
      gc = np.zeros_like(c)
      np.add.at(gq, i, 2 / n * (e[:, None] * p[None] + l2 * q[i]))
      np.add.at(gc, i, 2 / n * (e + l2 * c[i]))
      gg = 2 / n * e.sum()
      if not (rules.alternating or rules.reconstruct):
        p, bu = user_step(p, bu, i, r, lr)
      q = q - table_lr * gq
      if biases:
        c, g = c - table_lr * gc, g - lr * gg
  final = (q, c[:, None], np.array([g])) if biases else (q,)
  return final, p, bu, examples


class _Killed(Exception):
  """Stands in for the process being killed."""


class StatefulTest(cohort_testing.StoreTestCase):

  def _reference_rounds(self, process, rules, model):
    """Runs `_ROUNDS` in NumPy from the process's initial state and users."""
    weights = [np.asarray(w, np.float64) for w in process.get_model_weights(
        process.initialize()).trainable]
    states = process.client_states
    p = states.initial_value('user_embedding').astype(np.float64)
    biases = 'user_bias' in states.names
    bu = (states.initial_value('user_bias').astype(np.float64)[:, 0]
          if biases else np.zeros(_NUM_USERS))
    personal = {}
    history = []
    model_fn, _ = fed_recon.create_model_fns(model,
                                             _NUM_ITEMS,
                                             client_data.RECON_TRAIN_SPEC)
    recon_p = np.asarray(  # FedRecon's initial user vector (MF: seeded).
        tff.learning.models.ReconstructionModel.get_local_variables(
            model_fn()).trainable[0])[0]
    for client_ids in _ROUNDS:
      finals, counts = [], []
      for client in client_ids:
        u = int(client)
        cohort = process._packer.cohorts([client])[0]  # pylint: disable=protected-access
        count = int(cohort['counts'][0])
        items = cohort['items'][0, :count]
        ratings = cohort['labels'][0, :count].astype(np.float64)
        final, p[u], bu[u], examples = _user_round(weights, p[u], bu[u],
                                                   items, ratings, rules,
                                                   recon_p)
        personal[u] = [f.copy() for f in final[:2]]
        finals.append(final)
        counts.append(examples)
      share = np.array(counts, np.float64) / np.sum(counts)
      weights = [w - sum(s * (w - f[k]) for s, f in zip(share, finals))
                 for k, w in enumerate(weights)]
      history.append(([w.copy() for w in weights], p.copy(), bu.copy(),
                      dict(personal)))
    return history

  def _check(self, rules, cohort_size, model=_MODEL):
    process = stateful.build_process(
        _inputs(self.store, self.create_tempdir().full_path, cohort_size,
                model=model), rules, seed=4)
    process.client_states.reset()
    expected = self._reference_rounds(process, rules, model)
    state = process.initialize()
    for client_ids, (weights, p, bu, personal) in zip(_ROUNDS, expected):
      state = process.next(state, client_ids).state
      for have, want in zip(process.get_model_weights(state).trainable,
                            weights):
        np.testing.assert_allclose(have, want, rtol=2e-5, atol=2e-6)
      kept = process.client_states.view()
      np.testing.assert_allclose(kept['user_embedding'], p, rtol=2e-5,
                                 atol=2e-6)
      if model.use_biases:
        np.testing.assert_allclose(kept['user_bias'][:, 0], bu, rtol=2e-5,
                                   atol=2e-6)
      else:
        self.assertEqual(sorted(kept), sorted(
            ['user_embedding'] + ([stateful.VISITED, stateful.PERSONAL_PREFIX
                                   + 'item_embedding']
                                  if rules.personal_items else [])))
      if rules.personal_items:
        for u, rows in personal.items():
          for name, want in zip(('item_embedding', 'item_bias'), rows):
            np.testing.assert_allclose(
                kept[stateful.PERSONAL_PREFIX + name][u], want, rtol=2e-5,
                atol=2e-6)
        self.assertEqual(kept[stateful.VISITED].sum(), len(personal))
    return process, state

  def test_fedmf_rounds_are_the_reference(self):
    # Users 0, 3, 9 and 15 come back in round 2 from their kept vectors.
    self._check(stateful.Rules(), cohort_size=0)

  def test_pfedrec_rounds_are_the_reference_per_client(self):
    # One user per TFF client (per_client), alternating steps, item side at
    # 3x the rate, each user's fine-tuned item rows kept as its view.
    self._check(stateful.Rules(alternating=True, item_learning_rate_scale=3.0,
                               personal_items=True), cohort_size=1)

  def test_pfedrec_without_biases_is_the_reference(self):
    # PFedRec's own model (no bias anywhere): the item table is the only
    # global weight, so no optimizer steps a non-table weight.
    self._check(stateful.Rules(alternating=True, item_learning_rate_scale=3.0,
                               personal_items=True), cohort_size=0,
                model=_NO_BIASES)

  def test_fedrecon_dualper_rounds_are_the_reference(self):
    # Each visit rebuilds the user's part (2 epochs at the reconstruction
    # rate) instead of starting from the kept one, trains the item side at
    # 2x the rate with it frozen, and keeps both for scoring.
    self._check(stateful.Rules(item_learning_rate_scale=2.0,
                               personal_items=True, reconstruct=True),
                cohort_size=3)

  def test_no_client_state_reaches_the_server(self):
    rules = stateful.Rules(alternating=True, personal_items=True)
    process = stateful.build_process(
        _inputs(self.store, self.create_tempdir().full_path), rules, seed=4)
    process.client_states.reset()
    output = process.next(process.initialize(), _ROUNDS[0])
    # Every tensor of the server state, the released metrics and a
    # checkpoint is item-shaped or a scalar: no user vector, no user table,
    # no personal item view.
    item_shapes = [(), (1,), (_NUM_ITEMS, 3), (_NUM_ITEMS, 1)]
    checkpoint = loop.checkpoint_structure(
        process, loop.LoopConfig(total_rounds=1, select_by='rmse'), True)
    checkpoint['state'] = output.state
    for what in (output.state, output.metrics, checkpoint):
      for name, leaf in tff.program.structure_utils.flatten_with_name(what):
        self.assertIn(np.shape(leaf), item_shapes, msg=name)
    # The users' vectors moved, on the device side.
    kept = process.client_states.view()['user_embedding']
    initial = process.client_states.initial_value('user_embedding')
    moved = np.any(kept != initial, axis=1)
    self.assertEqual(sorted(np.flatnonzero(moved)),
                     sorted(int(u) for u in _ROUNDS[0]))

  def test_killed_run_resumes_bit_for_bit_with_the_users_states(self):
    rules = stateful.Rules(alternating=True, item_learning_rate_scale=2.0,
                           personal_items=True)
    sampler = sampling.ClientSampler([str(u) for u in range(_NUM_USERS)], 8,
                                     seed=6)

    def run(out, kill_at_round=None):
      process = stateful.build_process(
          _inputs(self.store, os.path.join(out, 'client_states')), rules,
          seed=4)

      def sample(round_num):
        if round_num == kill_at_round:
          raise _Killed()
        return sampler.sample(round_num)

      def evaluate(weights, round_num):
        del weights, round_num  # Scored by the users' kept states.
        kept = process.client_states.view()
        return {'val/rmse': float(np.linalg.norm(kept['user_embedding']) +
                                  np.linalg.norm(kept['personal/item_bias']))}

      state, _, selection = loop.run_training_loop(
          process, sample, len, evaluate,
          loop.LoopConfig(total_rounds=6, eval_every=1, checkpoint_every=2,
                          progress=False, select_by='rmse'),
          tff.program.FileProgramStateManager(os.path.join(out, 'ckpt')),
          [], client_states=process.client_states)
      return process, state, selection

    straight, killed = (self.create_tempdir().full_path for _ in range(2))
    process, state, selection = run(straight)
    with self.assertRaises(_Killed):
      run(killed, kill_at_round=6)  # Checkpoint 4; round 5 trained, lost.
    resumed_process, resumed, resumed_selection = run(killed)
    for a, b in zip(process.get_model_weights(state).trainable,
                    resumed_process.get_model_weights(resumed).trainable):
      np.testing.assert_array_equal(a, b)
    self.assertEqual(resumed_selection.round, selection.round)
    for selected in (False, True):
      want = process.client_states.view(selected)
      have = resumed_process.client_states.view(selected)
      for name in want:
        np.testing.assert_array_equal(have[name], want[name], err_msg=name)
    # The case is real: the selected round is not the last, so its states
    # differ from the final ones.
    self.assertLess(selection.round, 6)
    self.assertFalse(np.array_equal(
        process.client_states.view(True)['user_embedding'],
        process.client_states.view()['user_embedding']))

  def test_dp_clips_each_user_not_the_cohort(self):
    # Fixed clip 0.05, no noise (deterministic): cohorts of 4 must give the
    # per-client rounds (each user clipped, the sum over the expected 8
    # users), and the clipping must matter.
    dp = privacy_settings.DPConfig(mechanism=privacy_settings.Mechanism.FIXED,
                                   noise_multiplier=0.0, clip=0.05)

    def build(cohort_size):
      return stateful.build_process(_inputs(
          self.store, self.create_tempdir().full_path, cohort_size,
          aggregator=aggregation.build_aggregator(
              dp, privacy_settings.AggregationConfig(zeroing=False), 0.0, 8,
              weighted=True, preclipped=True,
              users_per_record=max(1, cohort_size)),
          clip_query=aggregation.dp_query(dp, 0.0, 8), uniform=True),
                                    stateful.Rules(), seed=4)

    per_client, in_cohorts = build(1), build(4)
    for process in (per_client, in_cohorts):
      process.client_states.reset()
    states = [per_client.initialize(), in_cohorts.initialize()]
    first = None
    for client_ids in _ROUNDS:
      before = states[0]
      states = [per_client.next(states[0], client_ids).state,
                in_cohorts.next(states[1], client_ids).state]
      first = first or (before, states[0])
      for a, b in zip(per_client.get_model_weights(states[0]).trainable,
                      in_cohorts.get_model_weights(states[1]).trainable):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        in_cohorts.client_states.view()['user_embedding'],
        per_client.client_states.view()['user_embedding'], rtol=1e-5,
        atol=1e-7)
    # The round's summed clipped updates are far longer than one clip: a
    # cohort clipped as one user would have given another round.
    cohort_testing.assert_clipping_mattered(self, per_client, *first,
                                            clip=0.05, expected_users=8)


if __name__ == '__main__':
  absltest.main()
