r"""Trains a federated recommender and writes metrics, checkpoints and plots.

The main job: Federated Reconstruction of a matrix-factorization model on the
built-in synthetic corpus, beside the centralized baseline and the corpus's
noise floor:

  python -m research.fedrec.train --experiment_name=demo

On MovieLens-1M (see data/README.md for getting it), FedAvg instead:

  python -m research.fedrec.train --dataset=ml-1m --data_dir=data/ml-1m \
      --algorithm=fedavg --experiment_name=ml1m_fedavg

A run killed mid-way resumes from its last checkpoint when started again with
the same flags. Outputs go to <root_output_dir>/<experiment_name>/.
"""

import os
import sys

# TensorFlow's C++ start-up chatter (including spurious "Unable to register
# cuDNN factory" errors on CPU-only machines) would bury our messages; set
# TF_CPP_MIN_LOG_LEVEL yourself to see it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags
from absl import logging

from research.fedrec import defaults
from research.fedrec.utils import cli

from research.fedrec.algorithms import optimizers
from research.fedrec.algorithms import registry
from research.fedrec.algorithms import sampling
from research.fedrec.data import corpus
from research.fedrec.data import ratings
from research.fedrec.data import silos
from research.fedrec.data import splits
from research.fedrec.data import synthetic
from research.fedrec.models import registry as models_registry
from research.fedrec.privacy import settings as privacy_settings

_OPTIMIZERS = [o.value for o in optimizers.OptimizerName]

# Data.
_DATASET = flags.DEFINE_enum(
    'dataset', corpus.SYNTHETIC, list(corpus.DATASET_NAMES),
    'Corpus: "synthetic" (built in, generated from --data_seed), a MovieLens '
    'name (its files in --data_dir), "movielens" (detect which from the files),'
    ' "csv" (your own user,item,rating[,timestamp] file) or "atomic" (a RecBole'
    ' dataset folder: NAME.inter, typed header).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Folder holding the corpus files (for csv: the file or '
    'a folder with ratings.csv; for atomic: the folder of NAME.inter). Unused '
    'for synthetic.')
_MIN_RATINGS = flags.DEFINE_integer(
    'min_ratings_per_user', 1, 'Drop users with fewer ratings (1 keeps all).',
    lower_bound=1)
_MAX_USERS = flags.DEFINE_integer(
    'max_users', None, 'Keep only the users with the N smallest ids (unset: '
    'all).', lower_bound=1)
_RATING_SCALE = flags.DEFINE_list(
    'rating_scale', ['1', '5', '1'], 'min,max,step of the ratings in a csv or '
    'atomic corpus (MovieLens corpora know their own scale).')
_DUPLICATES = flags.DEFINE_enum_class(
    'duplicates', ratings.DuplicatePolicy.LATEST, ratings.DuplicatePolicy,
    'Repeated (user, item) pairs in the corpus: keep the latest, or error.')
_SYNTHETIC_USERS = flags.DEFINE_integer(
    'synthetic_users', synthetic.SyntheticConfig.num_users,
    'Users of the synthetic corpus (default: as ML-100K).', lower_bound=1)
_SYNTHETIC_ITEMS = flags.DEFINE_integer(
    'synthetic_items', synthetic.SyntheticConfig.num_items,
    'Items of the synthetic corpus.', lower_bound=2)
_SYNTHETIC_RATINGS = flags.DEFINE_integer(
    'synthetic_ratings', synthetic.SyntheticConfig.num_ratings,
    'Ratings of the synthetic corpus.', lower_bound=1)
_SYNTHETIC_MIN = flags.DEFINE_integer(
    'synthetic_min_ratings', synthetic.SyntheticConfig.min_ratings_per_user,
    'Fewest ratings a synthetic user has.', lower_bound=1)
_SYNTHETIC_RANK = flags.DEFINE_integer(
    'synthetic_rank', synthetic.SyntheticConfig.rank,
    'Rank of the planted preferences.', lower_bound=1)
_SYNTHETIC_NOISE = flags.DEFINE_float(
    'synthetic_noise', synthetic.SyntheticConfig.noise_stddev,
    'Standard deviation of the rating noise before rounding.', lower_bound=0.0)
