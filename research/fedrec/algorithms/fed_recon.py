"""Federated Reconstruction (Singhal et al., NeurIPS 2021) for recommenders.

Each round, a sampled client (1) reconstructs its local user embedding from
part of its ratings with the global item model frozen, then (2) trains the
global item model with the user embedding frozen, and sends only the global
update. The user embedding is re-created on every visit and never leaves the
client: the server state, the aggregates and the checkpoints hold item-side
variables only.

`build_training_process` and `build_evaluation` compose TFF's
`tff.learning.algorithms.build_fed_recon` / `build_fed_recon_eval` with this
project's MF model, client-store datasets (built from client ids inside the
runtime) and an optional aggregator (DP, secure aggregation, compression are
passed in as aggregator factories, never branched on here).
"""

import collections
import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from research.fedrec.algorithms import client_data
from research.fedrec.algorithms import cohort_scores
from research.fedrec.algorithms import cohorts
from research.fedrec.algorithms import inline
from research.fedrec.algorithms import registry
from research.fedrec.data import client_store
from research.fedrec.data import pipelines
from research.fedrec.evaluation import training_metrics
from research.fedrec.models import builder


@dataclasses.dataclass(frozen=True)
class ReconConfig:
  """How a client splits its work between reconstruction and training."""

  recon_epochs: int = 1
  recon_steps_max: Optional[int] = None
  post_recon_epochs: int = 1
  post_recon_steps_max: Optional[int] = None
  # Reconstruct on even batches and train on odd ones (disjoint halves).
  split_dataset: bool = False
  # Reconstruction epochs of an evaluated (or recommended-for) user; None:
  # `recon_epochs`, as in training.
  eval_recon_epochs: Optional[int] = None

  def __post_init__(self):
    if self.recon_epochs < 1 or self.post_recon_epochs < 1:
      raise ValueError('--recon_epochs and --post_recon_epochs must be >= 1.')
    if self.eval_recon_epochs is not None and self.eval_recon_epochs < 1:
      raise ValueError('--eval_recon_epochs must be >= 1 (or unset: '
                       '--recon_epochs).')
    for name in ('recon_steps_max', 'post_recon_steps_max'):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f'--{name} must be >= 1 (or unset for no limit).')

  @property
  def evaluation_epochs(self) -> int:
    """Reconstruction epochs at evaluation and inference."""
    return self.eval_recon_epochs or self.recon_epochs


@dataclasses.dataclass(frozen=True)
class Optimizers:
  client: tff.learning.optimizers.Optimizer
  server: tff.learning.optimizers.Optimizer
  reconstruction: tff.learning.optimizers.Optimizer


def _create_train_split_fn(config: ReconConfig):
  return tff.learning.models.ReconstructionModel.build_dataset_split_fn(
      recon_epochs=config.recon_epochs,
      recon_steps_max=config.recon_steps_max,
      post_recon_epochs=config.post_recon_epochs,
      post_recon_steps_max=config.post_recon_steps_max,
      split_dataset=config.split_dataset)


def _create_implicit_train_split_fn(config: ReconConfig):
  """Splits implicit batches by their local epoch (see pipelines)."""
  def split_fn(dataset):
    def part(in_stage, steps_max):
      stage = dataset.filter(lambda b: in_stage(b['x']['epoch'][0])).map(
          lambda b: collections.OrderedDict(x=b['x']['item'], y=b['y']))
      return stage if steps_max is None else stage.take(steps_max)
    recon = part(lambda e: e < config.recon_epochs, config.recon_steps_max)
    post = part(lambda e: e >= config.recon_epochs,
                config.post_recon_steps_max)
    return recon, post
  return split_fn


def create_eval_split_fn(config: ReconConfig,
                         pipeline: pipelines.PipelineConfig):
  """Evaluation split: reconstruct on support ratings, score query ratings.

  Reconstruction runs `evaluation_epochs` epochs (training's `recon_epochs`
  unless `eval_recon_epochs` is set) capped at `recon_steps_max` steps; every
  query rating is scored once.
  """
  def split_fn(dataset):
    support, query = client_data.split_support_query(dataset, pipeline)
    support = support.repeat(config.evaluation_epochs)
    if config.recon_steps_max is not None:
      support = support.take(config.recon_steps_max)
    return support, query
  return split_fn


