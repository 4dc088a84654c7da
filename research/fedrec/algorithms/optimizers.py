"""TFF optimizers chosen by name (`--client_optimizer=adam` and friends).

All are `tff.learning.optimizers` (functional, deterministic, serializable into
the server state), so a checkpointed run resumes with its optimizer state.
"""

import enum

import tensorflow_federated as tff


class OptimizerName(enum.Enum):
  SGD = 'sgd'
  SGDM = 'sgdm'
  ADAM = 'adam'
  ADAGRAD = 'adagrad'
  YOGI = 'yogi'


MOMENTUM = 0.9


def create_optimizer(name: OptimizerName | str,
                     learning_rate: float) -> tff.learning.optimizers.Optimizer:
  """Returns the named TFF optimizer with `learning_rate`.

  `sgdm` uses momentum 0.9; `adam` and `yogi` their published defaults.

  Raises:
    ValueError: unknown name or a non-positive learning rate.
  """
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
