"""The model registry: names, lookup, and a model registered only here.

`Tiny` is a test-only architecture (a scaled product of user and item
vectors). Registered in this file alone, with no change to library code, it
trains under FedRecon, FedAvg, FedProx and the centralized baseline, is
evaluated, and its export scores users as the evaluation does: the proof that
a new model is one module and one registration.
"""

import collections
import dataclasses
import os
from typing import ClassVar

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from research.fedrec.data import corpus
from research.fedrec.inference import export
from research.fedrec.inference import from_keras
from research.fedrec.models import autorec
from research.fedrec.models import builder
from research.fedrec.models import mf
from research.fedrec.models import ncf
from research.fedrec.models import registry
from research.fedrec.training import experiment
from research.fedrec.training import runtime
from research.fedrec.training import trained
from tests.training import implicit_testing


@dataclasses.dataclass(frozen=True)
class TinyConfig:
  model_name: ClassVar[str] = 'test_tiny'

  embedding_dim: int = 3
  seed: int = 0


class Tiny(registry.Model):
  """logit = w . (p_u * q_i) + c: user vectors local, w and c global."""

  name = 'test_tiny'
  label = 'Tiny'
  help = 'A model registered by a test.'
  config_class = TinyConfig

  def create_keras_model(self, config, num_items, num_users=None,
                         regularization_output=False):
    def init(offset):
      return tf.keras.initializers.RandomNormal(stddev=0.1,
                                                seed=config.seed + offset)
    dim = config.embedding_dim
    item_input = tf.keras.Input(shape=(), dtype=tf.int64, name='item')
    item = tf.keras.layers.Embedding(num_items, dim,
                                     embeddings_initializer=init(1),
                                     name='tiny_item')
    if num_users is None:
      inputs, key = item_input, item_input
      user = mf.UserEmbedding(dim, init(2), name='tiny_user')
    else:
      user_input = tf.keras.Input(shape=(), dtype=tf.int64, name='user')
      inputs = collections.OrderedDict(user=user_input, item=item_input)
      key = user_input
      user = tf.keras.layers.Embedding(num_users, dim,
                                       embeddings_initializer=init(2),
                                       name='tiny_user')
    scale = tf.keras.layers.Dense(1, name='tiny_scale')
    logit = scale(tf.keras.layers.Multiply()([user(key), item(item_input)]))
    if num_users is None or regularization_output:  # No regularization: 0.
      outputs = tf.keras.layers.Concatenate()(
          [logit, tf.keras.layers.Lambda(tf.zeros_like)(logit)])
    else:
      outputs = tf.keras.layers.Reshape(())(logit)
    return registry.ModelLayers(tf.keras.Model(inputs, outputs),
                                [item, scale], [user])


class RegistryTest(absltest.TestCase):

  def test_built_in_models_and_what_they_are(self):
    self.assertEqual(registry.names(),
                     ['mf', 'gmf', 'mlp', 'neumf', 'mf_features',
                      'neumf_features', 'autorec'])
    what = {name: (registry.get(name).feedbacks,
                   registry.get(name).has_user_part,
                   registry.get(name).inputs) for name in registry.names()}
    pairs, vectors = registry.Inputs.PAIRS, registry.Inputs.USER_VECTORS
    both, implicit = ('explicit', 'implicit'), ('implicit',)
    self.assertEqual(what, {'mf': (both, True, pairs),
                            'gmf': (implicit, True, pairs),
                            'mlp': (implicit, True, pairs),
                            'neumf': (implicit, True, pairs),
                            'mf_features': (both, True, pairs),
                            'neumf_features': (implicit, True, pairs),
                            'autorec': (implicit, False, vectors)})
    for name in registry.names():  # Each config names its model.
      self.assertEqual(registry.of(registry.get(name).config_class()).name,
                       name)

  def test_a_config_takes_the_settings_of_its_fields(self):
    settings = dict(embedding_dim=8, use_biases=False, l2=0.5, seed=3,
                    mlp_layers=(4, 2), hidden_units=7)
    self.assertEqual(registry.get('mf').config(**settings),
                     mf.MFConfig(embedding_dim=8, use_biases=False, l2=0.5,
                                 seed=3))
    self.assertEqual(registry.get('mlp').config(**settings),
                     ncf.MLPConfig(mlp_layers=(4, 2), l2=0.5, seed=3))
    self.assertEqual(registry.get('autorec').config(**settings),
                     autorec.AutoRecConfig(hidden_units=7, l2=0.5, seed=3))
    with self.assertRaisesRegex(ValueError, '^--embedding_dim must be >= 1'):
      registry.get('neumf').config(embedding_dim=0)

  def test_unknown_and_duplicate_names_are_one_line_errors(self):
    with self.assertRaisesRegex(ValueError, r'^--model=svd: no such model '
                                r'\(registered: mf, gmf, mlp, neumf, '
                                r'mf_features, neumf_features, autorec\)\.$'):
      registry.get('svd')
    with self.assertRaisesRegex(ValueError, 'registered already'):
      registry.register(registry.get('mf'))
    with self.assertRaisesRegex(ValueError, 'is built in'):
      registry.unregister('mf')

    class Misnamed(Tiny):
      name = 'test_misnamed'
    with self.assertRaisesRegex(ValueError, r'TinyConfig\.model_name must be '
                                "'test_misnamed'"):
      registry.register(Misnamed())
    with self.assertRaisesRegex(ValueError, 'not a registered model'):
      registry.of(corpus.DataConfig())


