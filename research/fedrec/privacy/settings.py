"""User-level DP and aggregation settings (the `--dp`, `--compression` flags).

Plain dataclasses and enums, free of TensorFlow and TFF: the binaries parse
and validate these flags before they import either. `aggregation.py` builds
the TFF aggregator factories from them and `accounting.py` the accountant.
"""

import dataclasses
import enum
from typing import Optional


class AccountantKind(enum.Enum):
  RDP = 'rdp'
  PLD = 'pld'


class Mechanism(enum.Enum):
  NONE = 'none'
  FIXED = 'fixed'
  ADAPTIVE = 'adaptive'


class Compression(enum.Enum):
  NONE = 'none'
  QUANTIZE = 'quantize'


@dataclasses.dataclass(frozen=True)
class DPConfig:
  """User-level DP settings (`--dp` and friends)."""

  mechanism: Mechanism = Mechanism.NONE
  noise_multiplier: Optional[float] = None
  target_epsilon: Optional[float] = None
  target_delta: Optional[float] = None  # None: 1 / num_users^1.1.
  clip: float = 0.5  # Fixed clip, or the adaptive clip's initial value.
  target_quantile: float = 0.5
  clip_learning_rate: float = 0.2
  accountant: AccountantKind = AccountantKind.RDP
  stop_at_epsilon: Optional[float] = None
  # The user prior's release at the end of training (export's
  # user_prior.npz): its Gaussian noise multiplier (None: no release) and
  # the L2 clip of each user's parts.
  prior_noise_multiplier: Optional[float] = None
  prior_clip: float = 1.0

  @property
  def enabled(self) -> bool:
    return self.mechanism != Mechanism.NONE

  def __post_init__(self):
    if not self.enabled:
      for name, flag in (('noise_multiplier', 'dp_noise_multiplier'),
                         ('target_epsilon', 'target_epsilon'),
                         ('stop_at_epsilon', 'stop_at_epsilon'),
                         ('prior_noise_multiplier',
                          'dp_prior_noise_multiplier')):
        if getattr(self, name) is not None:
          raise ValueError(f'--{flag} needs --dp=fixed or --dp=adaptive.')
      return
    if (self.noise_multiplier is None) == (self.target_epsilon is None):
      raise ValueError(f'--dp={self.mechanism.value} needs exactly one of '
                       '--dp_noise_multiplier and --target_epsilon.')
    if self.noise_multiplier is not None and self.noise_multiplier < 0:
      raise ValueError(f'--dp_noise_multiplier={self.noise_multiplier:g} '
                       'must be >= 0.')
    if self.target_epsilon is not None and not self.target_epsilon > 0:
      raise ValueError(f'--target_epsilon={self.target_epsilon:g} must be > '
                       '0.')
    if self.target_delta is not None and not 0 < self.target_delta < 1:
      raise ValueError(f'--target_delta={self.target_delta:g} must be in '
                       '(0, 1).')
    if self.stop_at_epsilon is not None and not self.stop_at_epsilon > 0:
      raise ValueError(f'--stop_at_epsilon={self.stop_at_epsilon:g} must be '
                       '> 0.')
    if not self.clip > 0:
      raise ValueError(f'--dp_clip={self.clip:g} must be > 0.')
    if not 0 < self.target_quantile < 1:
      raise ValueError(f'--dp_target_quantile={self.target_quantile:g} must '
                       'be in (0, 1).')
    if self.clip_learning_rate < 0:
      raise ValueError('--dp_clip_learning_rate must be >= 0.')
    if (self.prior_noise_multiplier is not None and
        not self.prior_noise_multiplier > 0):
      raise ValueError(f'--dp_prior_noise_multiplier='
                       f'{self.prior_noise_multiplier:g} must be > 0.')
    if not self.prior_clip > 0:
      raise ValueError(f'--dp_prior_clip={self.prior_clip:g} must be > 0.')


@dataclasses.dataclass(frozen=True)
class AggregationConfig:
  """How client updates travel and are combined (besides DP)."""

  secure_aggregation: bool = False
  compression: Compression = Compression.NONE
  quantization_bits: int = 8
  zeroing: bool = True

  def __post_init__(self):
    if not 1 <= self.quantization_bits <= 16:
      raise ValueError(f'--quantization_bits={self.quantization_bits} must '
                       'be in 1..16.')
    if self.secure_aggregation and self.compression != Compression.NONE:
      raise ValueError('--secure_aggregation and --compression=quantize '
                       'cannot be combined (secure aggregation sums bounded '
                       'integers of its own).')


def check_adaptive_noise(noise_multiplier: float,
                         clients_per_round: float) -> None:
  """Adaptive clipping spends part of the noise on the clipped-count estimate.

  TFF's split needs clients_per_round > 10 x noise multiplier, else the
  update's share of the noise would be infinite.
  """
  if clients_per_round <= 10 * noise_multiplier:
    raise ValueError(
        f'--dp=adaptive with noise multiplier {noise_multiplier:.4g} needs '
        f'--clients_per_round > {10 * noise_multiplier:.4g} (10 x the noise '
        f'multiplier); got {clients_per_round:g}.')
