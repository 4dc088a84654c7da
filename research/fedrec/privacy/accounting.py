"""User-level privacy accounting for DP-FedAvg / DP-FedRecon with dp_accounting.

One round of DP federated training is a subsampled Gaussian mechanism over
users: each sampled user's clipped update (L2 norm <= C) is summed and
Gaussian noise of standard deviation z * C is added (z: the noise multiplier).
The DP event composed per round matches the client sampling simulated
(`algorithms/sampling.py`):

* `poisson`: every user takes part independently with probability
  q = clients_per_round / num_users. Event: `PoissonSampledDpEvent(q,
  GaussianDpEvent(z))` under add-or-remove-one-user neighbouring; RDP or PLD
  accountant.
* `uniform` (fixed size m without replacement): `SampledWithoutReplacementDpEvent
  (n, m, GaussianDpEvent(z / 2))` under replace-one-user neighbouring, the
  relation dp_accounting supports for it (Wang, Balle & Kasiviswanathan,
  AISTATS 2019). Replacing one user's clipped update moves the sum by up to
  2C, hence z / 2 relative to that sensitivity. RDP accountant only (the PLD
  accountant has no event for it).

A run that releases its user prior (`--dp_prior_noise_multiplier`: two sums
over every training user, once, at the end of training; inference/
demographics.py) adds one Gaussian mechanism of that noise multiplier,
without sampling, under the same neighbouring relation (replace-one: half
the multiplier). Every epsilon of such a run, per round too, includes that
release: it is what the run will have released if it stops after that
round.

The accountant's state is the number of rounds composed so far; an accountant
rebuilt with the same count gives the same epsilon, which is what a resumed
run relies on.

dp_accounting is pinned at 0.6.0, not TFF 0.87's 0.4.3: 0.4.3's RDP at
fractional orders can stop its series early and so UNDER-estimate epsilon
(e.g. 16.4353 instead of 16.5855 for z = 0.5, q = 50/943, 100 rounds). Where
0.6.0's series does not converge it leaves that order out (epsilon is the
minimum over the others, still an upper bound) and logs a warning; those
warnings, many per calibration, are kept out of the user's terminal here.
"""

import dataclasses
import functools
import logging as std_logging
import math
from typing import Optional

from absl import logging
import dp_accounting

from research.fedrec.algorithms import sampling as sampling_lib
from research.fedrec.privacy import settings


AccountantKind = settings.AccountantKind


# RDP orders: dp_accounting's default set extended to large orders, which
# small epsilons at many rounds need.
_RDP_ORDERS = ([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) +
               [80, 96, 128, 192, 256, 384, 512, 768, 1024])
_PLD_DISCRETIZATION = 1e-3  # epsilon moves by ~1e-5 against 1e-4, 10x faster.
# The lowest noise multiplier calibration tries, per accountant: below 0.3 the
# PLD's tables grow huge (hours to compose); targets that need less noise are
# calibrated under RDP only.
_LOWEST_NOISE = {AccountantKind.RDP: 0.01, AccountantKind.PLD: 0.3}


