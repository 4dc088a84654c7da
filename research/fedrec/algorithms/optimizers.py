"""TFF optimizers chosen by name (`--client_optimizer=adam` and friends).

All are `tff.learning.optimizers` (functional, deterministic, serializable into
the server state), so a checkpointed run resumes with its optimizer state.
"""

import enum
import math


class OptimizerName(enum.Enum):
  SGD = 'sgd'
  SGDM = 'sgdm'
  ADAM = 'adam'
  ADAGRAD = 'adagrad'
  YOGI = 'yogi'


MOMENTUM = 0.9


def create_optimizer(name: OptimizerName | str,
                     learning_rate: float) -> 'tff.learning.optimizers.Optimizer':
  """Returns the named TFF optimizer with `learning_rate`.

  `sgdm` uses momentum 0.9; `adam` and `yogi` their published defaults.

  Raises:
    ValueError: unknown name or a non-positive learning rate.
  """
  # Imported here: the binaries read this module's enums for their flags
  # before they pay for importing TFF.
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  name = OptimizerName(name)
  if learning_rate <= 0:
    raise ValueError(f'learning rate of {name.value} must be > 0, got '
                     f'{learning_rate}.')
  if name == OptimizerName.SGD:
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)
  if name == OptimizerName.SGDM:
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate,
                                              momentum=MOMENTUM)
  if name == OptimizerName.ADAM:
    return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
  if name == OptimizerName.ADAGRAD:
    return tff.learning.optimizers.build_adagrad(learning_rate=learning_rate)
  return tff.learning.optimizers.build_yogi(learning_rate=learning_rate)


class Schedule(enum.Enum):
  """How the server learning rate changes over the rounds."""
  CONSTANT = 'constant'
  LINEAR = 'linear'  # From the base rate at round 1 down towards 0.
  COSINE = 'cosine'  # Half a cosine from the base rate down towards 0.


def scheduled_learning_rate(schedule: Schedule | str, base: float,
                            round_num: int, total_rounds: int) -> float:
  """The learning rate of (1-based) `round_num` of `total_rounds`.

  Round 1 uses `base`; the decaying schedules reach `base / total_rounds`
  (linear) or `base * (1 - cos(pi / total_rounds)) / 2` (cosine) in the last
  round, never 0, so every round still moves the model.
  """
  schedule = Schedule(schedule)
  if not 1 <= round_num <= total_rounds:
    raise ValueError(f'round {round_num} is outside 1..{total_rounds}.')
  done = (round_num - 1) / total_rounds
  if schedule == Schedule.LINEAR:
    return base * (1.0 - done)
  if schedule == Schedule.COSINE:
    return base * 0.5 * (1.0 + math.cos(math.pi * done))
  return base
