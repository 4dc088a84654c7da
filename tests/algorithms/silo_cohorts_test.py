"""Cross-silo cohorts: a silo's users as one cohort, and which unit DP clips
(algorithms/cohorts.group_users, cohort_work.combine with SiloRecords)."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from research.fedrec.algorithms import cohort_work
from research.fedrec.algorithms import cohorts
from research.fedrec.privacy import aggregation
from research.fedrec.privacy import settings


class GroupUsersTest(absltest.TestCase):

  def test_each_silo_is_one_cohort_whatever_its_size(self):
    by_size = ['4', '0/3', '2', '1', '3']  # Ids may carry the round.
    silo_of = np.array([1, 0, 1, 1, 0])
    groups = cohorts.group_users(by_size, lambda users: 10 ** 9,
                                 cohort_size=1, epochs=1, silo_of=silo_of)
    self.assertEqual(groups, [['4', '1'], ['0/3', '2', '3']])

  def test_without_silos_cohorts_are_capped(self):
    groups = cohorts.group_users(['1', '2', '3', '4', '5'], lambda u: 8,
                                 cohort_size=2, epochs=1)
    self.assertEqual(groups, [['1', '2'], ['3', '4'], ['5']])


def _combine(deltas, examples, uniform_weighting, clip=None, silos=None):
  query = params = None
  if clip is not None:
    query = aggregation.dp_query(
        settings.DPConfig(mechanism=settings.Mechanism.FIXED, clip=clip,
                          noise_multiplier=1.0), 0.0,
        clients_per_round=2)
    params = query.derive_sample_params(query.initial_global_state())
  update, weight, _, _, _ = cohort_work.combine(
      [(tf.constant(deltas, tf.float32), None, None)],
      tf.constant(examples, tf.float32), uniform_weighting, None, (), (),
      query, params, silos)
  return np.asarray(update[0]), float(weight)


class CombineTest(absltest.TestCase):
  """Two users of one silo, updates [3, 4] (norm 5) and [1, 0], clip 2."""

  deltas = [[3.0, 4.0], [1.0, 0.0]]

  def test_user_level_dp_clips_each_user(self):
    # [3, 4] * 2 / 5 + [1, 0] = [2.2, 1.6]: the silo's summed record.
    for silos in (None, cohort_work.SiloRecords()):
      update, weight = _combine(self.deltas, [1, 1], True, 2.0, silos)
      np.testing.assert_allclose(update, [2.2, 1.6], rtol=1e-6)
      self.assertEqual(weight, 1.0)

  def test_silo_level_dp_clips_the_silos_update(self):
    # Users weighted equally: mean [2, 2], norm 2 sqrt 2 -> clipped to 2.
    update, weight = _combine(self.deltas, [1, 3], True, 2.0,
                              cohort_work.SiloRecords(clip_silo=True))
    np.testing.assert_allclose(update, [2 ** 0.5, 2 ** 0.5], rtol=1e-6)
    self.assertEqual(weight, 1.0)
    # By examples: (3 * [1, 0] + [3, 4]) / 4 = [1.5, 1], norm 1.80 < 2.
    update, _ = _combine(self.deltas, [1, 3], False, 2.0,
                         cohort_work.SiloRecords(clip_silo=True))
    np.testing.assert_allclose(update, [1.5, 1.0], rtol=1e-6)

  def test_silo_weighting_without_dp(self):
    update, weight = _combine(self.deltas, [1, 3], False)
    np.testing.assert_allclose(update, [1.5, 1.0], rtol=1e-6)
    self.assertEqual(weight, 4.0)  # By its ratings.
    update, weight = _combine(self.deltas, [1, 3], False,
                              silos=cohort_work.SiloRecords(uniform=True))
    np.testing.assert_allclose(update, [1.5, 1.0], rtol=1e-6)
    self.assertEqual(weight, 1.0)  # Every silo as one.
    _, weight = _combine([[np.nan, 0.0]], [5], False,
                         silos=cohort_work.SiloRecords(uniform=True))
    self.assertEqual(weight, 0.0)  # No finite user: the silo is left out.


if __name__ == '__main__':
  absltest.main()


class UploadBytesTest(absltest.TestCase):
  """Row-sparse uploads: a table's changed rows (values and a 4-byte id
  each) or the table whole if smaller; other tensors whole."""

  # Two users' copies of 3 rows of a 5-row table (2 floats a row: 12 bytes
  # sent per row) and a global scalar.
  deltas = [tf.constant([[[1., 0.], [0., 0.], [2., 2.]],
                         [[0., 0.], [3., 0.], [0., 0.]]]),
            tf.constant([[0.5], [0.0]])]
  parts = [(None, 'rows', 5), (None, None, None)]
  update = [tf.constant([[1., 0.], [0., 0.], [2., 2.], [0., 0.], [0., 0.]]),
            tf.constant([0.5])]

  def _bytes(self, user_deltas, finite=(True, True), dense=False, update=None):
    return float(cohort_work.sparse_upload_bytes(
        self.parts, user_deltas, tf.constant(finite),
        update or self.update, dense))

  def test_per_user_records(self):
    # User 0: 2 rows (24 bytes) + 4; user 1: 1 row (12) + 4 (its zero
    # scalar is sent whole: a dense tensor's size does not depend on it).
    self.assertEqual(self._bytes(self.deltas), 24 + 4 + 12 + 4)
    self.assertEqual(self._bytes(self.deltas, (True, False)), 24 + 4)
    # Under DP every record is whole: 2 x (5 x 2 x 4 + 4).
    self.assertEqual(self._bytes(self.deltas, dense=True), 2 * 44)

  def test_a_silos_record_is_its_update(self):
    self.assertEqual(self._bytes(None), 2 * 12 + 4)
    self.assertEqual(self._bytes(None, dense=True), 44)
    # Every row changed: 5 x 12 = 60 bytes row-sparse, 40 whole.
    full = [tf.ones([5, 2]), tf.constant([0.5])]
    self.assertEqual(self._bytes(None, update=full), 40 + 4)