_SYNTHETIC_AFFINITY = flags.DEFINE_float(
    'synthetic_selection_affinity', None, 'How much a synthetic user\'s '
    'choice of items follows their planted preferences (standard deviations '
    'of log-odds; 0: popularity only). Default '
    f'{defaults.by_feedback("synthetic_selection_affinity")}.',
    lower_bound=0.0)
_SYNTHETIC_MAX = flags.DEFINE_integer(
    'synthetic_max_ratings', None, 'Most ratings a synthetic user has '
    '(implicit: every user keeps items never interacted with, for sampled '
    f'ranking). Default {defaults.by_feedback("synthetic_max_ratings")}.',
    lower_bound=1)
_DATA_SEED = flags.DEFINE_integer('data_seed', 0,
                                  'Seed of the synthetic corpus.')
_FEEDBACK = flags.DEFINE_enum_class(
    'feedback', corpus.Feedback.EXPLICIT, corpus.Feedback,
    'explicit: predict ratings (MSE). implicit: every rating is an interaction'
    ' (a positive); models rank items, trained on positives and sampled '
    'negatives (BCE), evaluated by top-K ranking.')
_IMPLICIT_THRESHOLD = flags.DEFINE_float(
    'implicit_threshold', None, 'Implicit feedback: keep only ratings >= this '
    'as interactions (default: every rating).')

# Split.
_SPLIT = flags.DEFINE_enum_class(
    'split', splits.SplitKind.HOLDOUT, splits.SplitKind,
    'holdout: hold out part of every user\'s ratings; user_disjoint: val/test '
    'users never train (cold start); leave_one_out: latest rating is test; '
    'item_cold_start: --cold_item_fraction of the items never train (their '
    'ratings are scored; warm and cold items reported apart).')
_SPLIT_ORDER = flags.DEFINE_enum_class(
    'split_order', splits.SplitOrder.RANDOM, splits.SplitOrder,
    'Which ratings are held out: random ones or the latest (temporal).')
_VAL_FRACTION = flags.DEFINE_float(
    'val_fraction', 0.1, 'Share of each user\'s ratings (holdout) or of users '
    '(user_disjoint) for validation.')
_TEST_FRACTION = flags.DEFINE_float('test_fraction', 0.1,
                                    'Share for testing, as --val_fraction.')
_SUPPORT_FRACTION = flags.DEFINE_float(
    'support_fraction', 0.5, 'user_disjoint: share of an evaluated user\'s '
    'ratings used to reconstruct the embedding; the rest are scored.')
_COLD_ITEM_FRACTION = flags.DEFINE_float(
    'cold_item_fraction', 0.2, 'item_cold_start: share of the items held '
    'out of training (by --split_seed), split between validation and test '
    'as --val_fraction to --test_fraction.')
_SPLIT_SEED = flags.DEFINE_integer('split_seed', 0, 'Seed of the split.')

# Algorithm and model.
_ALGORITHM = flags.DEFINE_enum('algorithm', 'fedrecon', registry.names(),
                               registry.help_text())
# Each method's own settings (algorithms/registry.py), unset: its default.
_METHOD_SETTINGS = {
    name: flags.DEFINE_bool(
        name, None, f'{setting.help} Default '
        f'{str(setting.default).lower()}; only with --algorithm={method}.')
    if isinstance(setting.default, bool) else flags.DEFINE_float(
        name, None, f'{setting.help} Default {setting.default:g}; only with '
        f'--algorithm={method}.', lower_bound=setting.lower_bound)
    for name, (method, setting) in registry.all_settings().items()}
_MODEL = flags.DEFINE_enum('model', 'mf', models_registry.names(),
                           models_registry.help_text())
_MLP_LAYERS = flags.DEFINE_list(
    'mlp_layers', ['32', '16', '8'], 'mlp / neumf: widths of the ReLU tower '
    '(its embeddings are half the first width).')
_HIDDEN_UNITS = flags.DEFINE_integer(
    'hidden_units', 500, 'autorec: width of the hidden layer.', lower_bound=1)
_NUM_NEGATIVES = flags.DEFINE_integer(
    'num_negatives', 4, 'Implicit feedback: negatives sampled per positive '
    'each local epoch, on the client.', lower_bound=1)
