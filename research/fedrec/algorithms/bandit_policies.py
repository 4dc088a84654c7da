"""Bandit policies for online recommendation, registered by name.

A policy picks one of the candidates shown to a user from a model shared by
all users, which the server updates once per round from the sum of the
round's per-user statistics. That sum is what a federated deployment
releases: each sampled user computes its statistic on its device from its
own event (the shown item's context x and its reward r), and only the sum
(plain, or noised for user-level DP; `bandit_federated.py`) reaches the
server. Centralized and federated runs differ only in how the sum is
formed, so with plain sums they make the same choices.

Every statistic has L2 norm at most `SENSITIVITY` = sqrt(2) per event
(contexts of norm <= 1, rewards in [0, 1]): linear policies send
(vec(x x^T), r x), whose squared norm is |x|^4 + r^2 |x|^2 <= 2; popularity
sends one-hot shows and clicks. A user sends the sum over its slate of s
picks a round, of norm <= s sqrt(2) (`sensitivity`).

Policies (`POLICIES`; a new one is a class here or elsewhere plus
`register`):

* `random`: a uniform pick (no statistics);
* `popularity`: the candidate with the highest smoothed click rate so far,
  (clicks + 1) / (shows + 2);
* `egreedy`: with probability epsilon a uniform pick, else the highest
  ridge-regression estimate x^T theta, theta = A^-1 b;
* `linucb`: LinUCB (Li et al., WWW 2010; disjoint shared model),
  x^T theta + alpha sqrt(x^T A^-1 x);
* `lints`: linear Thompson sampling (Agrawal & Goyal, ICML 2013), the
  highest x^T theta~ with theta~ ~ N(theta, v^2 A^-1);
* `hybrid`: LinUCB plus a per-user residual model that stays on the user's
  device (`HybridLinUCB`).

Here A = ridge I + sum x x^T and b = sum r x. Under DP the noised sums are
post-processed as Shariff & Sheffet (NeurIPS 2018) do: A is symmetrized and
shifted by gamma I, gamma = s sqrt(2 d t) for t rounds of noise of
per-coordinate stddev s (about the spectral norm of the accumulated
symmetrized noise, so the shifted A stays above the noiseless one), and its
eigenvalues are floored at `ridge`. Ties break by a seeded random order of
the candidates.
"""

import dataclasses
import math
from typing import Callable

import numpy as np

SENSITIVITY = math.sqrt(2.0)


def sensitivity(slate_size: int) -> float:
  """The L2 bound of one user's statistic in a round of `slate_size` picks."""
  return slate_size * SENSITIVITY


@dataclasses.dataclass(frozen=True)
class PolicySettings:
  """Hyperparameters of the policies (flags of bandit.py)."""

  # Defaults chosen on real ML-100K under the user split and stream of
  # --seed=100 (tables report seeds 0-4), centralized, 500 rounds of 50
  # users (2026-12-06; docs/bandits.md).
  alpha: float = 0.3  # LinUCB's exploration weight.
  epsilon: float = 0.05  # epsilon-greedy's exploration rate.
  ts_scale: float = 0.5  # Thompson sampling's v.
  ridge: float = 1.0  # The ridge (A's prior) of the linear policies.

  def __post_init__(self):
    for name in ('alpha', 'ts_scale'):
      if getattr(self, name) < 0:
        raise ValueError(f'--{name}={getattr(self, name):g}: expected >= 0.')
    if not 0 <= self.epsilon <= 1:
      raise ValueError(f'--epsilon={self.epsilon:g}: expected in [0, 1].')
    if not self.ridge > 0:
      raise ValueError(f'--ridge={self.ridge:g}: expected > 0.')


