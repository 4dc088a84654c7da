"""Tests of the seeded, stateless client sampler."""

from absl.testing import absltest
import numpy as np

from research.fedrec.algorithms import sampling

_IDS = [str(i) for i in range(100)]


class SamplingTest(absltest.TestCase):

  def test_uniform_fixed_size_without_replacement_and_stateless(self):
    sampler = sampling.ClientSampler(_IDS, 10, seed=3)
    round_7 = sampler.sample(7)
    self.assertLen(round_7, 10)
    self.assertLen(set(round_7), 10)
    self.assertEqual(round_7, sorted(round_7, key=int))
    # Same round -> same clients, whatever was sampled in between.
    sampler.sample(1)
    self.assertEqual(sampling.ClientSampler(_IDS, 10, seed=3).sample(7),
                     round_7)
    self.assertNotEqual(sampler.sample(8), round_7)
    self.assertNotEqual(sampling.ClientSampler(_IDS, 10, seed=4).sample(7),
                        round_7)

  def test_uniform_inclusion_probability(self):
    sampler = sampling.ClientSampler(_IDS, 10, seed=0)
    counts = np.zeros(100)
    for r in range(1, 2001):
      counts[[int(c) for c in sampler.sample(r)]] += 1
    # Each client is in Binomial(2000, 0.1): mean 200, sd 13.4. The bound of
    # 6 sd fails with probability < 1e-7 over all 100 clients.
    self.assertLess(np.abs(counts - 200).max(), 6 * 13.42)
    self.assertEqual(counts.sum(), 20000)

  def test_poisson_round_sizes(self):
    sampler = sampling.ClientSampler(_IDS, 10, sampling.SamplingScheme.POISSON,
                                     seed=0)
    self.assertEqual(sampler.sampling_probability, 0.1)
    sizes = [len(sampler.sample(r)) for r in range(1, 1001)]
    self.assertGreater(len(set(sizes)), 5)  # Variable round size.
    # Mean of 1000 Binomial(100, .1) sizes: sd 0.095; 6 sd, p < 1e-8.
    self.assertAlmostEqual(np.mean(sizes), 10, delta=6 * 0.095)

  def test_bad_settings(self):
    with self.assertRaisesRegex(ValueError, 'exceeds the 100 training'):
      sampling.ClientSampler(_IDS, 101)
    with self.assertRaisesRegex(ValueError, 'no training clients'):
      sampling.ClientSampler([], 1)


if __name__ == '__main__':
  absltest.main()