_NEGATIVE_PROTOCOL = flags.DEFINE_enum(
    'negative_protocol', 'leak_free', ['leak_free', 'published'],
    'Implicit feedback: where training negatives come from. leak_free: items '
    'without a training interaction of the user. published: also never the '
    "user's validation or test items, as PFedRec's official code samples "
    'them (IJCAI 2023); this leaks (the held-out item is never trained down '
    'while its evaluation negatives are) and exists to reproduce published '
    'numbers and measure the inflation.')
_EVAL_NEGATIVES = flags.DEFINE_integer(
    'eval_negatives', 99, 'Sampled ranking protocol: negatives per user '
    '(without replacement, from never-interacted items; 99 or 999 usual).',
    lower_bound=1)
_KS = flags.DEFINE_list('ks', ['5', '10', '20'],
                        'Ranking cut-offs K of HR@K, NDCG@K, ...')
_ROUNDS = flags.DEFINE_integer(
    'rounds', None, f'Federated rounds (default {defaults.by_feedback("rounds")}).',
    lower_bound=1)
_CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', None, 'Clients sampled per round (under poisson '
    'sampling: the expected number; default '
    f'{defaults.by_feedback("clients_per_round")}).', lower_bound=1)
# Differential privacy, secure aggregation, compression.
_DP = flags.DEFINE_enum_class(
    'dp', privacy_settings.Mechanism.NONE, privacy_settings.Mechanism,
    'User-level DP: "fixed" (Gaussian mechanism, fixed L2 clip of each '
    'client\'s update; DP-FedAvg) or "adaptive" (adaptive clipping, Andrew et '
    'al. 2021). Forces uniform client weighting.')
_DP_NOISE = flags.DEFINE_float(
    'dp_noise_multiplier', None, 'Noise multiplier z (noise stddev z x clip). '
    'Give this or --target_epsilon.', lower_bound=0.0)
_TARGET_EPSILON = flags.DEFINE_float(
    'target_epsilon', None, 'Calibrate the noise multiplier so that --rounds '
    'rounds end at this epsilon.')
_TARGET_DELTA = flags.DEFINE_float(
    'target_delta', None, 'delta of the guarantee (default 1 / '
    'number_of_training_users^1.1).')
_DP_CLIP = flags.DEFINE_float(
    'dp_clip', privacy_settings.DPConfig.clip, 'L2 clip of a client update (the '
    'initial clip under --dp=adaptive).')
_DP_QUANTILE = flags.DEFINE_float(
    'dp_target_quantile', privacy_settings.DPConfig.target_quantile,
    'Adaptive clipping: the fraction of updates left unclipped.')
_DP_CLIP_LR = flags.DEFINE_float(
    'dp_clip_learning_rate', privacy_settings.DPConfig.clip_learning_rate,
    'Adaptive clipping: learning rate of the (geometric) clip update.')
_ACCOUNTANT = flags.DEFINE_enum_class(
    'accountant', privacy_settings.AccountantKind.RDP, privacy_settings.AccountantKind,
    'Privacy accountant: rdp, or pld (Poisson sampling only).')
_STOP_AT_EPSILON = flags.DEFINE_float(
    'stop_at_epsilon', None, 'End training before a round that would take '
    'epsilon past this budget.')
_DP_PRIOR_NOISE = flags.DEFINE_float(
    'dp_prior_noise_multiplier', None, 'Under --dp: release the user prior '
    '(the mean training user and the demographics map that serve a new user '
    'with no rating) with Gaussian noise of this multiplier x its '
    'sensitivity, composed into epsilon; default: no release.')
_DP_PRIOR_CLIP = flags.DEFINE_float(
    'dp_prior_clip', privacy_settings.DPConfig.prior_clip, 'Under '
    '--dp_prior_noise_multiplier: the L2 clip of each training user\'s '
    'vector and bias in the user prior.')
_SECURE_AGGREGATION = flags.DEFINE_bool(
    'secure_aggregation', False, 'Sum client updates with TFF\'s secure '
    'aggregation (bounded integer sums; with --dp=fixed the noise is added to '
    'the securely summed clipped updates).')
_COMPRESSION = flags.DEFINE_enum_class(
    'compression', privacy_settings.Compression.NONE, privacy_settings.Compression,
    'Update compression: "quantize" (uniform quantization of large tensors, '
    'TFF\'s EncodedSumFactory).')
