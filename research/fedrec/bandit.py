r"""Federated contextual bandits for online recommendation: regret of policies.

  # Every policy on the built-in synthetic corpus, centralized:
  python -m research.fedrec.bandit
  # Federated (statistics summed by a TFF aggregator) with user-level DP at
  # epsilon 8, on real MovieLens-100K:
  python -m research.fedrec.bandit --dataset=ml-100k --data_dir=data/ml-100k \
      --execution=federated --target_epsilon=8 --experiment_name=ml100k_eps8

Each round `--users_per_round` users (of the bandit users) are each shown
`--num_candidates` items they rated; a policy picks one, the reward is 1 if
the rating is >= `--reward_threshold`. Item contexts come from the other
users' likes (`--context_user_fraction`), never from the bandit users, or
from item side information (`--item_contexts=genres,year`).
Outputs in <root_output_dir>/<experiment_name>/: metrics.csv (per round and
policy), cumulative_regret.png, summary.json. See docs/bandits.md.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags

from research.fedrec.utils import cli

_DATASET = flags.DEFINE_string(
    'dataset', 'synthetic', 'Corpus, as train.py: synthetic (built in), a '
    'MovieLens name, movielens, csv or atomic.')
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                'Folder holding the corpus files.')
_DATA_SEED = flags.DEFINE_integer('data_seed', 0,
                                  'Seed of the synthetic corpus.')
_MIN_RATINGS = flags.DEFINE_integer(
    'min_ratings_per_user', 1, 'Drop users with fewer ratings.', lower_bound=1)
_POLICIES = flags.DEFINE_list(
    'policies', ['random', 'popularity', 'egreedy', 'linucb', 'lints',
                 'hybrid'],
    'Bandit policies to run on the same user stream.')
_EXECUTION = flags.DEFINE_enum(
    'execution', 'centralized', ['centralized', 'federated'],
    'centralized: one learner sums every event; federated: the sampled users '
    'send their statistics through a TFF aggregator.')
_ROUNDS = flags.DEFINE_integer('rounds', 200, 'Rounds.', lower_bound=1)
_USERS_PER_ROUND = flags.DEFINE_integer('users_per_round', 50,
                                        'Users sampled per round.')
_NUM_CANDIDATES = flags.DEFINE_integer(
    'num_candidates', 10, 'Items shown to a user per round (from those it '
    'rated and was not yet given).')
_SLATE_SIZE = flags.DEFINE_integer(
    'slate_size', 1, 'Items given to a user per round (a slate of its '
    'candidates); each is an event with its own reward.')
_THRESHOLD = flags.DEFINE_float('reward_threshold', 4.0,
                                'Reward 1 if the rating is at least this.')
_CONTEXT_DIM = flags.DEFINE_integer(
    'context_dim', 8, 'Item context dimension (features and a bias).')
_CONTEXT_FRACTION = flags.DEFINE_float(
    'context_user_fraction', 0.5, 'Share of the users (by seed) whose likes '
    'give the item contexts; the others are bandit users.')
_ITEM_CONTEXTS = flags.DEFINE_list(
    'item_contexts', ['likes'], 'What item contexts are made of: likes (the '
    'context users\' likes, a truncated SVD) or item side information among '
    'genres, year, title_text, genome (their principal components; '
    'MovieLens item files, RecBole .item, the synthetic corpus; genome: '
    'MovieLens ml-20m and later).')
_ALPHA = flags.DEFINE_float('alpha', 0.3, 'LinUCB: exploration weight.')
_EPSILON = flags.DEFINE_float('epsilon', 0.05,
                              'epsilon-greedy: exploration rate.')
_TS_SCALE = flags.DEFINE_float('ts_scale', 0.5,
                               'Thompson sampling: posterior scale v.')
_RIDGE = flags.DEFINE_float('ridge', 1.0, 'Ridge of the linear policies.')
_NOISE = flags.DEFINE_float(
    'dp_noise_multiplier', None, 'Federated: user-level DP with this noise '
    'multiplier (noise stddev z x sqrt(2)).')
_TARGET_EPSILON = flags.DEFINE_float(
    'target_epsilon', None, 'Federated: user-level DP, the noise calibrated '
    'to reach this epsilon after --rounds.')
_DELTA = flags.DEFINE_float('delta', None,
                            'delta (default 1 / bandit users^1.1).')
_SECURE = flags.DEFINE_bool(
    'secure_aggregation', False, 'Federated: sum the users\' statistics with '
    'TFF\'s secure sum (run in TFF\'s test context, as train.py does).')
_REPLAY = flags.DEFINE_bool(
    'replay', False, 'Also estimate each policy\'s click-through rate by '
    'replay (Li et al., WSDM 2011) on events logged by a uniform random '
    'policy on the same user stream.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of users, candidates, '
                             'contexts and choices.')
_ROOT_OUTPUT_DIR = flags.DEFINE_string('root_output_dir', 'runs',
                                       'Root of all outputs.')
_EXPERIMENT_NAME = flags.DEFINE_string(
    'experiment_name', 'bandits', 'Outputs go to root_output_dir/<this>/.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')


def config_from_flags():
  """The run's `BanditConfig` (ValueError on bad input)."""
  from research.fedrec.algorithms import bandit_policies  # pylint: disable=g-import-not-at-top
  from research.fedrec.data import bandit_env  # pylint: disable=g-import-not-at-top
  from research.fedrec.data import corpus  # pylint: disable=g-import-not-at-top
  from research.fedrec.data import synthetic  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import bandit_run  # pylint: disable=g-import-not-at-top
  if _DATASET.value not in corpus.DATASET_NAMES:
    raise ValueError(f'--dataset={_DATASET.value}: expected one of '
                     f'{", ".join(corpus.DATASET_NAMES)}.')
  return bandit_run.BanditConfig(
      output_dir=os.path.join(_ROOT_OUTPUT_DIR.value, _EXPERIMENT_NAME.value),
      data=corpus.DataConfig(
          dataset=_DATASET.value, data_dir=_DATA_DIR.value,
          min_ratings_per_user=_MIN_RATINGS.value,
          synthetic_config=synthetic.SyntheticConfig(seed=_DATA_SEED.value)),
      environment=bandit_env.EnvironmentConfig(
          num_candidates=_NUM_CANDIDATES.value,
          slate_size=_SLATE_SIZE.value,
          users_per_round=_USERS_PER_ROUND.value,
          reward_threshold=_THRESHOLD.value, context_dim=_CONTEXT_DIM.value,
          context_user_fraction=_CONTEXT_FRACTION.value,
          item_contexts=tuple(_ITEM_CONTEXTS.value), seed=_SEED.value),
      policy_settings=bandit_policies.PolicySettings(
          alpha=_ALPHA.value, epsilon=_EPSILON.value,
          ts_scale=_TS_SCALE.value, ridge=_RIDGE.value),
      policies=tuple(_POLICIES.value), rounds=_ROUNDS.value,
      execution=_EXECUTION.value, noise_multiplier=_NOISE.value,
      target_epsilon=_TARGET_EPSILON.value, delta=_DELTA.value,
      replay=_REPLAY.value, secure_aggregation=_SECURE.value)


def config_from_args(args):
  """The `BanditConfig` that `bandit.py ARGS` would run, built in-process.

  Resets this binary's flags to their defaults, then parses `args`.

  Raises:
    ValueError: an unknown flag or a bad value (one line).
  """
  cli.reparse(sys.modules[__name__], 'bandit.py', args)
  return config_from_flags()


def main(argv):
  del argv  # cli.run refuses positional arguments.
  try:
    config = config_from_flags()
    from research.fedrec.training import bandit_run  # pylint: disable=g-import-not-at-top
    from research.fedrec.training import runtime  # pylint: disable=g-import-not-at-top
    bandit_run.run(config, progress=_PROGRESS.value,
                   runtime_factory=runtime.local_runtime)
  except cli.user_errors() as e:
    cli.fail('bandit.py', e)


if __name__ == '__main__':
  cli.run(main, 'bandit.py')