class Policy:
  """A shared model, updated once per round from summed statistics."""

  name = ''
  label = ''

  def __init__(self, contexts: np.ndarray, settings: PolicySettings):
    self.contexts = contexts.astype(np.float64)
    self.settings = settings
    # Stddev of the DP noise added to each coordinate of a round's sum
    # (0: plain sums), and the rounds applied so far.
    self.noise_stddev = 0.0
    self.rounds = 0

  @property
  def statistics_size(self) -> int:
    """Floats in a user's statistic (0: the policy learns nothing)."""
    return 0

  def scores(self, items: np.ndarray, rng: np.random.Generator,
             user: int = -1):
    """Each candidate's score for `user` (the pick is the highest)."""
    raise NotImplementedError

  def choose(self, items: np.ndarray, rng: np.random.Generator,
             user: int = -1) -> int:
    """The index of the picked candidate; ties broken by a seeded order."""
    return self.choose_slate(items, rng, user, 1)[0]

  def choose_slate(self, items: np.ndarray, rng: np.random.Generator,
                   user: int, size: int) -> list[int]:
    """The indices of the `size` highest-scoring candidates, best first
    (all of them if fewer); ties broken by a seeded order."""
    scores = self.scores(items, rng, user)
    order = rng.permutation(len(items))
    ranked = order[np.argsort(-scores[order], kind='stable')]
    return [int(i) for i in ranked[:size]]

  def observe(self, user: int, item: int, reward: float) -> None:
    """The user's device learns from its own event (personalized policies:
    state that never leaves the device; the others keep none)."""
    del user, item, reward

  def user_statistic(self, item: int, reward: float) -> np.ndarray:
    """A user's contribution for one event (norm <= `SENSITIVITY`)."""
    raise NotImplementedError

  def apply(self, summed: np.ndarray) -> None:
    """Adds a round's summed statistics to the shared model."""
    raise NotImplementedError

  def state(self) -> dict:
    """The shared model's arrays (for the exactness tests and summaries)."""
    return {}

  def server_arrays(self) -> dict:
    """What the server holds, to save and `load` (numpy arrays)."""
    return {'noise_stddev': np.float64(self.noise_stddev),
            'rounds': np.int64(self.rounds)}

  def device_arrays(self) -> dict:
    """What the users' devices hold (saved apart from the server's)."""
    return {}

  def load(self, server: dict, devices: dict) -> None:
    """Restores `server_arrays` and `device_arrays` as saved."""
    del devices
    self.noise_stddev = float(server['noise_stddev'])
    self.rounds = int(server['rounds'])

  def explain(self, items: np.ndarray, user: int = -1) -> dict:
    """Named per-candidate columns behind the scores, for serving (the
    deterministic part; Thompson sampling's draw and epsilon-greedy's coin
    are left out)."""
    return {'score': self.scores(items, np.random.default_rng(0), user)}


class Random(Policy):
  name, label = 'random', 'random'

  def scores(self, items, rng, user=-1):
    return np.zeros(len(items))


class Popularity(Policy):
  name, label = 'popularity', 'popularity (online click rate)'

  def __init__(self, contexts, settings):
    super().__init__(contexts, settings)
    num_items = len(contexts)
    self.shows = np.zeros(num_items)
    self.clicks = np.zeros(num_items)

  @property
  def statistics_size(self):
    return 2 * len(self.contexts)

  def scores(self, items, rng, user=-1):
    return (self.clicks[items] + 1.0) / (self.shows[items] + 2.0)

  def user_statistic(self, item, reward):
    statistic = np.zeros(self.statistics_size)
    statistic[item] = 1.0
    statistic[len(self.contexts) + item] = reward
    return statistic

  def apply(self, summed):
    num_items = len(self.contexts)
    self.shows += summed[:num_items]
    self.clicks += summed[num_items:]

  def state(self):
    return {'shows': self.shows, 'clicks': self.clicks}

  def server_arrays(self):
    return dict(super().server_arrays(), **self.state())

  def load(self, server, devices):
    super().load(server, devices)
    self.shows, self.clicks = server['shows'], server['clicks']

  def explain(self, items, user=-1):
    return {'click_rate': self.scores(items, None, user),
            'shows': self.shows[items]}