_QUANTIZATION_BITS = flags.DEFINE_integer(
    'quantization_bits', 8, 'Bits per value under --compression=quantize.')
_ZEROING = flags.DEFINE_bool(
    'zeroing', True, 'Adaptive zeroing: a client update that is NaN/Inf or far '
    'larger than usual is replaced by zeros and counted.')
_CLIENT_SAMPLING = flags.DEFINE_enum_class(
    'client_sampling', sampling.SamplingScheme.UNIFORM, sampling.SamplingScheme,
    'uniform: a fixed number without replacement; poisson: each client '
    'independently with probability clients_per_round/num_clients.')
_EXECUTION = flags.DEFINE_enum(
    'execution', defaults.EXECUTION, ['auto', 'cohort', 'per_client'],
    'How the sampled users are simulated: per_client (each its own TFF '
    'client, the reference), cohort (many users per TFF client, the same '
    'numbers much faster; FedRecon of explicit MF with SGD so far), auto '
    '(cohort where supported).')
_COHORT_SIZE = flags.DEFINE_integer(
    'cohort_size', 0, 'Users per cohort at most under cohort execution (0: '
    'automatic).', lower_bound=0)
_PARTITION = flags.DEFINE_enum(
    'partition', 'user', list(silos.PARTITIONS),
    'Who takes part: user (sampled users, --clients_per_round) or silo '
    '(--num_silos stores of many users each, every one every round, each '
    'training its users as one cohort; see docs/cross_silo.md).')
_NUM_SILOS = flags.DEFINE_integer(
    'num_silos', 0, 'Silos under --partition=silo.', lower_bound=0)
_SILO_KEY = flags.DEFINE_string(
    'silo_key', silos.RANDOM, 'How users are dealt to silos: random, or a '
    'user field (MovieLens: age, gender, occupation, zip, zip_region, '
    'age_band; atomic: any NAME.user field), each value kept in one silo.')
_SILO_SKEW = flags.DEFINE_float(
    'silo_skew', 0.0, 'With --silo_key=random: silo shares drawn from '
    'Dirichlet(alpha) (small alpha: very unequal stores); 0: equal shares.')
_SILO_WEIGHTING = flags.DEFINE_enum(
    'silo_weighting', 'ratings', list(silos.WEIGHTINGS),
    'Without DP, the server weighs silos by their training ratings or '
    'equally.')
_DP_UNIT = flags.DEFINE_enum(
    'dp_unit', 'user', list(silos.DP_UNITS),
    'Under --partition=silo with --dp: protect any one user (each user\'s '
    'update clipped inside its silo) or any one silo (each silo\'s update '
    'clipped).')
_SPARSIFY = flags.DEFINE_enum(
    'sparsify', 'none', list(silos.SPARSIFY),
    'Under --partition=silo: each silo sends only the top-k rows (by norm) '
    'or k random rows of each item table of its update, k = '
    '--sparsify_fraction x rows (docs/cross_silo.md).')
_SPARSIFY_FRACTION = flags.DEFINE_float(
    'sparsify_fraction', 0.1, 'Share of each item table\'s rows a silo sends '
    'under --sparsify.')
_ERROR_FEEDBACK = flags.DEFINE_bool(
    'error_feedback', True, 'Under --sparsify: each silo keeps the rows it '
    'did not send and adds them to its next update (else they are dropped).')
_UNIFORM_WEIGHTING = flags.DEFINE_bool(
    'uniform_weighting', False, 'Weigh clients equally in the server average '
    '(default: by number of ratings).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', defaults.BATCH_SIZE,
                                   'Client batch size.', lower_bound=1)
_CLIENT_EPOCHS = flags.DEFINE_integer(
    'client_epochs', defaults.CLIENT_EPOCHS, 'Local epochs per round (FedRecon: epochs of training '
    'the global model after reconstruction).', lower_bound=1)
_MAX_EXAMPLES = flags.DEFINE_integer(
    'max_examples_per_user', None, 'Cap on a client\'s ratings per round '
    '(unset: no cap).', lower_bound=1)
_EMBEDDING_DIM = flags.DEFINE_integer('embedding_dim', 16,
                                      'Embedding dimension.', lower_bound=1)
_USE_BIASES = flags.DEFINE_bool('use_biases', True,
                                'Learn user, item and global biases.')