def create_model_fns(config: builder.ModelConfig, num_items: int, input_spec,
                     implicit: bool = False):
  """The (model_fn, loss_fn) pair for TFF's Federated Reconstruction.

  Args:
    config: The model's hyperparameters.
    num_items: Number of items.
    input_spec: The client batches' type (`client_data.RECON_TRAIN_SPEC`,
      `client_data.RECON_IMPLICIT_TRAIN_SPEC` or
      `client_data.RECON_EVAL_SPEC`; the Keras model is
      the same, the dataset split function turns batches into its input).
    implicit: Implicit feedback (BCE) instead of ratings (MSE).

  Returns:
    `model_fn` returning a `tff.learning.models.ReconstructionModel` and
    `loss_fn` returning the loss.
  """
  @tf.autograph.experimental.do_not_convert
  def model_fn() -> tff.learning.models.ReconstructionModel:
    layers = builder.create_keras_model(config, num_items)
    model = tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
        keras_model=layers.model,
        global_layers=layers.global_layers,
        local_layers=layers.user_layers,
        input_spec=input_spec)
    return inline.inline_tf_functions(model, ('forward_pass',))

  return model_fn, lambda: builder.create_loss(config, implicit, True)


def build_training_process(
    model_config: builder.ModelConfig, num_items: int, recon: ReconConfig,
    optimizers: Optimizers, pipeline: pipelines.PipelineConfig,
    store_path: str,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    uniform_weighting: bool = False,
    implicit: bool = False) -> tff.learning.templates.LearningProcess:
  """FedRecon training whose `next` takes a list of client-id strings.

  Under implicit feedback the ids should carry the round
  (`client_store.round_client_ids`), so negatives differ between rounds.
  """
  model_fn, loss_fn = create_model_fns(
      model_config, num_items,
      client_data.RECON_IMPLICIT_TRAIN_SPEC if implicit else
      client_data.RECON_TRAIN_SPEC,
      implicit)
  process = tff.learning.algorithms.build_fed_recon(
      model_fn,
      loss_fn=loss_fn,
      metrics_fn=lambda: training_metrics.create_metrics(implicit),
      server_optimizer_fn=optimizers.server,
      client_optimizer_fn=optimizers.client,
      reconstruction_optimizer_fn=optimizers.reconstruction,
      dataset_split_fn=(_create_implicit_train_split_fn(recon) if implicit
                        else _create_train_split_fn(recon)),
      client_weighting=(tff.learning.ClientWeighting.UNIFORM
                        if uniform_weighting else None),
      model_aggregator_factory=model_aggregator)
  data = client_store.create_client_data(
      store_path, client_store.TRAIN, implicit and pipeline.exclude_heldout)
  if implicit:
    data = data.preprocess(client_data.create_implicit_recon_train_fn(
        pipeline, num_items, recon.recon_epochs, recon.post_recon_epochs,
        recon.split_dataset))
  else:
    data = data.preprocess(client_data.create_recon_train_fn(pipeline))
  return tff.simulation.compose_dataset_computation_with_learning_process(
      data.dataset_computation, process)


