"""The centralized baseline as a method: Keras fit on the pooled ratings.

It trains no federated process (training/centralized.py fits the model);
as a method it only says what it accepts: no DP, secure aggregation or
compression, which apply to federated updates.
"""

from research.fedrec.algorithms import registry
from research.fedrec.privacy import settings


class Centralized(registry.Method):

  name = 'centralized'
  label = 'centralized'
  kind = registry.Kind.CENTRAL

  def validate(self, config) -> None:
    super().validate(config)
    if (config.dp.enabled or config.aggregation.secure_aggregation or
        config.aggregation.compression != settings.Compression.NONE):
      raise ValueError('--dp, --secure_aggregation and --compression apply to '
                       'federated algorithms, not --algorithm=centralized.')


METHOD = Centralized()
