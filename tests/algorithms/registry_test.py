"""The method registry: names, lookup, each method's settings and checks."""

from absl.testing import absltest

from research.fedrec.algorithms import registry
from research.fedrec.data import corpus
from research.fedrec.data import splits
from research.fedrec.models import autorec
from research.fedrec.privacy import settings as privacy_settings
from research.fedrec.training import experiment


def _config(**kwargs):
  return experiment.ExperimentConfig(root_output_dir='/unused',
                                     experiment_name='x', **kwargs)


class _TableOnly(registry.Method):
  """A test-only method: FedAvg-like, no process of its own."""

  name = 'test_table_only'
  label = 'TableOnly'
  help = 'A method registered by a test.'


class RegistryTest(absltest.TestCase):

  def test_built_in_methods_and_what_they_are(self):
    self.assertEqual(registry.names(), ['fedrecon', 'fedavg', 'fedprox',
                                        'fedmf', 'pfedrec',
                                        'fedrecon_dualper', 'centralized',
                                        'popularity'])
    self.assertEqual(registry.names(private_only=True),
                     ['fedrecon', 'fedavg', 'fedprox', 'fedmf', 'pfedrec',
                      'fedrecon_dualper', 'popularity'])
    kinds = {name: (registry.get(name).kind, registry.get(name).
                    reconstructs_users, registry.get(name).keeps_client_state)
             for name in registry.names()}
    self.assertEqual(kinds, {
        'fedrecon': (registry.Kind.PROCESS, True, False),
        'fedavg': (registry.Kind.PROCESS, False, False),
        'fedprox': (registry.Kind.PROCESS, False, False),
        'fedmf': (registry.Kind.PROCESS, False, True),
        'pfedrec': (registry.Kind.PROCESS, False, True),
        'fedrecon_dualper': (registry.Kind.PROCESS, False, True),
        'centralized': (registry.Kind.CENTRAL, False, False),
        'popularity': (registry.Kind.COUNTS, False, False)})

  def test_unknown_method_is_one_line_listing_the_registered_ones(self):
    message = ('^--algorithm=fedsgd: no such method \\(registered: fedrecon, '
               'fedavg, fedprox, fedmf, pfedrec, fedrecon_dualper, '
               'centralized, popularity\\).$')
    with self.assertRaisesRegex(ValueError, message):
      registry.get('fedsgd')
    with self.assertRaisesRegex(ValueError, message):
      _config(algorithm='fedsgd')

  def test_a_setting_shared_by_methods_names_them_all(self):
    methods, setting = registry.all_settings()['item_learning_rate_scale']
    self.assertEqual(methods, 'pfedrec or fedrecon_dualper')
    self.assertEqual(setting.default, 1.0)
    self.assertEqual(
        registry.get('fedrecon_dualper').settings(
            {'item_learning_rate_scale': 8.0}),
        {'item_learning_rate_scale': 8.0})
    self.assertEqual(
        registry.get('pfedrec').settings({'item_learning_rate_scale': 8.0}),
        {'item_learning_rate_scale': 8.0, 'probability_loss': False})
    with self.assertRaisesRegex(ValueError, '^--item_learning_rate_scale is '
                                'not a setting of --algorithm=fedmf.$'):
      registry.get('fedmf').settings({'item_learning_rate_scale': 8.0})

  def test_an_on_off_setting(self):
    methods, setting = registry.all_settings()['probability_loss']
    self.assertEqual((methods, setting.default), ('pfedrec', False))
    implicit = corpus.DataConfig(feedback=corpus.Feedback.IMPLICIT)
    config = _config(algorithm='pfedrec', data=implicit,
                     split=splits.SplitConfig(
                         kind=splits.SplitKind.LEAVE_ONE_OUT),
                     method_settings={'probability_loss': True})
    self.assertIs(config.method_settings['probability_loss'], True)
    self.assertTrue(registry.get('pfedrec').rules(
        config.method_settings).probability_loss)
    with self.assertRaisesRegex(ValueError, '^--probability_loss is a loss '
                                r'of implicit feedback \(--feedback=implicit'
                                r'\).$'):
      _config(algorithm='pfedrec', method_settings={'probability_loss': True})

  def test_method_settings_fill_from_the_registration(self):
    self.assertEqual(_config(algorithm='fedprox').method_settings,
                     {'proximal_strength': 0.01})
    self.assertEqual(
        _config(algorithm='fedprox',
                method_settings={'proximal_strength': 0.5}).method_settings,
        {'proximal_strength': 0.5})
    self.assertEqual(_config(algorithm='fedavg').method_settings, {})
    with self.assertRaisesRegex(ValueError, '^--proximal_strength is not a '
                                'setting of --algorithm=fedavg.$'):
      _config(algorithm='fedavg', method_settings={'proximal_strength': 0.5})
    with self.assertRaisesRegex(ValueError, '^--proximal_strength=-1: '
                                'expected a number >= 0.$'):
      _config(algorithm='fedprox', method_settings={'proximal_strength': -1.0})

  def test_each_method_checks_its_own_settings(self):
    with self.assertRaisesRegex(
        ValueError, "^--algorithm=fedprox cannot be evaluated with "
        "--split=user_disjoint: FedProx's global user table has no trained "
        'row for users unseen in training'):
      _config(algorithm='fedprox',
              split=splits.SplitConfig(kind=splits.SplitKind.USER_DISJOINT))
    with self.assertRaisesRegex(ValueError, '^--algorithm=popularity ranks '
                                'items: add --feedback=implicit.$'):
      _config(algorithm='popularity')
    with self.assertRaisesRegex(ValueError, '^--dp, --secure_aggregation and '
                                '--compression apply to federated'):
      _config(algorithm='centralized', aggregation=privacy_settings.
              AggregationConfig(secure_aggregation=True))
    with self.assertRaisesRegex(ValueError, '^--model=autorec has no user-'
                                'specific part to reconstruct'):
      _config(algorithm='fedrecon',
              model=autorec.AutoRecConfig(),
              data=corpus.DataConfig(feedback=corpus.Feedback.IMPLICIT))
    # FedProx fine-tunes its global table's rows like FedAvg.
    self.assertTrue(_config(algorithm='fedprox', finetune=True).finetune)

  def test_a_method_registered_elsewhere_is_one_registration(self):
    registry.register(_TableOnly())
    self.addCleanup(registry.unregister, 'test_table_only')
    self.assertEqual(registry.names()[-1], 'test_table_only')
    self.assertIn('test_table_only: A method registered by a test.',
                  registry.help_text())
    config = _config(algorithm='test_table_only')
    self.assertIs(config.method, registry.get('test_table_only'))
    with self.assertRaisesRegex(ValueError, 'registered already'):
      registry.register(_TableOnly())
    with self.assertRaisesRegex(ValueError, 'fedavg is built in'):
      registry.unregister('fedavg')

  def test_privacy_notes(self):
    self.assertIn('rebuilt on the client and never sent',
                  registry.privacy_note('fedrecon', dp=True))
    self.assertEqual(registry.privacy_note('fedprox', dp=False),
                     " FedProx's global user table is unprotected: it reveals "
                     "each participating user's preferences directly.")
    self.assertEqual(registry.get('fedavg').privacy_note(dp=True),
                     ' Under FedAvg the global user table is part of the '
                     'noised update and so covered too, but each row is '
                     'noised like every other parameter and learns little.')
    self.assertEqual(registry.privacy_note('centralized', dp=False), '')


if __name__ == '__main__':
  absltest.main()
