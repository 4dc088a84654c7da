"""Tests of the attribute-to-vector map and the demographic encoder."""

from absl.testing import absltest
import numpy as np

from research.fedrec.data import side_info
from research.fedrec.inference import demographics

# Five users of u.user's form: ages 7, 24, 24, 53, 61.
_INFO = side_info.UserInfo(
    np.arange(1, 6), {
        'age': np.array(['7', '24', '24', '53', '61']),
        'gender': np.array(['M', 'F', 'M', 'F', '']),
        'occupation': np.array(['student', 'student', 'writer', 'other',
                                'retired']),
        'zip': np.array(['1', '2', '3', '4', '5'])}, 'u.user')


class DemographicEncoderTest(absltest.TestCase):

  def test_age_bands_and_one_hot_columns(self):
    self.assertEqual([side_info.age_band(a) for a in
                      ('7', '18', '24', '25', '49', '50', '56', '25-34', '')],
                     ['Under 18', '18-24', '18-24', '25-34', '45-49', '50-55',
                      '56+', '25-34', ''])
    encoder = side_info.DemographicEncoder.fit(_INFO)
    self.assertEqual(encoder.names, [
        'age=18-24', 'age=50-55', 'age=56+', 'age=Under 18', 'gender=F',
        'gender=M', 'occupation=other', 'occupation=retired',
        'occupation=student', 'occupation=writer'])
    rows = encoder.encode(_INFO)
    np.testing.assert_array_equal(rows[4],  # 61, unknown gender, retired.
                                  [0, 0, 1, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(rows.sum(axis=1), [3, 3, 3, 3, 2])
    np.testing.assert_array_equal(
        encoder.encode_one({'age': '22', 'occupation': 'writer'}),
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 1])

  def test_unknown_fields_and_values_are_one_line(self):
    encoder = side_info.DemographicEncoder.fit(_INFO)
    with self.assertRaisesRegex(ValueError, r"^gender 'X' is not one of the "
                                r"training users': F, M\.$"):
      encoder.encode_one({'gender': 'X'})
    with self.assertRaisesRegex(ValueError, r'^no user field zip \(known: '
                                r'age, gender, occupation\)\.$'):
      encoder.encode_one({'zip': '1'})
    info = side_info.UserInfo(_INFO.ids, {'age': _INFO.fields['age']}, 'x.user')
    with self.assertRaisesRegex(side_info.DataError, r'^x\.user: no user '
                                r'field gender, occupation \(it has age\)\.$'):
      side_info.DemographicEncoder.fit(info)


class AttributeMapTest(absltest.TestCase):

  def test_one_group_gets_the_mean_vector(self):
    # Everyone shares the one attribute value: the penalty keeps its column
    # at 0, so the intercept is the users' mean (whatever l2).
    info = side_info.UserInfo(np.arange(3), {
        'age': np.array(['30'] * 3), 'gender': np.array(['F'] * 3),
        'occupation': np.array(['x'] * 3)}, 't')
    encoder = side_info.DemographicEncoder.fit(info)
    targets = np.array([[1.0, 2.0, 0.5], [3.0, -2.0, 1.0], [5.0, 3.0, 3.0]])
    fitted = demographics.fit(encoder, encoder.encode(info), targets, l2=2.0)
    np.testing.assert_allclose(fitted.row({'gender': 'F'}), [3.0, 1.0, 1.5],
                               rtol=1e-6)
    self.assertEqual(fitted.num_users, 3)

  def test_two_groups_closed_form(self):
    # One binary column g plus the intercept c, l2 = 2 on g only; y = 1, 3
    # for the group's users and 10 for the other: minimize
    # (g+c-1)^2 + (g+c-3)^2 + (c-10)^2 + 2 g^2. Setting the derivatives to
    # zero: 2g + 3c = 14 and 2g + c = 2, so c = 6, g = -2.
    info = side_info.UserInfo(np.arange(3), {
        'age': np.array(['30', '30', '30']),
        'gender': np.array(['F', 'F', '']),
        'occupation': np.array(['x', 'x', 'x'])}, 't')
    encoder = side_info.DemographicEncoder.fit(info, ('gender',))
    fitted = demographics.fit(encoder, encoder.encode(info),
                              np.array([[1.0], [3.0], [10.0]]), l2=2.0)
    np.testing.assert_allclose(fitted.weights[:, 0], [-2.0, 6.0], rtol=1e-9)
    np.testing.assert_allclose(fitted.row({'gender': 'F'}), [4.0], rtol=1e-9)
    np.testing.assert_allclose(fitted.row({}), [6.0], rtol=1e-9)

  def test_the_prior_gives_the_mean_user_and_the_map(self):
    info = side_info.UserInfo(np.arange(4), {
        'age': np.array(['30', '19', '30', '44']),
        'gender': np.array(['F', 'M', '', 'M']),
        'occupation': np.array(['x', 'y', 'x', 'x'])}, 't')
    encoder = side_info.DemographicEncoder.fit(info)
    targets = np.array([[1.0, 2.0], [3.0, -1.0], [2.0, 0.0], [6.0, 3.0]])
    prior = demographics.UserPrior.of(encoder, encoder.encode(info), targets)
    np.testing.assert_array_equal(prior.mean_row(), [3.0, 1.0])
    self.assertEqual(prior.num_users, 4)
    # The map from the sums is the ridge solution of the rows themselves.
    rows = np.concatenate([encoder.encode(info), np.ones((4, 1))], axis=1)
    penalty = np.diag([0.5] * (rows.shape[1] - 1) + [0.0])
    np.testing.assert_allclose(
        prior.attribute_map(0.5).weights,
        np.linalg.solve(rows.T @ rows + penalty, rows.T @ targets), rtol=1e-9)
    # Without a user file: the mean user only.
    bare = demographics.UserPrior.of(None, None, targets)
    self.assertEqual(bare.gram.tolist(), [[4.0]])
    np.testing.assert_array_equal(bare.mean_row(), [3.0, 1.0])
    with self.assertRaisesRegex(ValueError, r'^the corpus the model was '
                                r'trained on has no user demographics'):
      bare.attribute_map()

  def test_the_noised_prior_is_the_gaussian_mechanism(self):
    # Sensitivity by hand: 3 fields, z with 4 ones: upper(z z^T) has
    # 4 * 5 / 2 = 10 ones, ||z t^T||^2 = 4 * 0.5^2 = 1.
    self.assertAlmostEqual(demographics.sensitivity(3, 0.5), np.sqrt(11.0))
    self.assertAlmostEqual(demographics.sensitivity(0, 2.0), np.sqrt(5.0))
    encoder = side_info.DemographicEncoder.fit(_INFO)
    features = encoder.encode(_INFO)
    targets = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, -2.0], [1.0, 0.0],
                        [0.0, 0.0]])
    prior = demographics.UserPrior.of(encoder, features, targets, clip=1.0,
                                      noise_multiplier=0.7, seed=5)
    # Reference: clip each row to norm 1, sum, then the seeded noise in the
    # documented order (gram's upper triangle row by row, then cross).
    clipped = np.array([[0.6, 0.8], [0.3, 0.4], [0.0, -1.0], [1.0, 0.0],
                        [0.0, 0.0]])
    z = np.concatenate([features, np.ones((5, 1))], axis=1)
    std = 0.7 * np.sqrt(4 * 5 / 2 + 4 * 1.0)
    rng = np.random.default_rng([5, 0x5052494F52])
    n = z.shape[1]
    noise = np.zeros((n, n))
    upper = rng.normal(0.0, std, n * (n + 1) // 2)
    k = 0
    for i in range(n):
      for j in range(i, n):
        noise[i, j] = noise[j, i] = upper[k]
        k += 1
    np.testing.assert_allclose(prior.gram, z.T @ z + noise, rtol=1e-12)
    np.testing.assert_allclose(
        prior.cross, z.T @ clipped + rng.normal(0.0, std, (n, 2)),
        rtol=1e-12)
    self.assertAlmostEqual(prior.noise_std, std)
    self.assertEqual(prior.clip, 1.0)
    # The same seed, the same release; the map solves on a PSD projection
    # with the penalty grown by 2 std sqrt(columns + 1).
    again = demographics.UserPrior.of(encoder, features, targets, clip=1.0,
                                      noise_multiplier=0.7, seed=5)
    np.testing.assert_array_equal(again.gram, prior.gram)
    values, vectors = np.linalg.eigh(prior.gram)
    psd = (vectors * np.maximum(values, 0)) @ vectors.T
    np.testing.assert_allclose(
        prior.attribute_map(2.0).weights,
        np.linalg.solve(psd + np.diag([2.0 + 2 * std * np.sqrt(n)] * (n - 1)
                                      + [0.0]), prior.cross),
        rtol=1e-9)
    with self.assertRaisesRegex(ValueError, 'needs a clip'):
      demographics.UserPrior.of(encoder, features, targets,
                                noise_multiplier=1.0)

  def test_parse(self):
    self.assertEqual(demographics.parse(' age=25, gender=F ,'),
                     {'age': '25', 'gender': 'F'})
    for text, message in (('age', r"^'age' is not field=value"),
                          ('age=1,age=2', r'^field age is given twice\.$'),
                          (' , ', r'^no field=value given'),
                          ('=3', r"^'=3' is not field=value")):
      with self.assertRaisesRegex(ValueError, message):
        demographics.parse(text)
    with self.assertRaisesRegex(ValueError, 'No user with both'):
      demographics.fit(None, np.zeros((0, 2)), np.zeros((0, 3)))


if __name__ == '__main__':
  absltest.main()
