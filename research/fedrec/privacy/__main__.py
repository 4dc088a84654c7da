r"""Epsilon of a DP federated training plan, or the noise a target needs.

  # Epsilon of 50 rounds of 50 clients out of 943 at noise multiplier 1.5:
  python -m research.fedrec.privacy --num_users=943 --clients_per_round=50 \
      --rounds=50 --noise_multiplier=1.5
  # The noise multiplier for epsilon 5 with Poisson sampling and PLD:
  python -m research.fedrec.privacy --num_users=943 --clients_per_round=50 \
      --rounds=50 --target_epsilon=5 --sampling=poisson --accountant=pld

(`research/fedrec/privacy/` is both the privacy package and, through this
`__main__.py`, the privacy binary `python -m research.fedrec.privacy`.)

Prints the result and the plain-language privacy statement that train.py
also writes into summary.json. The accounting is that of train.py
(research/fedrec/privacy/accounting.py): the DP event composed per round
matches the client sampling.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags

from research.fedrec.utils import cli

from research.fedrec.algorithms import registry
from research.fedrec.algorithms import sampling as sampling_lib
from research.fedrec.privacy import accounting
from research.fedrec.privacy import statement

_NUM_USERS = flags.DEFINE_integer('num_users', None,
                                  'Training users (clients) in the corpus.')
_CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', None, 'Clients per round (expected, for Poisson).')
_ROUNDS = flags.DEFINE_integer('rounds', None, 'Training rounds.')
_NOISE = flags.DEFINE_float('noise_multiplier', None,
                            'Noise multiplier z: prints epsilon.')
_TARGET_EPSILON = flags.DEFINE_float(
    'target_epsilon', None, 'Target epsilon: prints the noise multiplier.')
_SAMPLING = flags.DEFINE_enum_class(
    'sampling', sampling_lib.SamplingScheme.UNIFORM,
    sampling_lib.SamplingScheme,
    'Client sampling: uniform (fixed size, without replacement) or poisson.')
_DELTA = flags.DEFINE_float('delta', None,
                            'delta (default 1 / num_users^1.1).')
_ACCOUNTANT = flags.DEFINE_enum_class(
    'accountant', accounting.AccountantKind.RDP, accounting.AccountantKind,
    'rdp, or pld (Poisson sampling only).')
_ALGORITHM = flags.DEFINE_enum(
    'algorithm', 'fedrecon',
    registry.names(private_only=True),
    'The method the statement describes.')
_MECHANISM = flags.DEFINE_enum('dp', 'adaptive', ['fixed', 'adaptive'],
                               'The clipping the statement describes.')


def run() -> str:
  """The report the flags ask for (raises ValueError on bad input)."""
  for flag in (_NUM_USERS, _CLIENTS_PER_ROUND, _ROUNDS):
    if flag.value is None or flag.value < 1:
      raise ValueError(f'--{flag.name} is required and must be >= 1.')
  if (_NOISE.value is None) == (_TARGET_EPSILON.value is None):
    raise ValueError('Give exactly one of --noise_multiplier (prints epsilon) '
                     'and --target_epsilon (prints the noise multiplier).')
  if _DELTA.value is not None and not 0 < _DELTA.value < 1:
    raise ValueError(f'--delta={_DELTA.value:g} must be in (0, 1).')
  if _NOISE.value is not None and _NOISE.value < 0:
    raise ValueError(f'--noise_multiplier={_NOISE.value:g} must be >= 0.')
  setting = accounting.PrivacySetting(
      num_users=_NUM_USERS.value, clients_per_round=_CLIENTS_PER_ROUND.value,
      sampling=_SAMPLING.value,
      delta=(_DELTA.value if _DELTA.value is not None else
             accounting.default_delta(_NUM_USERS.value)),
      accountant=_ACCOUNTANT.value)
  rounds = _ROUNDS.value
  if _NOISE.value is not None:
    noise = _NOISE.value
    epsilon = setting.epsilon(noise, rounds)
    lines = [f'epsilon = {epsilon:.4f}']
  else:
    noise = setting.calibrate(_TARGET_EPSILON.value, rounds)
    epsilon = setting.epsilon(noise, rounds)
    lines = [f'noise_multiplier = {noise:.4f} (epsilon {epsilon:.4f})']
  lines.append(
      f'for delta = {setting.delta:.4g}, {rounds} rounds, '
      f'{setting.sampling.value} sampling of {_CLIENTS_PER_ROUND.value} of '
      f'{_NUM_USERS.value} users per round (q = '
      f'{setting.sampling_probability:.4g}), '
      f'{setting.accountant.value.upper()} accountant.')
  if (_MECHANISM.value == 'adaptive' and
      _CLIENTS_PER_ROUND.value <= 10 * noise):
    lines.append(f'Note: --dp=adaptive needs clients_per_round > '
                 f'{10 * noise:.4g} at this noise multiplier.')
  lines.append('')
  lines.append(statement.privacy_statement(
      registry.privacy_note(_ALGORITHM.value, dp=True), _MECHANISM.value, epsilon, setting.delta, rounds,
      setting.sampling.value, setting.accountant.value))
  return '\n'.join(lines)


def main(argv):
  del argv  # cli.run refuses positional arguments.
  try:
    print(run())
  except cli.user_errors() as e:
    cli.fail('privacy.py', e)


if __name__ == '__main__':
  cli.run(main, 'privacy.py', preload='')