class Linear(Policy):
  """A ridge regression of the reward on the context, shared by all."""

  def __init__(self, contexts, settings):
    super().__init__(contexts, settings)
    dim = contexts.shape[1]
    self.gram = np.zeros((dim, dim))  # sum x x^T (A = ridge I + gram).
    self.b = np.zeros(dim)
    self._refresh()

  @property
  def statistics_size(self):
    dim = self.contexts.shape[1]
    return dim * dim + dim

  def user_statistic(self, item, reward):
    x = self.contexts[item]
    return np.concatenate([np.outer(x, x).reshape(-1), reward * x])

  def apply(self, summed):
    dim = self.contexts.shape[1]
    self.gram += summed[:dim * dim].reshape(dim, dim)
    self.b += summed[dim * dim:]
    self.rounds += 1
    self._refresh()

  def _refresh(self):
    dim = self.contexts.shape[1]
    ridge = self.settings.ridge
    shift = self.noise_stddev * np.sqrt(2.0 * dim * self.rounds)
    a = (ridge + shift) * np.eye(dim) + (self.gram + self.gram.T) / 2.0
    values, vectors = np.linalg.eigh(a)
    # Plain sums keep A's eigenvalues >= ridge; DP noise may not.
    values = np.maximum(values, ridge)
    a_inverse = (vectors / values) @ vectors.T
    self.a_inverse = (a_inverse + a_inverse.T) / 2.0
    self.theta = self.a_inverse @ self.b
    # L L^T = A^-1 by Cholesky: unique, so it moves continuously with A (an
    # eigenvector basis does not where eigenvalues are equal, as at first).
    self._a_inverse_root = np.linalg.cholesky(self.a_inverse)

  def estimates(self, items):
    return self.contexts[items] @ self.theta

  def state(self):
    return {'a': self.settings.ridge * np.eye(len(self.b)) + self.gram,
            'b': self.b}

  def server_arrays(self):
    return dict(super().server_arrays(), gram=self.gram, b=self.b)

  def load(self, server, devices):
    super().load(server, devices)
    self.gram, self.b = server['gram'], server['b']
    self._refresh()

  def explain(self, items, user=-1):
    return {'estimate': self.estimates(items)}


class EpsilonGreedy(Linear):
  name, label = 'egreedy', 'epsilon-greedy (linear)'

  def scores(self, items, rng, user=-1):
    if rng.random() < self.settings.epsilon:
      return np.zeros(len(items))  # A uniform pick (ties broken randomly).
    return self.estimates(items)


class LinUCB(Linear):
  name, label = 'linucb', 'LinUCB'

  def bonus(self, items):
    """alpha sqrt(x^T A^-1 x): the exploration bonus of each candidate."""
    x = self.contexts[items]
    return self.settings.alpha * np.sqrt(np.maximum(
        np.einsum('ki,ij,kj->k', x, self.a_inverse, x), 0.0))

  def scores(self, items, rng, user=-1):
    return self.estimates(items) + self.bonus(items)

  def explain(self, items, user=-1):
    return {'estimate': self.estimates(items), 'bonus': self.bonus(items),
            'score': self.scores(items, None, user)}


