"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks",
MLSys 2020) over the whole model.

FedAvg whose clients minimize their loss plus mu/2 |w - w_global|^2, the
proximal term that keeps a client's local steps near the model it received:
each local step descends grad(loss) + mu (w - w_global). Under heterogeneous
clients (each user rates different items) it limits client drift. At mu = 0
it is FedAvg exactly (tests/algorithms/fed_prox_test.py, to 1e-6). Like
FedAvg its user table is global (see fed_avg.py for what that leaks).

The client work is fedrec's own: TFF 0.87's FedProx
(`tff.learning.algorithms.build_weighted_fed_prox`, via
`proximal_client_work`) adds mu (w_global - w) to the gradient, the opposite
sign, so its clients are pushed away from the global model (found by the
hand-computed round of the test; its source reads
`delta_l2_regularizer * (y - x)` with x the current and y the initial
weights). Everything around the client work is TFF's: broadcast, the
aggregator factory (DP, secure sum, compression), the server optimizer.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import fed_avg
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import registry
from research.fedrec.data import pipelines
from research.fedrec.models import builder


def _client_update(model_fn, optimizer: tff.learning.optimizers.Optimizer,
                   proximal_strength: float, uniform_weighting: bool):
  """A tf.function: (global weights, dataset) -> (ClientResult, metrics)."""
  model = model_fn()

  @tf.function
  def client_update(initial_weights, dataset):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
    trainable = tuple(tf.nest.flatten(weights.trainable))
    start = tuple(tf.nest.flatten(initial_weights.trainable))

    def step(state, batch):
      num_examples, optimizer_state = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      gradients = tape.gradient(output.loss, trainable)
      # d/dw of mu/2 |w - w_global|^2.
      gradients = tuple(g + proximal_strength * (w - w0)
                        for g, w, w0 in zip(gradients, trainable, start))
      optimizer_state, updated = optimizer.next(optimizer_state, trainable,
                                                gradients)
      for variable, value in zip(trainable, updated):
        variable.assign(value)
      return (num_examples + tf.cast(output.num_examples, tf.int64),
              optimizer_state)

    specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
    num_examples, _ = dataset.reduce(
        (tf.constant(0, tf.int64), optimizer.initialize(specs)), step)
    delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                                  weights.trainable)
    delta, non_finite = tff.learning.tensor_utils.zero_all_if_any_non_finite(
        delta)
    weight = (tf.constant(1.0) if uniform_weighting
              else tf.cast(num_examples, tf.float32))
    weight = tf.where(non_finite > 0, 0.0, weight)
    return (tff.learning.templates.ClientResult(update=delta,
                                                update_weight=weight),
            model.report_local_unfinalized_metrics())

  return client_update


def _client_work(model_fn, optimizer, proximal_strength: float,
                 uniform_weighting: bool):
  """The ClientWorkProcess of FedProx (TFF's FedAvg client work, plus mu)."""
  with tf.Graph().as_default():
    model = model_fn()
    aggregate_metrics = tff.learning.metrics.sum_then_finalize(
        model.metric_finalizers())
  weights_type = tff.learning.models.weights_type_from_model(model)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))

  @tff.tensorflow.computation(weights_type, data_type)
  def client_update(initial_weights, dataset):
    return _client_update(model_fn, optimizer, proximal_strength,
                          uniform_weighting)(initial_weights, dataset)

  @tff.federated_computation
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    result, metrics = tff.federated_map(client_update, (weights, client_data))
    measurements = tff.federated_zip(collections.OrderedDict(
        train=aggregate_metrics(metrics)))
    return tff.templates.MeasuredProcessOutput(state, result, measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def build_training_process(
    model_config: builder.ModelConfig, num_items: int, num_users: int,
    optimizers: fed_recon.Optimizers, pipeline: pipelines.PipelineConfig,
    store_path: str, proximal_strength: float,
    model_aggregator=None,
    uniform_weighting: bool = False,
    implicit: bool = False) -> tff.learning.templates.LearningProcess:
  """FedProx whose `next` takes a list of client-id strings (as FedAvg's).

  `model_aggregator` is a weighted factory (or, with `uniform_weighting`, an
  unweighted one); None: the (weighted) mean.
  """
  model_fn = fed_avg.create_model_fn(model_config, num_items, num_users,
                                     implicit)

  @tff.tensorflow.computation
  def initial_weights():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  weights_type = initial_weights.type_signature.result
  if model_aggregator is None:
    model_aggregator = (tff.aggregators.UnweightedMeanFactory()
                        if uniform_weighting else
                        tff.aggregators.MeanFactory())
  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
  aggregator = model_aggregator.create(weights_type.trainable,
                                       tff.TensorType(np.float32))
  process = tff.learning.templates.compose_learning_process(
      initial_weights,
      tff.learning.templates.build_broadcast_process(weights_type),
      _client_work(model_fn, optimizers.client, float(proximal_strength),
                   uniform_weighting),
      aggregator,
      tff.learning.templates.build_apply_optimizer_finalizer(
          optimizers.server, weights_type))
  return fed_avg.with_client_data(process, model_config, num_items, pipeline,
                                  store_path, implicit)


class FedProx(fed_avg.FedAvg):
  """The method object of FedProx (its setting: `proximal_strength`)."""

  name = 'fedprox'
  label = 'FedProx'

  def proximal_strength(self, inputs: registry.ProcessInputs) -> float:
    return float(self.settings(inputs.settings)['proximal_strength'])

  def build_per_client_process(self, inputs: registry.ProcessInputs):
    return build_training_process(
        inputs.model_config, inputs.num_items, inputs.num_users,
        inputs.optimizers, inputs.pipeline, inputs.store_path,
        self.proximal_strength(inputs), model_aggregator=inputs.aggregator,
        uniform_weighting=inputs.uniform_weighting, implicit=inputs.implicit)


METHOD = FedProx()
