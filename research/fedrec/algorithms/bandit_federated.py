"""Summing bandit users' statistics through a TFF aggregator.

Each round the sampled users' statistics (`bandit_policies`) are summed by a
TFF federated computation: the users are packed into cohorts (one TFF
client each, as in cohort execution), each cohort sums its users' records
and TFF's aggregator sums the cohorts, either plainly
(`tff.aggregators.SumFactory`, or TFF's secure sum) or under user-level DP: tensorflow-privacy's
`GaussianSumQuery` (clip `bandit_policies.sensitivity`: sqrt(2) per item
of a user's slate; noise standard deviation z x clip), each user clipped by the query's own
`preprocess_record` inside its cohort and the noise added once to the
round's sum at the server (`aggregation.PreclippedQuery`), so that the
release protects each user, not each cohort. The clip changes nothing for a
bounded statistic; it is the query's guarantee that no user counts more.

Like the training's DP noise, the noise is not seeded (docs/privacy.md).
"""

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from research.fedrec.algorithms import bandit_policies
from research.fedrec.privacy import aggregation

COHORT_USERS = 256  # Users per TFF client at most.


class FederatedSum:
  """A round's sum of per-user statistics of one size, via TFF."""

  def __init__(self, size: int, noise_multiplier: Optional[float] = None,
               clip: float = bandit_policies.SENSITIVITY,
               secure: bool = False):
    """`noise_multiplier` None: a plain sum; else the DP Gaussian sum with
    each user clipped to `clip` (`bandit_policies.sensitivity`). `secure`:
    the clients' records are summed by TFF's secure sum (the runtime must be
    started with secure aggregation), bounded per coordinate by a cohort's
    most users times `clip` (no coordinate of a user's statistic exceeds its
    L2 bound), so nothing is clipped; floats are quantized to 32 bits over
    that range, as TFF's secure sum does."""
    self.size = size
    self.noise_multiplier = noise_multiplier
    value_type = tff.TensorType(np.float64, [size])
    records_type = tff.TensorType(np.float64, [None, size])
    query = None
    bound = float(COHORT_USERS * clip)
    record_sum = (tff.aggregators.SecureSumFactory(bound, -bound)
                  if secure else None)
    if noise_multiplier is None:
      factory = record_sum or tff.aggregators.SumFactory()
    else:
      query = tfp.GaussianSumQuery(l2_norm_clip=clip,
                                   stddev=noise_multiplier * clip)
      factory = tff.aggregators.DifferentiallyPrivateFactory(
          aggregation.PreclippedQuery(query), record_sum)
    process = factory.create(value_type)

    @tff.tensorflow.computation(records_type)
    def cohort_sum(records):
      if query is not None:  # Each user clipped, as the query would.
        params = query.derive_sample_params(query.initial_global_state())
        # (The query clips in float32; its noise dwarfs the rounding.)
        records = tf.cast(tf.map_fn(
            lambda r: query.preprocess_record(params, tf.cast(r, tf.float32)),
            records, fn_output_signature=tf.float32), tf.float64)
      return tf.reduce_sum(records, axis=0)

    @tff.federated_computation(process.next.type_signature.parameter[0],
                               tff.FederatedType(records_type, tff.CLIENTS))
    def round_sum(state, cohorts):
      output = process.next(state, tff.federated_map(cohort_sum, cohorts))
      return output.state, output.result

    self._round_sum = round_sum
    self._state = process.initialize()

  def __call__(self, records: np.ndarray) -> np.ndarray:
    """The sum over users of `records` [users, size] (noised under DP)."""
    records = np.asarray(records, np.float64).reshape(-1, self.size)
    cohorts = [records[start:start + COHORT_USERS]
               for start in range(0, max(len(records), 1), COHORT_USERS)]
    self._state, result = self._round_sum(self._state, cohorts)
    return np.asarray(result, np.float64)
