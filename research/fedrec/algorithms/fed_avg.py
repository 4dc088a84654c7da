"""FedAvg (McMahan et al., AISTATS 2017) over the whole MF model.

The classic federated baseline: every client trains the full model, including
the user-embedding table, and sends its whole update. The user table is
global, so a client's update reveals which users' rows it touched and how:
FedAvg leaks preferences that Federated Reconstruction keeps on the client.
It is here as the baseline that shows what FedRecon buys.
"""

from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import client_data
from research.fedrec.algorithms import cohort_scores
from research.fedrec.algorithms import cohorts
from research.fedrec.algorithms import fed_recon
from research.fedrec.algorithms import inline
from research.fedrec.algorithms import registry
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.evaluation import training_metrics
from research.fedrec.models import builder


def create_model_fn(config: builder.ModelConfig, num_items: int, num_users: int,
                    implicit: bool = False):
  """A no-arg function returning the classic layout as a `tff.learning` model."""
  if builder.user_vector_inputs(config):
    input_spec = client_data.user_vector_spec(num_items)
  else:
    input_spec = client_data.FEDAVG_SPEC

  @tf.autograph.experimental.do_not_convert
  def model_fn() -> tff.learning.models.VariableModel:
    layers = builder.create_keras_model(config, num_items, num_users,
                                        regularization_output=True)
    model = tff.learning.models.from_keras_model(
        layers.model,
        loss=builder.create_loss(config, implicit, True),
        input_spec=input_spec,
        metrics=training_metrics.create_metrics(implicit))
    return inline.inline_tf_functions(model,
                                      ('forward_pass', 'predict_on_batch'))
  return model_fn


def build_training_process(
    model_config: builder.ModelConfig, num_items: int, num_users: int,
    optimizers: fed_recon.Optimizers, pipeline: pipelines.PipelineConfig,
    store_path: str,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    uniform_weighting: bool = False,
    implicit: bool = False) -> tff.learning.templates.LearningProcess:
  """FedAvg whose `next` takes a list of client-id strings.

  Clients are weighted by their number of examples unless `uniform_weighting`.
  Under implicit feedback the ids should carry the round
  (`client_store.round_client_ids`), so negatives differ between rounds.
  """
  model_fn = create_model_fn(model_config, num_items, num_users, implicit)
  build = (tff.learning.algorithms.build_unweighted_fed_avg
           if uniform_weighting else
           tff.learning.algorithms.build_weighted_fed_avg)
  process = build(model_fn, client_optimizer_fn=optimizers.client,
                  server_optimizer_fn=optimizers.server,
                  model_aggregator=model_aggregator)
  return with_client_data(process, model_config, num_items, pipeline,
                          store_path, implicit)


def build_cohort_training_process(
    model_config: builder.ModelConfig, num_items: int, num_users: int,
    optimizers: fed_recon.Optimizers, optimizer_settings,
    pipeline: pipelines.PipelineConfig, store_path: str,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory],
    uniform_weighting: bool, cohort_size: int = 0, zeroing: bool = False,
    clip_query=None, implicit: bool = False,
    proximal_strength: float = 0.0) -> cohorts.CohortProcess:
  """FedAvg (FedProx with `proximal_strength`) run in cohorts.

  Its `next` takes client ids, and its state, weights and metrics are those
  of the per-client process (to float rounding; tests/algorithms/
  fed_avg_cohort_test.py). Every client optimizer, the models of
  `cohort_scores.SCORERS` (`FedAvg.cohort_unsupported`).
  `model_aggregator` must be weighted; with `zeroing` or `clip_query`, the
  client work zeroes or clips each user (algorithms/cohort_work.py).
  """
  # Imported here: the cohort client work is only built when it is used.
  from research.fedrec.algorithms import cohort_optimizers  # pylint: disable=g-import-not-at-top
  from research.fedrec.algorithms import fed_avg_cohort  # pylint: disable=g-import-not-at-top
  process = fed_avg_cohort.build_training_process(
      create_model_fn(model_config, num_items, num_users, implicit),
      model_config, num_items, num_users, pipeline.local_epochs,
      pipeline.batch_size, cohort_optimizers.UserOptimizer(
          optimizer_settings.client, optimizer_settings.client_learning_rate),
      proximal_strength, optimizers.server, model_aggregator,
      uniform_weighting, implicit, zeroing, clip_query)
  cohort_size = fed_avg_cohort.users_per_cohort(model_config, num_items,
                                                num_users, cohort_size)
  if builder.user_vector_inputs(model_config):
    packer = cohorts.UserVectorCohortPacker(store_path, pipeline, num_items,
                                            cohort_size)
  elif implicit:
    packer = cohorts.ImplicitCohortPacker(
        store_path, pipeline, num_items, 0, pipeline.local_epochs,
        cohort_size)
  else:
    packer = cohorts.CohortPacker(store_path, pipeline, cohort_size)
  return cohorts.CohortProcess(process, packer)


def with_client_data(process: tff.learning.templates.LearningProcess,
                     model_config: builder.ModelConfig, num_items: int,
                     pipeline: pipelines.PipelineConfig, store_path: str,
                     implicit: bool) -> tff.learning.templates.LearningProcess:
  """`process` fed the classic layout's batches of client-store ids."""
  data = client_store.create_client_data(
      store_path, client_store.TRAIN, implicit and pipeline.exclude_heldout)
  if builder.user_vector_inputs(model_config):
    data = data.preprocess(client_data.create_user_vector_train_fn(pipeline,
                                                             num_items))
  elif implicit:
    data = data.preprocess(client_data.create_implicit_fedavg_train_fn(
        pipeline, num_items))
  else:
    data = data.preprocess(client_data.create_fedavg_train_fn(pipeline))
  return tff.simulation.compose_dataset_computation_with_learning_process(
      data.dataset_computation, process)


class FedAvg(registry.Method):
  """The method object of FedAvg (see the module doc)."""

  name = 'fedavg'
  label = 'FedAvg'

  def proximal_strength(self, inputs: registry.ProcessInputs) -> float:
    """FedProx's mu (FedAvg: 0)."""
    del inputs
    return 0.0

  def cohort_unsupported(self, config) -> Optional[str]:
    """Cohorts reproduce the models with a cohort scorer, every client
    optimizer (fed_avg_cohort.py)."""
    return cohorts.unsupported(cohorts.common_unsupported(
        config, tuple(cohort_scores.SCORERS)))

  def build_process(self, inputs: registry.ProcessInputs):
    if inputs.in_cohorts:
      return build_cohort_training_process(
          inputs.model_config, inputs.num_items, inputs.num_users,
          inputs.optimizers, inputs.optimizer_settings, inputs.pipeline,
          inputs.store_path, inputs.aggregator, inputs.uniform_weighting,
          inputs.cohort_size, inputs.zeroing_per_user, inputs.clip_query,
          inputs.implicit, self.proximal_strength(inputs))
    return self.build_per_client_process(inputs)

  def build_per_client_process(self, inputs: registry.ProcessInputs):
    return build_training_process(
        inputs.model_config, inputs.num_items, inputs.num_users,
        inputs.optimizers, inputs.pipeline, inputs.store_path,
        model_aggregator=inputs.aggregator,
        uniform_weighting=inputs.uniform_weighting, implicit=inputs.implicit)


METHOD = FedAvg()
