"""The popularity baseline, computed federatedly.

Each client sends the multi-hot vector of the items it has interacted with in
training (a user counts once per item); the server aggregates the vectors over
all training clients in one round with the run's aggregator, so under `--dp`
the counts get the same user-level mechanism as model updates (each vector
clipped to the L2 clip, Gaussian noise on the sum). Without DP the result is
exactly the mean of the vectors, i.e. the item counts divided by the number of
clients; ranking by it is ranking by popularity.
"""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import registry
from research.fedrec.data import client_store


def build_counts(num_items: int, store_path: str,
                 aggregator: tff.aggregators.UnweightedAggregationFactory):
  """A computation: training client ids -> aggregated item-count vector."""
  vector_type = tff.TensorType(np.float32, [num_items])
  data = client_store.create_client_data(store_path, client_store.TRAIN)
  dataset_type = data.dataset_computation.type_signature.result

  @tff.tensorflow.computation(dataset_type)
  def client_vector(dataset):
    return dataset.reduce(
        tf.zeros([num_items], tf.float32),
        lambda acc, e: tf.tensor_scatter_nd_max(
            acc, tf.reshape(e['item'], [1, 1]), tf.ones([1], tf.float32)))

  process = aggregator.create(vector_type)

  @tff.federated_computation(tff.FederatedType(dataset_type, tff.CLIENTS))
  def counts(datasets):
    vectors = tff.federated_map(client_vector, datasets)
    return process.next(process.initialize(), vectors).result

  return tff.simulation.compose_dataset_computation_with_computation(
      data.dataset_computation, counts)


class Popularity(registry.Method):
  """The method object: one round of every training client's item set."""

  name = 'popularity'
  label = 'popularity'
  kind = registry.Kind.COUNTS

  def validate(self, config) -> None:
    if not config.data.implicit:
      raise ValueError('--algorithm=popularity ranks items: add '
                       '--feedback=implicit.')
    super().validate(config)


METHOD = Popularity()
