"""Tests of the DP / secure / compressed / zeroing aggregator stack."""

import numpy as np
import tensorflow_federated as tff
from absl.testing import absltest

from research.fedrec.privacy import aggregation
from research.fedrec.training import runtime

_FIXED = aggregation.Mechanism.FIXED
_NO_ZEROING = aggregation.AggregationConfig(zeroing=False)


def setUpModule():
  runtime.start(secure_aggregation=True)  # Also runs plain aggregators.


def tearDownModule():
  runtime.release()


def _aggregate(factory, values, weights=None):
  value_type = tff.TensorType(np.float32, values[0].shape)
  if weights is None:
    process = factory.create(value_type)
    output = process.next(process.initialize(), values)
  else:
    process = factory.create(value_type, tff.TensorType(np.float32))
    output = process.next(process.initialize(), values, weights)
  return np.asarray(output.result), output.measurements


class AggregationTest(absltest.TestCase):

  def test_clipping_bounds_a_clients_contribution(self):
    dp = aggregation.DPConfig(mechanism=_FIXED, noise_multiplier=0.0, clip=1.0)
    factory = aggregation.build_aggregator(dp, _NO_ZEROING, 0.0, 4, False)
    zeros = np.zeros(3, np.float32)
    huge = np.array([1e3, -1e3, 0], np.float32)
    result, _ = _aggregate(factory, [zeros, zeros, zeros, huge])
    # Clipped to norm 1, divided by the 4 clients: at most clip / 4.
    np.testing.assert_allclose(result, [0.25 / np.sqrt(2), -0.25 / np.sqrt(2),
                                        0], rtol=1e-6)
    self.assertLessEqual(np.linalg.norm(result), 1.0 / 4 + 1e-7)

  def test_noise_has_the_right_standard_deviation(self):
    # Sum of 4 zero updates + N(0, (z C)^2), divided by 4: stddev z C / 4.
    # 20,000 draws estimate it within 0.5% (one standard error), so a 3%
    # band fails by chance with probability below 1e-8.
    dp = aggregation.DPConfig(mechanism=_FIXED, noise_multiplier=1.0, clip=2.0)
    factory = aggregation.build_aggregator(dp, _NO_ZEROING, 1.0, 4, False)
    result, _ = _aggregate(factory, [np.zeros(20_000, np.float32)] * 4)
    self.assertBetween(np.std(result), 0.97 * 0.5, 1.03 * 0.5)
    self.assertLess(abs(np.mean(result)), 5 * 0.5 / np.sqrt(20_000))

  def test_nan_inf_and_huge_updates_are_zeroed_and_counted(self):
    for dp, weighted in ((aggregation.DPConfig(), True),
                         (aggregation.DPConfig(mechanism=_FIXED,
                                               noise_multiplier=0.0, clip=10.0),
                          False)):
      factory = aggregation.build_aggregator(
          dp, aggregation.AggregationConfig(), 0.0, 5, weighted)
      values = [np.array([1.0, 2.0], np.float32),
                np.array([np.nan, 0.0], np.float32),
                np.array([0.0, np.inf], np.float32),
                np.array([1e6, 0.0], np.float32),
                np.array([3.0, 2.0], np.float32)]
      result, measurements = _aggregate(factory, values,
                                        [1.0] * 5 if weighted else None)
      self.assertEqual(measurements['zeroed_count'], 3)
      # Zeroed clients still count in the mean's denominator (5).
      np.testing.assert_allclose(result, [0.8, 0.8], rtol=1e-6)

  def test_secure_aggregation_composes_with_dp(self):
    dp = aggregation.DPConfig(mechanism=_FIXED, noise_multiplier=0.0, clip=1.0)
    factory = aggregation.build_aggregator(
        dp, aggregation.AggregationConfig(secure_aggregation=True,
                                          zeroing=False), 0.0, 2, False)
    values = [np.array([0.6, -0.8], np.float32),
              np.array([3.0, 4.0], np.float32)]  # Clipped to [0.6, 0.8].
    result, _ = _aggregate(factory, values)
    np.testing.assert_allclose(result, [0.6, 0.0], atol=1e-5)

  def test_quantization_is_close(self):
    factory = aggregation.build_aggregator(
        aggregation.DPConfig(),
        aggregation.AggregationConfig(
            compression=aggregation.Compression.QUANTIZE, zeroing=False),
        None, 2, True)
    rng = np.random.default_rng(0)
    values = [rng.uniform(-1, 1, 30_000).astype(np.float32) for _ in range(2)]
    result, _ = _aggregate(factory, values, [1.0, 1.0])
    # 8 bits over [-1, 1]: each value within one step (2/255) of the truth.
    np.testing.assert_allclose(result, (values[0] + values[1]) / 2,
                               atol=2 / 255)
    self.assertGreater(np.abs(result - (values[0] + values[1]) / 2).max(), 0)

  def test_bytes_per_client(self):
    shapes = [(1682, 16), (1682, 1), ()]
    none = aggregation.DPConfig()
    plain = aggregation.AggregationConfig()
    self.assertEqual(aggregation.bytes_per_client(shapes, none, plain, True),
                     4 * (26912 + 1682 + 1) + 4 + 4)
    quantized = aggregation.AggregationConfig(
        compression=aggregation.Compression.QUANTIZE, quantization_bits=8,
        zeroing=False)
    # 8-bit values packed 28 bits to an int32 word (3.5 values per word),
    # plus the range (2 floats): 26,912 values -> 7,690 words.
    self.assertEqual(
        aggregation.bytes_per_client(shapes, none, quantized, False),
        4 * 7690 + 8 + 4 * (1682 + 1))
    adaptive = aggregation.DPConfig(
        mechanism=aggregation.Mechanism.ADAPTIVE, noise_multiplier=1.0)
    self.assertEqual(
        aggregation.bytes_per_client(shapes, adaptive, plain, True),
        4 * (26912 + 1682 + 1) + 4 + 4)

  def test_invalid_combinations(self):
    with self.assertRaisesRegex(ValueError,
                                r'needs --clients_per_round > 50'):
      aggregation.check_adaptive_noise(5.0, 50)
    with self.assertRaisesRegex(ValueError, 'exactly one of'):
      aggregation.DPConfig(mechanism=_FIXED)
    with self.assertRaisesRegex(ValueError, r'--target_epsilon=-1 must be'):
      aggregation.DPConfig(mechanism=_FIXED, target_epsilon=-1.0)
    with self.assertRaisesRegex(ValueError, r'--target_delta=1 must be in'):
      aggregation.DPConfig(mechanism=_FIXED, target_epsilon=1.0,
                           target_delta=1.0)
    with self.assertRaisesRegex(ValueError, 'needs --dp=fixed or'):
      aggregation.DPConfig(target_epsilon=1.0)
    # The message names the flag train.py has.
    with self.assertRaisesRegex(ValueError, '^--dp_noise_multiplier needs '
                                '--dp=fixed or --dp=adaptive.$'):
      aggregation.DPConfig(noise_multiplier=1.0)
    with self.assertRaisesRegex(ValueError, 'cannot be combined'):
      aggregation.AggregationConfig(
          secure_aggregation=True, compression=aggregation.Compression.QUANTIZE)


if __name__ == '__main__':
  absltest.main()