class RegisteredModelTest(absltest.TestCase):
  """`Tiny`, registered here only, through the library's model functions."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    registry.register(Tiny())

  @classmethod
  def tearDownClass(cls):
    registry.unregister('test_tiny')
    super().tearDownClass()

  def test_builder_builds_it_in_both_layouts(self):
    config = TinyConfig(embedding_dim=2)
    self.assertIn('test_tiny', registry.names())
    recon = builder.create_keras_model(config, num_items=2)
    recon.model.get_layer('tiny_user').set_weights([np.array([[1.0, 2.0]])])
    recon.model.get_layer('tiny_item').set_weights(
        [np.array([[3.0, 4.0], [0.5, -1.0]])])
    recon.model.get_layer('tiny_scale').set_weights(
        [np.array([[1.0], [0.5]]), np.array([0.25])])
    # item 0: 1*3*1 + 2*4*0.5 + 0.25; item 1: 0.5 - 1 + 0.25.
    np.testing.assert_allclose(recon.model(np.array([0, 1])),
                               [[7.25, 0.0], [-0.25, 0.0]], rtol=1e-6)
    table = builder.create_keras_model(config, num_items=2, num_users=1)
    for layer in recon.model.layers:
      if layer.weights:
        table.model.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_allclose(
        table.model({'user': np.array([0, 0]), 'item': np.array([0, 1])}),
        [7.25, -0.25], rtol=1e-6)
    self.assertEqual(builder.initial_user_vectors(config, 2).keys(),
                     {'tiny_user'})
    # Its loss is the registry's default for implicit feedback.
    self.assertIsInstance(builder.create_loss(config, True, True),
                          mf.RegularizedBCE)
    builder.check_supported(config, implicit=True, reconstruction=True)
    with self.assertRaisesRegex(ValueError, '^--model=test_tiny learns from '
                                'implicit feedback: add --feedback=implicit'):
      builder.check_supported(config, implicit=False, reconstruction=False)

  @pytest.mark.slow
  def test_it_trains_under_every_method_is_evaluated_and_exported(self):
    root = self.create_tempdir().full_path
    for algorithm in ('fedrecon', 'fedavg', 'fedprox', 'centralized'):
      with self.subTest(algorithm):
        config = implicit_testing.config(
            root, algorithm, algorithm=algorithm, model=TinyConfig(),
            run_centralized_baseline=False)
        self.assertEqual(config.model_name, 'test_tiny')
        summary = experiment.run_experiment(config, log=lambda _: None)
        self.assertEqual(summary['model'], 'test_tiny')
        self.assertEqual(sorted(summary['test_metrics']),
                         sorted([algorithm, 'popularity']))
        for name, value in summary['test_metrics'][algorithm].items():
          if 'avg_popularity' not in name:  # A count; the rest are shares.
            self.assertBetween(value, 0.0, 1.0)
        if algorithm == 'centralized':
          exported = export.load_export(
              os.path.join(config.output_dir, 'export'))
          keras_model = exported.keras_model(len(exported.raw_users))
        else:
          with runtime.local_runtime():
            run = trained.load_run(config.output_dir)
          reconstruct = algorithm == 'fedrecon'
          keras_model = from_keras.keras_model_of(
              experiment.model_config_of(config, run.split, run.data),
              run.data.num_items, None if reconstruct else run.data.num_users,
              run.model_weights)
          # evaluate.py's path finds the run's own test numbers.
          self.assertEqual(dict(trained.evaluate_ranking(run, 'test').overall),
                           dict(summary['test_metrics'][algorithm]))
        exported = implicit_testing.check_export_scores(
            self, config, keras_model, reconstruct=algorithm == 'fedrecon')
        self.assertEqual(exported.metadata['model_name'], 'test_tiny')


if __name__ == '__main__':
  absltest.main()
