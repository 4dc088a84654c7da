"""A new user known only by demographics: an attribute-to-factor map.

A user with no rating has nothing to reconstruct a vector from. Its
demographics (age band, gender, occupation: data/side_info.py
`DemographicEncoder`) can stand in, through a linear map from a user's
attributes to its vector and bias, fitted to the users who have both
(Gantner et al., "Learning attribute-to-feature mappings for cold-start
recommendations", ICDM 2010): ridge regression of [p_u, b_u] on [x_u, 1],

    W = (sum_u z_u z_u^T + l2 * I')^-1 sum_u z_u [p_u, b_u]^T,  z_u = [x_u, 1]

(I' leaves the intercept unpenalized). Both sums are sums over users of
terms each user's device can compute from its own attributes and its own
(reconstructed) vector, so under Federated Reconstruction the attributes
and the vectors stay on the devices: the server needs the two sums only, a
federated sum like any other aggregate. Training releases them once, at its
end, over the training users (`UserPrior`, in the export's user_prior.npz);
recommend.py fits the map from them and needs no corpus for it.

Their intercept row and corner are the sum of the users' parts and their
number, so the same release gives the mean training user (`mean_row`), what
a new user with no rating and no attribute gets. A corpus without a user
file releases that corner alone.

The map gives a new user the vector [x, 1] W (its bias the last column),
scored by the trained item model like any user's. A model with other user
parts (NeuMF: a GMF and an MLP vector) maps to all of them side by side.
"""

import dataclasses
from typing import Optional

import numpy as np

from research.fedrec.data import side_info

# The ridge penalty on the attribute columns (one-hot: a group's mean is
# shrunk towards the intercept by l2 / (its users + l2)).
DEFAULT_L2 = 1.0


@dataclasses.dataclass(frozen=True)
class AttributeMap:
  """A fitted attribute-to-factor map."""

  encoder: side_info.DemographicEncoder
  # [columns + 1, parts]: rows of x then the intercept; a column per part
  # of the user (MF: its vector's coordinates, then its bias).
  weights: np.ndarray
  num_users: int  # How many users it was fitted on.

  def row(self, attributes: dict[str, str]) -> np.ndarray:
    """The parts of a new user with these attributes.

    Raises:
      ValueError: an unknown field or value (one line).
    """
    return self.rows(self.encoder.encode_one(attributes)[None])[0]

  def rows(self, features: np.ndarray) -> np.ndarray:
    """[N, parts] of users with one-hot rows `features` [N, columns]."""
    z = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    return z @ self.weights


# The user prior's noise stream: np.random.default_rng([seed, _PRIOR_STREAM]).
_PRIOR_STREAM = 0x5052494F52


def sensitivity(num_fields: int, clip: float) -> float:
  """L2 sensitivity of the release to adding or removing one user.

  A user adds z z^T (its upper triangle and diagonal are released) and
  z t^T, with z = [x, 1] holding at most k = num_fields + 1 ones (one per
  field, an unknown value none) and ||t|| <= clip: ||upper(z z^T)||^2 =
  k (k + 1) / 2 and ||z t^T||^2 = k ||t||^2.
  """
  k = num_fields + 1
  return float(np.sqrt(k * (k + 1) / 2 + k * clip**2))