class _DropUnconvergedOrders(std_logging.Filter):
  """Drops dp_accounting's note that it left a non-converging order out."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith('_compute_log_a_frac failed to '
                                          'converge')


logging.get_absl_logger().addFilter(_DropUnconvergedOrders())


def default_delta(num_users: int) -> float:
  """delta = 1 / n^1.1: below 1/n, so no user is likely to be exposed."""
  return 1.0 / num_users**1.1


@dataclasses.dataclass(frozen=True)
class PrivacySetting:
  """What the accountant needs to know about a training run."""

  num_users: int
  clients_per_round: int
  sampling: sampling_lib.SamplingScheme
  delta: float
  accountant: AccountantKind = AccountantKind.RDP
  # The user prior's Gaussian release at the end of training, if any.
  release_noise_multiplier: Optional[float] = None

  def __post_init__(self):
    if not 0 < self.delta < 1:
      raise ValueError(f'delta={self.delta:g} must be in (0, 1).')
    if not 1 <= self.clients_per_round <= self.num_users:
      raise ValueError(f'--clients_per_round={self.clients_per_round} must be '
                       f'between 1 and the {self.num_users} training users.')
    if (self.release_noise_multiplier is not None and
        not self.release_noise_multiplier > 0):
      raise ValueError(f'--dp_prior_noise_multiplier='
                       f'{self.release_noise_multiplier:g} must be > 0.')
    if (self.sampling == sampling_lib.SamplingScheme.UNIFORM and
        self.accountant == AccountantKind.PLD):
      raise ValueError(
          '--accountant=pld has no event for fixed-size sampling without '
          'replacement: use --accountant=rdp or --client_sampling=poisson.')

  @property
  def sampling_probability(self) -> float:
    return self.clients_per_round / self.num_users

  def round_event(self, noise_multiplier: float) -> dp_accounting.DpEvent:
    """The DP event of one training round."""
    if self.sampling == sampling_lib.SamplingScheme.POISSON:
      return dp_accounting.PoissonSampledDpEvent(
          self.sampling_probability,
          dp_accounting.GaussianDpEvent(noise_multiplier))
    return dp_accounting.SampledWithoutReplacementDpEvent(
        self.num_users, self.clients_per_round,
        dp_accounting.GaussianDpEvent(noise_multiplier / 2.0))

  def release_event(self) -> Optional[dp_accounting.DpEvent]:
    """The DP event of the user prior's release (None: no release)."""
    if self.release_noise_multiplier is None:
      return None
    if self.sampling == sampling_lib.SamplingScheme.POISSON:
      return dp_accounting.GaussianDpEvent(self.release_noise_multiplier)
    return dp_accounting.GaussianDpEvent(self.release_noise_multiplier / 2.0)

  def run_event(self, noise_multiplier: float,
                rounds: int) -> dp_accounting.DpEvent:
    """The DP event of `rounds` rounds and the release, if any."""
    events = [dp_accounting.SelfComposedDpEvent(
        self.round_event(noise_multiplier), rounds)] if rounds else []
    if self.release_event() is not None:
      events.append(self.release_event())
    return dp_accounting.ComposedDpEvent(events)

  @property
  def neighboring_relation(self):
    relation = dp_accounting.NeighboringRelation
    poisson = self.sampling == sampling_lib.SamplingScheme.POISSON
    return relation.ADD_OR_REMOVE_ONE if poisson else relation.REPLACE_ONE

  def new_accountant(self) -> dp_accounting.PrivacyAccountant:
    if self.accountant == AccountantKind.PLD:
      return dp_accounting.pld.PLDAccountant(
          self.neighboring_relation,
          value_discretization_interval=_PLD_DISCRETIZATION)
    return dp_accounting.rdp.RdpAccountant(_RDP_ORDERS,
                                           self.neighboring_relation)

  # Both are pure functions of the (frozen) setting and their arguments, and
  # each costs 0.3-6 s of RDP series: memoized per process, so a table's
  # runs of one event (explicit and implicit, every seed) pay for it once.
  @functools.lru_cache(maxsize=256)
  def epsilon(self, noise_multiplier: float, rounds: int) -> float:
    """Epsilon at `delta` after `rounds` rounds and the release, if any (0
    rounds and no release: 0)."""
    if rounds == 0 and self.release_event() is None:
      return 0.0
    if noise_multiplier <= 0:
      return math.inf
    accountant = self.new_accountant()
    accountant.compose(self.run_event(noise_multiplier, rounds))
    return float(accountant.get_epsilon(self.delta))

  @functools.lru_cache(maxsize=256)
  def calibrate(self, target_epsilon: float, rounds: int) -> float:
    """The smallest noise multiplier whose `rounds` rounds reach the target.

    Raises:
      ValueError: the target is not positive, or needs less noise than the
        lowest multiplier tried.
    """
    if not target_epsilon > 0:
      raise ValueError(f'--target_epsilon={target_epsilon:g} must be > 0.')

    def make_event(noise_multiplier):
      return self.run_event(noise_multiplier, rounds)

    if self.release_event() is not None:
      accountant = self.new_accountant()
      accountant.compose(self.release_event())
      release = float(accountant.get_epsilon(self.delta))
      if release >= target_epsilon:
        raise ValueError(
            f'--target_epsilon={target_epsilon:g} is below the epsilon of the '
            f'user prior\'s release alone ({release:.4g} at '
            f'--dp_prior_noise_multiplier={self.release_noise_multiplier:g}):'
            ' raise the target or the prior\'s noise.')
    lowest = _LOWEST_NOISE[self.accountant]
    most = self.epsilon(lowest, rounds)
    if most <= target_epsilon:  # No noise in range gets up to the target.
      raise ValueError(
          f'--target_epsilon={target_epsilon:g} is above the epsilon of the '
          f'least noise calibrated ({lowest:g} x clip gives {most:.4g} after '
          f'{rounds} rounds): choose a smaller target, or give '
          '--dp_noise_multiplier.')
    return float(dp_accounting.calibrate_dp_mechanism(
        self.new_accountant, make_event, target_epsilon, self.delta,
        dp_accounting.LowerEndpointAndGuess(lowest, 1.0), tol=1e-4))


class RoundAccountant:
  """Composes one event per round; its state is the number of rounds.

  `stop_at_epsilon`, if set, is the budget `would_exceed_budget` checks the
  next round against.
  """

  def __init__(self, setting: PrivacySetting, noise_multiplier: float,
               stop_at_epsilon: Optional[float] = None):
    self.setting = setting
    self.noise_multiplier = noise_multiplier
    self.stop_at_epsilon = stop_at_epsilon
    self._event = setting.round_event(noise_multiplier)
    self.restore(0)

  def restore(self, rounds: int) -> None:
    """Sets the state to `rounds` composed rounds (as from a checkpoint),
    the end-of-training release included from the start."""
    self._accountant = self.setting.new_accountant()
    if self.setting.release_event() is not None:
      self._accountant.compose(self.setting.release_event())
    self.rounds = 0
    if rounds:
      self.compose(rounds)

  def compose(self, rounds: int = 1) -> None:
    self._accountant.compose(self._event, rounds)
    self.rounds += rounds

  @property
  def epsilon(self) -> float:
    if self.rounds == 0 and self.setting.release_event() is None:
      return 0.0
    return float(self._accountant.get_epsilon(self.setting.delta))

  def would_exceed_budget(self) -> bool:
    """Whether one more round would take epsilon past `stop_at_epsilon`."""
    if self.stop_at_epsilon is None:
      return False
    return (self.setting.epsilon(self.noise_multiplier, self.rounds + 1) >
            self.stop_at_epsilon)
