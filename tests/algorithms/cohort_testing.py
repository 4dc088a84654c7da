"""What the cohort exactness tests share: corpora, rounds and the comparison.

A cohort process is checked against the per-client process (the reference):
both run `ROUNDS` from the same state on a random corpus whose users have 1
to 14 ratings (so partial last batches, one-batch users and idle steps all
occur), and the global weights and training metrics must agree to 1e-5
relative.
"""

import shutil
import tempfile

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import cohort_work
from research.fedrec.data import client_store
from research.fedrec.data import splits
from research.fedrec.models import mf_features
from research.fedrec.models import ncf_features
from research.fedrec.training import runtime
from tests.algorithms import testing_data

NUM_USERS, NUM_ITEMS = 30, 25
ROUNDS = (['0', '3', '4', '7', '9', '12', '15', '16', '20', '21', '25', '28'],
          [str(u) for u in range(0, 30, 2)],
          ['1', '2', '5', '8', '11', '13', '17', '19', '22', '23', '26', '29'])


def feature_model(seed: int, id_dropout: float = 0.5,
                  use_biases: bool = True):
  """MF with item features (models/mf_features.py): 4 random features per
  item, as `prepared` would load them."""
  rng = np.random.default_rng(seed)
  values = rng.normal(0.0, 0.3, [NUM_ITEMS, 4]).astype(np.float32)
  return mf_features.FeatureMFConfig(
      embedding_dim=3, l2=0.05, seed=seed, id_dropout=id_dropout,
      use_biases=use_biases, feature_values=tuple(map(tuple, values.tolist())))


def neumf_feature_model(seed: int, id_dropout: float = 0.5):
  """NeuMF with item features (models/ncf_features.py), 4 random features
  per item as `feature_model`."""
  rng = np.random.default_rng(seed)
  values = rng.normal(0.0, 0.3, [NUM_ITEMS, 4]).astype(np.float32)
  return ncf_features.NeuMFFeaturesConfig(
      embedding_dim=3, mlp_layers=(6, 4, 2), l2=0.05, seed=seed,
      id_dropout=id_dropout,
      feature_values=tuple(map(tuple, values.tolist())))


def random_corpus(seed=7):
  """Explicit ratings: users with 1 to 14 distinct items."""
  train = testing_data.random_table(NUM_USERS, NUM_ITEMS, seed, min_count=1)
  return splits.Split(train, testing_data.TEST, testing_data.TEST)


def implicit_split(seed=11):
  """Users with 1 to 14 training interactions, one validation and one test."""
  rng = np.random.default_rng(seed)
  parts = ([], [], [])  # (users, items) of train, val, test.
  for user in range(NUM_USERS):
    count = int(rng.integers(1, 15))
    chosen = rng.choice(NUM_ITEMS, count + 2, replace=False).tolist()
    for part, items in zip(parts, (chosen[:count], chosen[count:count + 1],
                                   chosen[count + 1:])):
      part.extend((user, item) for item in items)
  train, val, test = (testing_data.table([u for u, _ in p], [i for _, i in p],
                                         [1.0] * len(p)) for p in parts)
  return splits.Split(train, splits.EvalPartition(train, val),
                      splits.EvalPartition(train, test))


ADAPTIVE_ATOL = 5e-5


def assert_clips_agree(test, outputs, initial_clip: float):
  """Adaptive DP clipping: each round's clip and query state are per-client's.

  And the clip moved every round (so the users' unclipped count mattered).
  """
  # Per client under adaptive zeroing the DP aggregator is zeroing's inner
  # one (in cohorts zeroing is in the client work).
  def clip(output):
    measured = output.metrics['aggregator']
    measured = measured.get('zeroing', measured)
    return measured['dp_query_metrics']['clip']

  def query_state(output):
    state = output.state.aggregator
    return (state['inner_agg'] if isinstance(state, dict) else
            state).query_state

  clips = []
  for expected, got in outputs:
    want, have = clip(expected), clip(got)
    np.testing.assert_allclose(have, want, rtol=1e-6)
    clips.append(float(want))
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        query_state(got), query_state(expected))
  test.assertLen(set(clips + [initial_clip]), len(clips) + 1)


def assert_rounds_agree(test, reference, state, in_cohorts, cohort_state,
                         round_ids=False, atol=1e-6):
  """Runs `ROUNDS` on both; weights and training metrics agree to 1e-5.

  With `round_ids` (implicit feedback) the ids carry the round. `atol`:
  weights' absolute tolerance. Adam divides each coordinate's step by
  sqrt(p) + epsilon (1e-7): a coordinate whose gradients are at the level of
  float rounding (terms that cancel; the cohort sums them in another order)
  is moved by up to its rounding noise / 1e-7 per step, so two exact
  implementations drift apart by far more than their rounding (with
  epsilon 1e-4 the same cases agree to 1e-6). Adam-like cases allow
  `ADAPTIVE_ATOL`, 1/400 of their learning rate of 0.02; an error of the
  method (a user's state not frozen while idle, a step of bias correction
  off) moves weights by 1e-3 to 1e-2.

  Returns:
    Each round's (reference output, cohort output).
  """
  outputs = []
  for round_num, client_ids in enumerate(ROUNDS, start=1):
    if round_ids:
      client_ids = client_store.round_client_ids(client_ids, round_num)
    expected = reference.next(state, client_ids)
    got = in_cohorts.next(cohort_state, client_ids)
    state, cohort_state = expected.state, got.state
    outputs.append((expected, got))
    for want, have in zip(
        reference.get_model_weights(expected.state).trainable,
        in_cohorts.get_model_weights(got.state).trainable):
      np.testing.assert_allclose(have, want, rtol=1e-5, atol=atol)
    want_metrics = expected.metrics['client_work']['train']
    have_metrics = dict(got.metrics['client_work']['train'])
    # What the cohorts' uploads take row-sparse: measured in cohorts only
    # (tests/algorithms/silo_cohorts_test.py).
    test.assertGreater(have_metrics.pop(cohort_work.UPLOAD_BYTES), 0)
    test.assertEqual(sorted(have_metrics), sorted(want_metrics))
    for name, value in want_metrics.items():
      np.testing.assert_allclose(have_metrics[name], value, rtol=1e-5,
                                 err_msg=name)
  return outputs


class StoreTestCase(parameterized.TestCase):
  """A TFF runtime and a client store of `_split()` for the whole class."""

  _split = staticmethod(random_corpus)

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    runtime.start()
    cls.cache_dir = tempfile.mkdtemp()
    cls.store = client_store.create_client_store(cls._split(), cls.cache_dir,
                                                 log=print)

  @classmethod
  def tearDownClass(cls):
    runtime.release()
    shutil.rmtree(cls.cache_dir)
    super().tearDownClass()


def assert_clipping_mattered(test, reference, state, next_state, clip: float,
                             expected_users: int = 12):
  """The round's summed clipped updates are far longer than one clip.

  So clipping a cohort's sum as one record would have changed the round:
  a DP test on this case fails if cohorts are clipped as one user. The DP
  mean divides the sum by the expected users per round.
  """
  before = reference.get_model_weights(state).trainable
  after = reference.get_model_weights(next_state).trainable
  summed = expected_users * np.sqrt(sum(np.sum(np.square(a - b))
                                        for a, b in zip(after, before)))
  test.assertGreater(summed, 2 * clip)
