"""Per-round client sampling, seeded and stateless across rounds.

The clients of round r depend only on (seed, r): a resumed run samples exactly
the clients an uninterrupted one would, with no sampler state to checkpoint.

* `uniform`: `clients_per_round` clients uniformly without replacement (the
  fixed-size sampling of McMahan et al. 2017).
* `poisson`: each client independently with probability
  `clients_per_round / num_clients` (variable round size; the sampling that
  privacy amplification by Poisson subsampling assumes).
"""

import enum

import numpy as np


class SamplingScheme(enum.Enum):
  UNIFORM = 'uniform'
  POISSON = 'poisson'


class ClientSampler:
  """Chooses each round's clients from a fixed list of client ids."""

  def __init__(self, client_ids: list[str], clients_per_round: int,
               scheme: SamplingScheme = SamplingScheme.UNIFORM, seed: int = 0):
    if not client_ids:
      raise ValueError('There are no training clients to sample from.')
    if clients_per_round < 1:
      raise ValueError('--clients_per_round must be >= 1.')
    if clients_per_round > len(client_ids):
      raise ValueError(f'--clients_per_round={clients_per_round} exceeds the '
                       f'{len(client_ids)} training clients.')
    self._client_ids = np.asarray(client_ids)
    self._clients_per_round = clients_per_round
    self._scheme = SamplingScheme(scheme)
    self._seed = seed

  @property
  def sampling_probability(self) -> float:
    """q: the chance that a given client takes part in a given round."""
    return self._clients_per_round / len(self._client_ids)

  def sample(self, round_num: int) -> list[str]:
    """The client ids of round `round_num` (1-based), in client-list order."""
    rng = np.random.default_rng([self._seed, round_num])
    n = len(self._client_ids)
    if self._scheme == SamplingScheme.UNIFORM:
      chosen = np.sort(rng.choice(n, self._clients_per_round, replace=False))
    else:
      chosen = np.flatnonzero(rng.random(n) < self.sampling_probability)
    return self._client_ids[chosen].tolist()