_ITEM_FEATURES = flags.DEFINE_list(
    'item_features', ['genres', 'year'], 'mf_features, neumf_features: the '
    'item side '
    'information its item vectors project (genres, year, title_text, '
    'genome; from the corpus\'s item file, data/side_info.py; title_text: '
    'sentence embeddings of the titles, after make setup-text; genome: the '
    'leading principal components of the tag genome, MovieLens ml-20m and '
    'later).')
_ID_DROPOUT = flags.DEFINE_float(
    'id_dropout', 0.5, 'mf_features, neumf_features: share of training '
    'examples whose item id part is zeroed (DropoutNet), so the features learn to stand alone.')
_L2 = flags.DEFINE_float(
    'l2', None, 'Per-example L2 weight on the rated pair\'s embeddings and '
    'biases (autorec: on its weights). Default '
    f'{defaults.by_feedback("l2")}.', lower_bound=0.0)
_CLIENT_OPTIMIZER = flags.DEFINE_enum(
    'client_optimizer', None, _OPTIMIZERS, 'Client optimizer (default '
    f'{defaults.by_feedback("client_optimizer")}).')
_CLIENT_LR = flags.DEFINE_float(
    'client_learning_rate', None, 'Client learning rate (default '
    f'{defaults.by_feedback("client_learning_rate")}).')
_SERVER_OPTIMIZER = flags.DEFINE_enum(
    'server_optimizer', defaults.SERVER_OPTIMIZER, _OPTIMIZERS,
    'Server optimizer.')
_SERVER_LR = flags.DEFINE_float(
    'server_learning_rate', None, 'Server learning rate (default: '
    f'{registry.server_learning_rate_help()}).')
_SERVER_LR_SCHEDULE = flags.DEFINE_enum(
    'server_lr_schedule', 'constant', [s.value for s in optimizers.Schedule],
    'Server learning rate over the rounds: constant, or decaying from '
    '--server_learning_rate at round 1 towards 0 after --rounds (linear or '
    'cosine). Reported per round as server_learning_rate in metrics.csv.')
_RECON_OPTIMIZER = flags.DEFINE_enum(
    'reconstruction_optimizer', None, _OPTIMIZERS,
    'FedRecon: optimizer of the local user embedding (default '
    f'{defaults.by_feedback("reconstruction_optimizer")}).')
_RECON_LR = flags.DEFINE_float(
    'reconstruction_learning_rate', None, 'FedRecon: reconstruction learning '
    f'rate (default {defaults.by_feedback("reconstruction_learning_rate")}).')
_RECON_EPOCHS = flags.DEFINE_integer(
    'recon_epochs', defaults.RECON_EPOCHS, 'FedRecon: epochs over a client\'s data to reconstruct '
    'its user embedding (training, and evaluation unless --eval_recon_epochs).',
    lower_bound=1)
_EVAL_RECON_EPOCHS = flags.DEFINE_integer(
    'eval_recon_epochs', None, 'FedRecon: reconstruction epochs of a '
    'validation or test user (and of the export\'s users in recommend.py); '
    'default: --recon_epochs. Training is unchanged.', lower_bound=1)
_RECON_STEPS_MAX = flags.DEFINE_integer(
    'recon_steps_max', None, 'FedRecon: cap on reconstruction steps (unset: '
    'no cap).', lower_bound=1)
_POST_RECON_STEPS_MAX = flags.DEFINE_integer(
    'post_recon_steps_max', None, 'FedRecon: cap on training steps after '
    'reconstruction (unset: no cap).', lower_bound=1)
_SPLIT_DATASET = flags.DEFINE_bool(
    'split_dataset', False, 'FedRecon training: reconstruct on even batches '
    'and train on odd ones (default: both stages use all the client data).')

# Evaluation, baseline, outputs.
_EVAL_EVERY = flags.DEFINE_integer(
    'eval_every', defaults.EVAL_EVERY, 'Evaluate on validation users every N rounds (0: only '
    'after the last round).', lower_bound=0)
_EVAL_CLIENTS = flags.DEFINE_integer(
    'eval_clients', defaults.EVAL_CLIENTS, 'Validation clients per periodic evaluation (0: all); '
    'a fixed, seeded subset.', lower_bound=0)