class HybridLinUCB(LinUCB):
  """LinUCB's shared model plus a residual model kept on each user's device.

  The shared part is LinUCB's, federated with the same statistics (nothing
  else leaves the device). Each user's device keeps G_u = sum x x^T and
  b_u = sum r x of its own events and fits the residual of the current
  shared model on them, delta_u = (ridge I + G_u)^-1 (b_u - G_u theta); the
  score adds the residual and its own bonus:

    x^T (theta + delta_u) + alpha (sqrt(x^T A^-1 x) +
                                   sqrt(x^T (ridge I + G_u)^-1 x)).

  A personalized variant of the hybrid model of Li et al. (WWW 2010): the
  shared coefficients and each user's own, the latter never federated.
  """

  name, label = 'hybrid', 'LinUCB + per-user residual'

  def __init__(self, contexts, settings):
    super().__init__(contexts, settings)
    self.local = {}  # user -> (G_u, b_u): the device's state.

  def _local(self, user):
    """(G_u, b_u) of `user`'s device (zeros for a new user)."""
    dim = self.contexts.shape[1]
    return self.local.get(user, (np.zeros((dim, dim)), np.zeros(dim)))

  def observe(self, user, item, reward):
    gram, b = self._local(user)
    x = self.contexts[item]
    self.local[user] = (gram + np.outer(x, x), b + reward * x)

  def _residual(self, items, user):
    """(x^T delta_u, the local bonus) of each candidate for `user`."""
    gram, b = self._local(user)  # A new user: no residual and the widest
    # local bonus.
    a_user = self.settings.ridge * np.eye(len(b)) + gram
    delta = np.linalg.solve(a_user, b - gram @ self.theta)
    x = self.contexts[items]
    local_bonus = np.sqrt(np.maximum(np.einsum(
        'ki,ki->k', x, np.linalg.solve(a_user, x.T).T), 0.0))
    return x @ delta, self.settings.alpha * local_bonus

  def scores(self, items, rng, user=-1):
    residual, local_bonus = self._residual(items, user)
    return super().scores(items, rng, user) + residual + local_bonus

  def explain(self, items, user=-1):
    residual, local_bonus = self._residual(items, user)
    return {'estimate': self.estimates(items) + residual,
            'bonus': self.bonus(items) + local_bonus,
            'score': self.scores(items, None, user)}

  def device_arrays(self):
    users = np.array(sorted(self.local), np.int64)
    dim = self.contexts.shape[1]
    return {'users': users,
            'gram': np.array([self.local[u][0] for u in users]).reshape(
                -1, dim, dim),
            'b': np.array([self.local[u][1] for u in users]).reshape(-1, dim)}

  def load(self, server, devices):
    super().load(server, devices)
    self.local = {int(u): (g, b) for u, g, b in zip(
        devices['users'], devices['gram'], devices['b'])}


class LinearThompson(Linear):
  name, label = 'lints', 'linear Thompson sampling'

  def scores(self, items, rng, user=-1):
    sample = self.theta + self.settings.ts_scale * (
        self._a_inverse_root @ rng.standard_normal(len(self.theta)))
    return self.contexts[items] @ sample


class HindsightLinear(Policy):
  """The best fixed linear policy in hindsight: a reference, not a learner.

  Picks by x^T theta* with theta* the ridge fit of every reward of every
  bandit user (`fit`), which no online policy can know; its reward on the
  same stream is the benchmark of linear regret.
  """

  name, label = 'hindsight', 'best fixed linear policy in hindsight'

  def __init__(self, contexts, settings, theta):
    super().__init__(contexts, settings)
    self.theta = np.asarray(theta, np.float64)

  @classmethod
  def fit(cls, contexts, settings, items, rewards) -> 'HindsightLinear':
    """theta* = (ridge I + sum x x^T)^-1 sum r x over (items, rewards)."""
    x = np.asarray(contexts, np.float64)[items]
    a = settings.ridge * np.eye(x.shape[1]) + x.T @ x
    return cls(contexts, settings, np.linalg.solve(a, x.T @ rewards))

  def scores(self, items, rng, user=-1):
    return self.contexts[items] @ self.theta


POLICIES: dict[str, Callable[..., Policy]] = {}


def register(policy_class) -> None:
  """Makes `policy_class` (a `Policy`) available by its `name`."""
  if policy_class.name in POLICIES:
    raise ValueError(f'bandit policy {policy_class.name!r} is registered '
                     'twice.')
  POLICIES[policy_class.name] = policy_class


for _policy in (Random, Popularity, EpsilonGreedy, LinUCB, LinearThompson,
                HybridLinUCB):
  register(_policy)


def create(names, contexts: np.ndarray,
           settings: PolicySettings) -> list[Policy]:
  """Fresh policies by name; an unknown name is one line."""
  unknown = [n for n in names if n not in POLICIES]
  if unknown:
    raise ValueError(f'--policies: unknown {", ".join(unknown)}; expected '
                     f'some of {", ".join(POLICIES)}.')
  return [POLICIES[n](contexts, settings) for n in names]