@dataclasses.dataclass(frozen=True)
class UserPrior:
  """What training releases about its users: the two sums of the map.

  `gram` [columns + 1, columns + 1] and `cross` [columns + 1, parts] as
  `sums` gives them over the training users (the last row and column: the
  intercept; `columns` 0 where the corpus has no user file, `encoder`
  None). Under DP each user's parts are clipped to L2 norm `clip` first,
  and Gaussian noise of standard deviation `noise_std` is added to every
  entry of `cross` and of `gram`'s upper triangle (mirrored below).
  """

  gram: np.ndarray
  cross: np.ndarray
  encoder: Optional[side_info.DemographicEncoder]
  noise_std: float = 0.0
  clip: Optional[float] = None

  @classmethod
  def of(cls, encoder: Optional[side_info.DemographicEncoder],
         features: Optional[np.ndarray], targets: np.ndarray,
         clip: Optional[float] = None,
         noise_multiplier: Optional[float] = None,
         seed: int = 0) -> 'UserPrior':
    """The release over users with one-hot rows `features` [N, columns]
    (None: no user file) and parts `targets` [N, parts] (float64 sums).

    With `noise_multiplier` (needs `clip`): the Gaussian mechanism of that
    multiplier x `sensitivity`, its noise drawn from
    np.random.default_rng([seed, _PRIOR_STREAM]): first `gram`'s upper
    triangle row by row, then `cross` row by row.
    """
    targets = np.asarray(targets, np.float64)
    if clip is not None:
      norms = np.linalg.norm(targets, axis=1, keepdims=True)
      targets = targets * np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    if features is None:
      features = np.zeros((len(targets), 0))
    gram, cross = sums(np.asarray(features, np.float64), targets)
    if noise_multiplier is None:
      return cls(gram, cross, encoder, clip=clip)
    if clip is None:
      raise ValueError('A noised user prior needs a clip.')
    std = noise_multiplier * sensitivity(
        len(encoder.fields) if encoder else 0, clip)
    rng = np.random.default_rng([seed, _PRIOR_STREAM])
    upper = np.triu_indices(len(gram))
    noise = np.zeros_like(gram)
    noise[upper] = rng.normal(0.0, std, len(upper[0]))
    gram = gram + noise + np.triu(noise, 1).T
    cross = cross + rng.normal(0.0, std, cross.shape)
    return cls(gram, cross, encoder, std, clip)

  @property
  def num_users(self) -> int:
    """How many users contributed (under DP, the noised count)."""
    return int(max(round(float(self.gram[-1, -1])), 0))

  def mean_row(self) -> np.ndarray:
    """[parts]: the mean of the users' parts (the intercept's sums)."""
    return self.cross[-1] / max(float(self.gram[-1, -1]), 1.0)

  def attribute_map(self, l2: float = DEFAULT_L2) -> AttributeMap:
    """The ridge map fitted from the sums (module docstring).

    A noised release (post-processing only, no privacy spent): gram is
    projected onto the positive semi-definite matrices (its negative
    eigenvalues set to 0), and the attribute columns' penalty grows by
    2 x noise_std x sqrt(columns + 1), about the spectral norm of the
    symmetric Gaussian noise matrix, so that the noise cannot make the
    solve ill-conditioned (sufficient-statistics perturbation with a
    noise-scaled ridge, as AdaSSP: Wang, "Revisiting differentially
    private linear regression", NeurIPS 2018). A group's mean is then
    shrunk towards the mean user by that many users' weight.

    Raises:
      ValueError: the release has no attribute (a corpus without a user
        file), or no user.
    """
    if not self.num_users:
      raise ValueError('No user with both demographics and a vector to fit '
                       'the attribute map on.')
    if self.encoder is None:
      raise ValueError('the corpus the model was trained on has no user '
                       'demographics (ml-100k, ml-1m and atomic corpora with '
                       'a .user file have them).')
    gram = self.gram
    if self.noise_std:
      values, vectors = np.linalg.eigh(gram)
      gram = (vectors * np.maximum(values, 0.0)) @ vectors.T
      l2 = l2 + 2.0 * self.noise_std * np.sqrt(len(gram))
    penalty = np.full(gram.shape[0], float(l2))
    penalty[-1] = 0.0  # The intercept is not shrunk.
    weights = np.linalg.solve(gram + np.diag(penalty), self.cross)
    return AttributeMap(self.encoder, weights, self.num_users)

  def arrays(self) -> dict[str, np.ndarray]:
    """The release as named arrays (the export's user_prior.npz)."""
    encoder = self.encoder
    return dict(
        gram=self.gram, cross=self.cross,
        noise_std=np.float64(self.noise_std),
        clip=np.float64(np.nan if self.clip is None else self.clip),
        fields=np.array(encoder.fields if encoder else [], dtype=str),
        columns=np.array(encoder.names if encoder else [], dtype=str))

  @classmethod
  def from_arrays(cls, arrays) -> 'UserPrior':
    """The inverse of `arrays`."""
    fields = tuple(arrays['fields'].tolist())
    encoder = None
    if fields:
      pairs = [name.partition('=')[::2] for name in arrays['columns'].tolist()]
      encoder = side_info.DemographicEncoder(fields, tuple(
          tuple(v for f, v in pairs if f == field) for field in fields))
    clip = float(arrays['clip'])
    return cls(np.asarray(arrays['gram'], np.float64),
               np.asarray(arrays['cross'], np.float64), encoder,
               float(arrays['noise_std']), None if np.isnan(clip) else clip)


def sums(features: np.ndarray,
         targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(sum_u z_u z_u^T, sum_u z_u t_u^T) over the rows given: what the
  devices' contributions add up to."""
  z = np.concatenate([features, np.ones((len(features), 1))], axis=1)
  return z.T @ z, z.T @ targets


def fit(encoder: side_info.DemographicEncoder, features: np.ndarray,
        targets: np.ndarray, l2: float = DEFAULT_L2) -> AttributeMap:
  """The map of users with rows `features` [N, columns] to their parts
  `targets` [N, parts] (MF: [p_u, b_u]; float64 solve).

  Raises:
    ValueError: no user to fit on.
  """
  return UserPrior.of(encoder, features, targets).attribute_map(l2)


def parse(text: str) -> dict[str, str]:
  """'age=25,gender=F,occupation=student' -> {field: value}.

  Raises:
    ValueError: a part is not field=value, or a field is given twice.
  """
  attributes = {}
  for part in text.split(','):
    if not part.strip():
      continue
    field, sep, value = part.partition('=')
    field = field.strip()
    if not sep or not field or not value.strip():
      raise ValueError(f'{part.strip()!r} is not field=value (e.g. '
                       'age=25,gender=F,occupation=student).')
    if field in attributes:
      raise ValueError(f'field {field} is given twice.')
    attributes[field] = value.strip()
  if not attributes:
    raise ValueError('no field=value given (e.g. age=25,gender=F,'
                     'occupation=student).')
  return attributes
