"""Cross-silo partitions: who is in which silo (data/silos.py)."""

from absl.testing import absltest
import numpy as np

from research.fedrec.data import silos


def _config(**kw):
  return silos.SiloConfig(partition='silo', **kw)


class AssignTest(absltest.TestCase):

  def test_random_equal_shares_are_a_seeded_permutation(self):
    config = _config(num_silos=3)
    silo_of = silos.assign(10, config, seed=7)
    self.assertEqual(np.bincount(silo_of).tolist(), [4, 3, 3])
    np.testing.assert_array_equal(silo_of, silos.assign(10, config, seed=7))
    self.assertFalse(np.array_equal(silo_of, silos.assign(10, config, 8)))
    # The silos of the permuted users, in permutation order.
    rng = np.random.default_rng([7, 0x5110])
    order = rng.permutation(10)
    np.testing.assert_array_equal(silo_of[order],
                                  [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])

  def test_skewed_shares_follow_the_dirichlet_draw(self):
    config = _config(num_silos=4, skew=0.3)
    silo_of = silos.assign(1000, config, seed=1)
    rng = np.random.default_rng([1, 0x5110])
    shares = rng.dirichlet(np.full(4, 0.3))
    sizes = 1 + rng.multinomial(996, shares)
    self.assertEqual(np.bincount(silo_of, minlength=4).tolist(),
                     sizes.tolist())
    self.assertTrue((sizes >= 1).all())
    self.assertGreater(sizes.max() / sizes.min(), 3)  # Unequal stores.

  def test_field_values_are_dealt_whole_largest_first(self):
    # Counts a 4, b 3, c 2, d 2, e 1, each to the lighter silo: a -> 0
    # (loads 4, 0), b -> 1 (4, 3), c -> 1 (4, 5), d -> 0 (6, 5), e -> 1.
    values = np.array(list('aaaabbbccdde'))
    silo_of = silos.assign(len(values), _config(num_silos=2, key='x'), 0,
                           values)
    expected = {'a': 0, 'b': 1, 'c': 1, 'd': 0, 'e': 1}
    self.assertEqual(silo_of.tolist(), [expected[v] for v in values])

  def test_too_few_values_or_users(self):
    with self.assertRaisesRegex(ValueError, r'has 2 distinct values .*'
                                r'--num_silos=3'):
      silos.assign(4, _config(num_silos=3, key='gender'), 0,
                   np.array(['M', 'F', 'M', 'M']))
    with self.assertRaisesRegex(ValueError, 'only 2 users'):
      silos.assign(2, _config(num_silos=3), 0)


class UserValuesTest(absltest.TestCase):

  def test_derived_fields(self):
    fields = {'zip': np.array(['55105', 'T8H1N', ' 0211', '']),
              'age': np.array(['17', '18', '56', '25-34'])}
    self.assertEqual(silos.user_values(fields, 'zip_region').tolist(),
                     ['5', 'T', '0', ''])
    self.assertEqual(silos.user_values(fields, 'age_band').tolist(),
                     ['Under 18', '18-24', '56+', '25-34'])
    self.assertEqual(silos.user_values(fields, 'age').tolist(),
                     ['17', '18', '56', '25-34'])
    # RecBole's ml-100k.user names it zip_code.
    self.assertEqual(silos.user_values({'zip_code': np.array(['10003'])},
                                       'zip_region').tolist(), ['1'])

  def test_unknown_field_names_the_fields(self):
    with self.assertRaisesRegex(
        ValueError, r'--silo_key=region: u.user has no such field \(it has '
        r'age, zip, zip_region, age_band; or random\)'):
      silos.user_values({'zip': np.array(['1']), 'age': np.array(['3'])},
                        'region', 'u.user')


class ConfigTest(absltest.TestCase):

  def test_bad_settings_are_one_line(self):
    for kw, message in (
        (dict(partition='store'), '--partition=store: expected one of user, '
         'silo'),
        (dict(num_silos=3), '--num_silos need --partition=silo'),
        (dict(partition='silo', num_silos=1), 'at least 2 silos'),
        (dict(partition='silo', num_silos=3, skew=-1.0), '--silo_skew=-1'),
        (dict(partition='silo', num_silos=3, key='zip', skew=0.5),
         '--silo_skew applies to --silo_key=random'),
        (dict(partition='silo', num_silos=3, weighting='users'),
         '--silo_weighting=users'),
        (dict(partition='silo', num_silos=3, dp_unit='store'),
         '--dp_unit=store')):
      with self.subTest(kw=kw):
        with self.assertRaisesRegex(ValueError, message):
          silos.SiloConfig(**kw)


if __name__ == '__main__':
  absltest.main()
