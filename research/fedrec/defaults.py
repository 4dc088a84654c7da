"""The one home of a run's default settings (no TensorFlow: flags read it).

The library's configuration objects take their defaults from here
(`training/experiment.default_config` assembles a whole run's, per feedback),
train.py's flags show and fill from the same values, and benchmark.py and the
reproduction tables build on those objects. Settings whose best default
depends on the feedback are in `BY_FEEDBACK`; everything else is one value.
"""

# The run: how often it is evaluated (how long and how many clients per round:
# `BY_FEEDBACK`).
EVAL_EVERY = 25  # Rounds between validation evaluations (0: only the last).
# Users simulated in cohorts wherever the method supports the run
# (training/experiment.py EXECUTIONS).
EXECUTION = 'auto'
EVAL_CLIENTS = 100  # Validation users per periodic evaluation (0: all).
CHECKPOINT_EVERY = 10

# Client work.
BATCH_SIZE = 16
CLIENT_EPOCHS = 2  # FedAvg: local epochs; FedRecon: epochs after recon.
RECON_EPOCHS = 1
SERVER_OPTIMIZER = 'sgd'
# Under implicit feedback, and for a method without a default of its own
# (explicit feedback: each method's, algorithms/registry.py).
SERVER_LEARNING_RATE = 1.0

# The centralized baseline.
CENTRALIZED_EPOCHS = 20  # At most: early stopping on validation.
CENTRALIZED_BATCH_SIZE = 64
CENTRALIZED_OPTIMIZER = 'adam'
CENTRALIZED_LEARNING_RATE = 0.003

# Defaults that differ by feedback. Implicit models (BCE, products of
# embeddings that start small) need scale-free local steps: SGD barely moves
# a reconstructed user embedding, and the global model then learns to ignore
# it. Synthetic implicit users choose items by their preferences, and keep
# items never interacted with for sampled ranking (700: ML-100K's most
# active user). The explicit budget (200 rounds of 100 users, with each
# method's server learning rate) was chosen on validation RMSE in cohorts
# (docs/notes/2026-12-05-main-job-budget.md); the implicit one is older.
BY_FEEDBACK = {
    'explicit': dict(
        rounds=200, clients_per_round=100, l2=0.05, client_optimizer='sgd', client_learning_rate=0.2,
        reconstruction_optimizer='sgd', reconstruction_learning_rate=0.2,
        synthetic_selection_affinity=0.0, synthetic_max_ratings=None),
    'implicit': dict(
        rounds=50, clients_per_round=50, l2=0.0, client_optimizer='adam', client_learning_rate=0.01,
        reconstruction_optimizer='adam', reconstruction_learning_rate=0.02,
        synthetic_selection_affinity=1.5, synthetic_max_ratings=700),
}


def by_feedback(name: str) -> str:
  """'explicit value / implicit value' of a per-feedback default, for help."""
  explicit, implicit = (BY_FEEDBACK[f][name] for f in ('explicit', 'implicit'))
  return (f'{"none" if explicit is None else explicit} for explicit feedback, '
          f'{"none" if implicit is None else implicit} for implicit')