_SELECT_BY = flags.DEFINE_string(
    'select_by', '', 'Report the test metrics of the model of the evaluated '
    'round best on this validation metric (e.g. sampled/hr@10, as PFedRec '
    'does; rmse under explicit feedback; ties keep the earlier round), '
    'evaluated every --eval_every rounds. Empty: the last round\'s model.')
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    'checkpoint_every', defaults.CHECKPOINT_EVERY, 'Save a checkpoint every N rounds (and after the '
    'last).', lower_bound=1)
_FINETUNE = flags.DEFINE_bool(
    'finetune', False, 'FedAvg (explicit feedback): also report test metrics '
    'after each test user fine-tunes its own user-table row and bias on the '
    'ratings its client holds (reconstruction settings, item side frozen): '
    'the "FedAvg + fine-tuning" baseline; allows --split=user_disjoint.')
_CENTRALIZED_BASELINE = flags.DEFINE_bool(
    'centralized_baseline', True, 'Also train the centralized baseline.')
_CENTRALIZED_EPOCHS = flags.DEFINE_integer(
    'centralized_epochs', defaults.CENTRALIZED_EPOCHS, 'Most epochs of the centralized baseline (it '
    'stops early when validation RMSE stops improving).',
    lower_bound=1)
_CENTRALIZED_OPTIMIZER = flags.DEFINE_enum(
    'centralized_optimizer', defaults.CENTRALIZED_OPTIMIZER, ['sgd', 'sgdm', 'adam', 'adagrad'],
    'Optimizer of the centralized baseline (Keras; it has no yogi).')
_CENTRALIZED_LR = flags.DEFINE_float(
    'centralized_learning_rate', defaults.CENTRALIZED_LEARNING_RATE,
    'Learning rate of the centralized baseline.')
_CENTRALIZED_BATCH_SIZE = flags.DEFINE_integer(
    'centralized_batch_size', defaults.CENTRALIZED_BATCH_SIZE, 'Batch size of the centralized baseline.',
    lower_bound=1)
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seed of model initialization, client sampling and shuffling.')
_ROOT_OUTPUT_DIR = flags.DEFINE_string('root_output_dir', 'runs',
                                       'Root of all outputs.')
_EXPERIMENT_NAME = flags.DEFINE_string(
    'experiment_name', 'default', 'Outputs go to root_output_dir/<this>/.')
_CACHE_DIR = flags.DEFINE_string(
    'cache_dir', None, 'Where client stores are cached (default: '
    'root_output_dir/cache).')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', 1, 'Local TFF worker processes; each round\'s clients are '
    'spread over them (TFF\'s mergeable execution context).', lower_bound=1,
    upper_bound=64)
_WORKER_ADDRESSES = flags.DEFINE_list(
    'worker_addresses', [], 'host:port of TFF workers already running '
    '(worker_binary --port=P) on this or other machines; used instead of '
    'local workers. Each must read the client store at the same path.')
_PROGRESS = flags.DEFINE_bool(
    'progress', True, 'Show a progress bar (also off when not on a terminal).')


def _rating_scale() -> tuple[float, float, float]:
  try:
    low, high, step = (float(v) for v in _RATING_SCALE.value)
  except ValueError as e:
    raise ValueError('--rating_scale must be three numbers min,max,step, got '
                     f'{",".join(_RATING_SCALE.value)}.') from e
  return low, high, step


def _int_list(flag) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in flag.value)
  except ValueError:
    raise ValueError(f'--{flag.name} must be comma-separated integers, got '
                     f'{",".join(flag.value)}.') from None