def build_cohort_training_process(
    model_config: builder.ModelConfig, num_items: int, recon: ReconConfig,
    optimizers: Optimizers, optimizer_settings, pipeline:
    pipelines.PipelineConfig, store_path: str,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory],
    uniform_weighting: bool, cohort_size: int = 0,
    zeroing: bool = False, clip_query=None,
    implicit: bool = False, silo_of=None,
    silo_records=None) -> cohorts.CohortProcess:
  """FedRecon training run in cohorts (`--execution=cohort`).

  Its `next` takes client ids, and its state, weights and metrics are those
  of `build_training_process` (to float rounding; tests/algorithms/
  fed_recon_cohort_test.py). MF under explicit feedback, the models of
  `cohort_scores.SCORERS` under implicit feedback (`implicit`, ids carrying
  the round), any optimizers (`FedRecon.cohort_unsupported`). `model_aggregator` must be
  weighted: a cohort is weighted by its users' summed weight. With
  `zeroing`, adaptive zeroing acts on each user in the client work (and
  `model_aggregator` must not zero). With `clip_query` (`--dp=fixed` or
  `adaptive`), each user is clipped in the client work and
  `model_aggregator` is built with `preclipped=True`. With `silo_of` (each
  dense user id's silo), each silo's users are one cohort, whose record
  `silo_records` says how to weigh and clip (`cohort_work.SiloRecords`).
  """
  # Imported here: the cohort client work is only built when it is used.
  from research.fedrec.algorithms import cohort_optimizers  # pylint: disable=g-import-not-at-top
  from research.fedrec.algorithms import cohort_work  # pylint: disable=g-import-not-at-top
  from research.fedrec.algorithms import fed_recon_cohort  # pylint: disable=g-import-not-at-top
  model_fn, _ = create_model_fns(model_config, num_items,
                                 client_data.RECON_TRAIN_SPEC)
  client_optimizer = cohort_optimizers.UserOptimizer(
      optimizer_settings.client, optimizer_settings.client_learning_rate)
  reconstruction_optimizer = cohort_optimizers.UserOptimizer(
      optimizer_settings.reconstruction,
      optimizer_settings.reconstruction_learning_rate)
  process = fed_recon_cohort.build_training_process(
      model_fn, model_config, num_items, recon, optimizers,
      pipeline.batch_size, client_optimizer, reconstruction_optimizer,
      model_aggregator, uniform_weighting, zeroing, clip_query, implicit,
      silo_records)
  if implicit:
    packer = cohorts.ImplicitCohortPacker(
        store_path, pipeline, num_items, recon.recon_epochs,
        recon.post_recon_epochs, cohort_size, recon.split_dataset)
  elif fed_recon_cohort.by_epoch(client_optimizer, reconstruction_optimizer,
                                 model_config):
    packer = cohorts.EpochCohortPacker(
        store_path, pipeline, recon.recon_epochs, recon.post_recon_epochs,
        cohort_size, recon.split_dataset)
  else:
    packer = cohorts.CohortPacker(store_path, pipeline, cohort_size)
  packer.silo_of = silo_of
  return cohort_work.with_silo_uploads(
      cohorts.CohortProcess(process, packer), process, silo_of,
      silo_records)


def build_evaluation(model_config: builder.ModelConfig, num_items: int,
                     recon: ReconConfig, reconstruction_optimizer,
                     pipeline: pipelines.PipelineConfig, store_path: str,
                     split_name: str):
  """Federated evaluation of global weights on one split of the store.

  Returns:
    `(process, client_ids)`: a `LearningProcess` whose `next` takes the eval
    state and client ids (after `process.set_model_weights`), and the ids of
    the split's evaluation clients.
  """
  model_fn, loss_fn = create_model_fns(model_config, num_items,
                                       client_data.RECON_EVAL_SPEC)
  process = tff.learning.algorithms.build_fed_recon_eval(
      model_fn,
      loss_fn=loss_fn,
      metrics_fn=lambda: training_metrics.create_metrics(False),
      reconstruction_optimizer_fn=reconstruction_optimizer,
      dataset_split_fn=create_eval_split_fn(recon, pipeline))
  data = client_store.create_client_data(store_path, split_name)
  data = data.preprocess(client_data.create_recon_eval_fn(pipeline))
  composed = tff.simulation.compose_dataset_computation_with_learning_process(
      data.dataset_computation, process)
  return composed, data.client_ids


class FedRecon(registry.Method):
  """The method object of Federated Reconstruction (see the module doc)."""

  name = 'fedrecon'
  label = 'FedRecon'
  reconstructs_users = True
  trains_in_silos = True  # User vectors are rebuilt on the silo, per user.

  def cohort_unsupported(self, config) -> Optional[str]:
    """Cohorts reproduce FedRecon of MF and MF with item features (explicit
    feedback) and of the models of `cohort_scores.SCORERS` (implicit), with
    every optimizer, with or without `--split_dataset`."""
    # Explicit feedback: MF's own client work, or the epoch-by-epoch one of
    # a scorer; implicit: every model with a cohort scorer.
    models = (tuple(cohort_scores.SCORERS) if config.data.implicit else
              ('mf', 'mf_features'))
    return cohorts.unsupported(cohorts.common_unsupported(config, models))

  def build_process(self, inputs: registry.ProcessInputs):
    if inputs.in_cohorts:
      return build_cohort_training_process(
          inputs.model_config, inputs.num_items, inputs.recon,
          inputs.optimizers, inputs.optimizer_settings, inputs.pipeline,
          inputs.store_path, inputs.aggregator, inputs.uniform_weighting,
          inputs.cohort_size, inputs.zeroing_per_user, inputs.clip_query,
          inputs.implicit, inputs.silo_of, inputs.silo_records)
    return build_training_process(
        inputs.model_config, inputs.num_items, inputs.recon, inputs.optimizers,
        inputs.pipeline, inputs.store_path,
        model_aggregator=inputs.aggregator,
        uniform_weighting=inputs.uniform_weighting, implicit=inputs.implicit)


METHOD = FedRecon()