def build_config():
  """Turns the flags into an `ExperimentConfig` (validated by the library)."""
  # Imported here so that `--help` does not pay for importing TFF.
  from research.fedrec.algorithms import fed_recon  # pylint: disable=g-import-not-at-top
  from research.fedrec.data import pipelines  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import centralized  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import loop  # pylint: disable=g-import-not-at-top

  from research.fedrec.evaluation import ranking  # pylint: disable=g-import-not-at-top
  seed = _SEED.value
  # Flags left unset take the per-feedback defaults (defaults.py).
  chosen = defaults.BY_FEEDBACK[_FEEDBACK.value.value]

  def default(flag, name):
    return flag.value if flag.value is not None else chosen[name]
  return experiment.ExperimentConfig(
      root_output_dir=_ROOT_OUTPUT_DIR.value,
      experiment_name=_EXPERIMENT_NAME.value,
      algorithm=_ALGORITHM.value,
      method_settings={name: flag.value
                       for name, flag in _METHOD_SETTINGS.items()
                       if flag.value is not None},
      data=corpus.DataConfig(
          dataset=_DATASET.value,
          data_dir=_DATA_DIR.value,
          min_ratings_per_user=_MIN_RATINGS.value,
          max_users=_MAX_USERS.value,
          rating_scale=_rating_scale(),
          duplicates=_DUPLICATES.value,
          synthetic_config=synthetic.SyntheticConfig(
              num_users=_SYNTHETIC_USERS.value,
              num_items=_SYNTHETIC_ITEMS.value,
              num_ratings=_SYNTHETIC_RATINGS.value,
              min_ratings_per_user=_SYNTHETIC_MIN.value,
              rank=_SYNTHETIC_RANK.value,
              noise_stddev=_SYNTHETIC_NOISE.value,
              selection_affinity=default(_SYNTHETIC_AFFINITY,
                                         'synthetic_selection_affinity'),
              max_ratings_per_user=default(_SYNTHETIC_MAX,
                                           'synthetic_max_ratings'),
              seed=_DATA_SEED.value),
          feedback=_FEEDBACK.value,
          implicit_threshold=_IMPLICIT_THRESHOLD.value),
      split=splits.SplitConfig(
          kind=_SPLIT.value, order=_SPLIT_ORDER.value,
          val_fraction=_VAL_FRACTION.value, test_fraction=_TEST_FRACTION.value,
          support_fraction=_SUPPORT_FRACTION.value,
          cold_item_fraction=_COLD_ITEM_FRACTION.value,
          seed=_SPLIT_SEED.value),
      # The chosen model's config takes the flags of its fields' names.
      model=models_registry.get(_MODEL.value).config(
          embedding_dim=_EMBEDDING_DIM.value, use_biases=_USE_BIASES.value,
          l2=default(_L2, 'l2'), seed=seed, mlp_layers=_int_list(_MLP_LAYERS),
          hidden_units=_HIDDEN_UNITS.value,
          item_features=tuple(_ITEM_FEATURES.value),
          id_dropout=_ID_DROPOUT.value),
      pipeline=pipelines.PipelineConfig(
          batch_size=_BATCH_SIZE.value,
          max_examples_per_user=_MAX_EXAMPLES.value,
          local_epochs=_CLIENT_EPOCHS.value, seed=seed,
          num_negatives=_NUM_NEGATIVES.value,
          exclude_heldout=_NEGATIVE_PROTOCOL.value == 'published'),
      recon=fed_recon.ReconConfig(
          recon_epochs=_RECON_EPOCHS.value,
          recon_steps_max=_RECON_STEPS_MAX.value,
          post_recon_epochs=_CLIENT_EPOCHS.value,
          post_recon_steps_max=_POST_RECON_STEPS_MAX.value,
          split_dataset=_SPLIT_DATASET.value,
          eval_recon_epochs=_EVAL_RECON_EPOCHS.value),
      optimizers=experiment.OptimizerConfig(
          client=default(_CLIENT_OPTIMIZER, 'client_optimizer'),
          client_learning_rate=default(_CLIENT_LR, 'client_learning_rate'),
          server=_SERVER_OPTIMIZER.value,
          server_learning_rate=(
              _SERVER_LR.value if _SERVER_LR.value is not None else
              registry.default_server_learning_rate(
                  _ALGORITHM.value, _FEEDBACK.value.value == 'implicit')),
          reconstruction=default(_RECON_OPTIMIZER, 'reconstruction_optimizer'),
          reconstruction_learning_rate=default(
              _RECON_LR, 'reconstruction_learning_rate'),
          server_schedule=_SERVER_LR_SCHEDULE.value),
      loop=loop.LoopConfig(total_rounds=default(_ROUNDS, 'rounds'),
                           eval_every=_EVAL_EVERY.value,
                           checkpoint_every=_CHECKPOINT_EVERY.value,
                           progress=_PROGRESS.value and sys.stderr.isatty(),
                           select_by=_SELECT_BY.value),
      clients_per_round=default(_CLIENTS_PER_ROUND, 'clients_per_round'),
      sampling=_CLIENT_SAMPLING.value,
      uniform_weighting=_UNIFORM_WEIGHTING.value,
      execution=_EXECUTION.value, cohort_size=_COHORT_SIZE.value,
      silos=silos.SiloConfig(
          partition=_PARTITION.value, num_silos=_NUM_SILOS.value,
          key=_SILO_KEY.value, skew=_SILO_SKEW.value,
          weighting=_SILO_WEIGHTING.value, dp_unit=_DP_UNIT.value,
          sparsify=_SPARSIFY.value,
          sparsify_fraction=_SPARSIFY_FRACTION.value,
          error_feedback=_ERROR_FEEDBACK.value),
      dp=privacy_settings.DPConfig(
          mechanism=_DP.value, noise_multiplier=_DP_NOISE.value,
          target_epsilon=_TARGET_EPSILON.value,
          target_delta=_TARGET_DELTA.value, clip=_DP_CLIP.value,
          target_quantile=_DP_QUANTILE.value,
          clip_learning_rate=_DP_CLIP_LR.value, accountant=_ACCOUNTANT.value,
          stop_at_epsilon=_STOP_AT_EPSILON.value,
          prior_noise_multiplier=_DP_PRIOR_NOISE.value,
          prior_clip=_DP_PRIOR_CLIP.value),
      aggregation=privacy_settings.AggregationConfig(
          secure_aggregation=_SECURE_AGGREGATION.value,
          compression=_COMPRESSION.value,
          quantization_bits=_QUANTIZATION_BITS.value, zeroing=_ZEROING.value),
      eval_clients=_EVAL_CLIENTS.value,
      centralized=centralized.CentralizedConfig(
          epochs=_CENTRALIZED_EPOCHS.value,
          batch_size=_CENTRALIZED_BATCH_SIZE.value,
          optimizer=_CENTRALIZED_OPTIMIZER.value,
          learning_rate=_CENTRALIZED_LR.value, seed=seed),
      run_centralized_baseline=_CENTRALIZED_BASELINE.value,
      finetune=_FINETUNE.value,
      cache_dir=_CACHE_DIR.value,
      seed=seed,
      ranking=ranking.RankingConfig(ks=_int_list(_KS),
                                    eval_negatives=_EVAL_NEGATIVES.value,
                                    seed=seed))


def _key_flags():
  return flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])


def flag_values() -> dict:
  """This binary's flags and their values (recorded in hparams.json)."""
  return {f.name: f.value for f in _key_flags()}


def config_from_args(args):
  """The `ExperimentConfig` that `train.py ARGS` would run, built in-process.

  Resets this binary's flags to their defaults, then parses `args` (other
  binaries' flags keep their values), so a caller (reproduce.py) runs exactly
  what the recorded command line runs.

  Raises:
    ValueError: an unknown flag or a bad value (one line).
  """
  cli.reparse(sys.modules[__name__], 'train.py', args)
  return build_config()


def main(argv):
  del argv  # cli.run refuses positional arguments.
  if not flags.FLAGS['verbosity'].present:
    # Saving checkpoints logs several INFO lines a time; --verbosity=0 shows.
    logging.set_verbosity(logging.WARNING)
  from research.fedrec.training import experiment  # pylint: disable=g-import-not-at-top
  from research.fedrec.training import runtime  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    tf.get_logger().setLevel('ERROR')
  try:
    config = build_config()
    workers = runtime.Workers(_NUM_WORKERS.value,
                              tuple(_WORKER_ADDRESSES.value))
    summary = experiment.run_experiment(
        config, flag_values=flag_values(),
        log=lambda message: print(message, flush=True), workers=workers)
  except cli.user_errors() as e:  # A user mistake or an I/O failure.
    cli.fail('train.py', e)
  print(f'\nHeld-out test metrics ({summary["dataset"]}, '
        f'{summary["test_ratings"]} ratings):')
  print(experiment.format_summary(summary))
  if summary.get('silos'):
    print('\nEach silo\'s test users (docs/cross_silo.md):')
    print(experiment.format_silos(summary))
  print(f'\nOutputs: {config.output_dir}')
  print(f'Done in {summary["wall_seconds"]:.0f} s.')


if __name__ == '__main__':
  cli.run(main, 'train.py')
