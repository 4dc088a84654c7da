"""A bandit run: every policy on one user stream, centralized or federated.

Each round draws the same users for every policy (`bandit_env.sample_users`);
each policy shows each of them candidates from that user's pool under that
policy, picks one with its current shared model, and its model is updated
once from the round's summed per-user statistics: summed on the host
(`centralized`) or by a TFF aggregator over the users' devices (`federated`,
`bandit_federated.FederatedSum`), plainly or with Gaussian noise for
user-level DP. The best fixed linear policy in hindsight
(`bandit_policies.HindsightLinear`, fit to every bandit user's rewards) runs
on the same stream as the reference of linear regret. Per round and policy,
metrics.csv holds the events, clicks,
the per-user oracle's clicks (the best reward among the shown candidates),
cumulative reward and regret and the click-through rate so far;
cumulative_regret.png plots every policy's regret; ctr_by_visit.csv / .png
the click-through rate at a user's k-th visit (how fast a new user is
served well); summary.json holds the totals, the settings and, under DP,
epsilon and the privacy statement; policies.npz (the server's models) and
devices.npz (the users' device state) serve users afterwards
(`inference/bandit_serving.py`, recommend.py --bandit_dir).

Outputs are written to a temporary folder renamed into place at the end, so
a failed or interrupted run leaves no half-written results.
"""

import collections
import csv
import dataclasses
import io
import os
import shutil
import sys
import tempfile
import time
import zlib
from typing import Callable, Optional

import numpy as np
import tqdm

from research.fedrec.algorithms import bandit_policies
from research.fedrec.algorithms import sampling as sampling_lib
from research.fedrec.data import bandit_env
from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import side_info
from research.fedrec.inference import bandit_serving
from research.fedrec.privacy import accounting
from research.fedrec.privacy import statement
from research.fedrec.reporting import plots
from research.fedrec.utils import json_io

CENTRALIZED, FEDERATED = 'centralized', 'federated'
# Per policy and round, in metrics.csv as `<policy>/<name>`.
METRICS = ('events', 'clicks', 'oracle_clicks', 'cumulative_reward',
           'cumulative_regret', 'ctr')
_CHOICE_STREAM, _LOG_STREAM = 4, 5
# A user's first visits whose click-through rate is reported (summary.json's
# ctr_by_visit: the cold start of a new user).
MAX_VISITS = 100


@dataclasses.dataclass(frozen=True)
class BanditConfig:
  """A bandit run's settings (flags of bandit.py)."""

  output_dir: str
  data: corpus_lib.DataConfig = dataclasses.field(
      default_factory=corpus_lib.DataConfig)
  environment: bandit_env.EnvironmentConfig = dataclasses.field(
      default_factory=bandit_env.EnvironmentConfig)
  policy_settings: bandit_policies.PolicySettings = dataclasses.field(
      default_factory=bandit_policies.PolicySettings)
  policies: tuple[str, ...] = tuple(bandit_policies.POLICIES)
  rounds: int = 200
  execution: str = CENTRALIZED
  noise_multiplier: Optional[float] = None  # Federated only: user-level DP.
  target_epsilon: Optional[float] = None  # Or: the noise calibrated to this.
  delta: Optional[float] = None  # Default 1 / bandit users^1.1.
  replay: bool = False  # Also the replay estimate on uniform logged events.
  secure_aggregation: bool = False  # Federated: TFF's secure sum.

  def __post_init__(self):
    if self.rounds < 1:
      raise ValueError(f'--rounds={self.rounds}: expected >= 1.')
    if self.execution not in (CENTRALIZED, FEDERATED):
      raise ValueError(f'--execution={self.execution}: expected '
                       f'{CENTRALIZED} or {FEDERATED}.')
    if not self.policies:
      raise ValueError('--policies: give at least one policy.')
    if len(set(self.policies)) != len(self.policies):
      raise ValueError('--policies: a policy is named twice.')
    private = (self.noise_multiplier is not None or
               self.target_epsilon is not None)
    if private and self.execution != FEDERATED:
      raise ValueError('user-level DP (--dp_noise_multiplier or '
                       '--target_epsilon) needs --execution=federated.')
    if self.noise_multiplier is not None and self.target_epsilon is not None:
      raise ValueError('give --dp_noise_multiplier or --target_epsilon, not '
                       'both.')
    if self.secure_aggregation and self.execution != FEDERATED:
      raise ValueError('--secure_aggregation needs --execution=federated.')
    if self.replay and self.environment.slate_size != 1:
      raise ValueError('--replay evaluates single picks (Li et al.); use '
                       '--slate_size=1.')
    if self.noise_multiplier is not None and self.noise_multiplier < 0:
      raise ValueError(f'--dp_noise_multiplier={self.noise_multiplier:g}: '
                       'expected >= 0.')

  @property
  def private(self) -> bool:
    return self.noise_multiplier is not None or self.target_epsilon is not None


def privacy_setting(config: BanditConfig,
                    num_bandit_users: int) -> accounting.PrivacySetting:
  """The sampling the accountant composes: m of the bandit users per round,
  uniformly without replacement (`bandit_env.sample_users`)."""
  return accounting.PrivacySetting(
      num_users=num_bandit_users,
      clients_per_round=config.environment.users_per_round,
      sampling=sampling_lib.SamplingScheme.UNIFORM,
      delta=(config.delta if config.delta is not None else
             accounting.default_delta(num_bandit_users)))


def _policy_stream(name: str) -> int:
  return zlib.crc32(name.encode())


def _choice_rng(env, policy, round_num: int, user: int):
  """The generator of `policy`'s choice for `user` in a round (seeded)."""
  return np.random.default_rng([env.seed, _CHOICE_STREAM,
                                _policy_stream(policy.name), round_num, user])


def _apply(policy, summed, records) -> None:
  """The server's update from a round's records, summed by `summed`."""
  if summed is not None:
    policy.apply(summed(np.asarray(records, np.float64).reshape(
        -1, policy.statistics_size)))


def run_policies(policies, pools, table_users: np.ndarray,
                 config: BanditConfig, sums,
                 on_round: Callable[[int, dict], None] = lambda r, m: None):
  """Runs the rounds; returns per-round metrics {policy: {metric: [..]}}.

  Each sampled user gets a slate of `slate_size` of its candidates (one
  event per item shown); its round's statistic is the sum over its slate.

  `pools[i]` is policy i's `bandit_env.UserPools`, `sums[i]` its summing
  function (records [users, size] -> sum) or None (no statistics);
  `table_users` the bandit users. `on_round(round, metrics)` is called after
  each round with the round's row. Besides the per-round lists, each
  policy's `ctr_by_visit[k]` is its click-through rate at users' (k+1)-th
  visit over `users_by_visit[k]` users (up to the most visits a user made,
  at most `MAX_VISITS`).
  """
  env = config.environment
  history = {p.name: collections.defaultdict(list) for p in policies}
  totals = {p.name: collections.Counter() for p in policies}
  visits = {p.name: collections.Counter() for p in policies}
  by_visit = {p.name: np.zeros((2, MAX_VISITS)) for p in policies}
  for round_num in range(config.rounds):
    users = bandit_env.sample_users(table_users, round_num, env)
    row = {}
    for policy, pool, summed in zip(policies, pools, sums):
      records, clicks, oracle, events = [], 0.0, 0.0, 0
      for user in users:
        items, rewards = pool.candidates(int(user), round_num)
        if not len(items):
          continue
        slate = policy.choose_slate(
            items, _choice_rng(env, policy, round_num, int(user)), int(user),
            env.slate_size)
        statistic = 0.0
        for pick in slate:
          policy.observe(int(user), int(items[pick]), float(rewards[pick]))
          pool.remove(int(user), int(items[pick]))
          if summed is not None:
            statistic = statistic + policy.user_statistic(
                int(items[pick]), float(rewards[pick]))
        picked = float(rewards[slate].sum())
        visit = visits[policy.name][int(user)]
        visits[policy.name][int(user)] += 1
        if visit < MAX_VISITS:  # The click-through rate by a user's visit.
          by_visit[policy.name][0][visit] += picked
          by_visit[policy.name][1][visit] += len(slate)
        events += len(slate)
        clicks += picked
        # The oracle's slate: the best rewards among the shown items.
        oracle += float(np.sort(rewards)[::-1][:len(slate)].sum())
        if summed is not None:
          records.append(statistic)
      _apply(policy, summed, records)
      total = totals[policy.name]
      total.update(events=events, clicks=clicks, oracle=oracle)
      values = dict(events=events, clicks=clicks, oracle_clicks=oracle,
                    cumulative_reward=total['clicks'],
                    cumulative_regret=total['oracle'] - total['clicks'],
                    ctr=total['clicks'] / max(total['events'], 1))
      for name, value in values.items():
        history[policy.name][name].append(value)
        row[f'{policy.name}/{name}'] = value
    on_round(round_num + 1, row)
  for policy in policies:
    clicks, events = by_visit[policy.name]
    made = int(np.count_nonzero(events))  # Visits some user made.
    history[policy.name]['ctr_by_visit'] = [
        float(c / e) for c, e in zip(clicks[:made], events[:made])]
    history[policy.name]['users_by_visit'] = [int(e) for e in events[:made]]
  return history


def uniform_log(table, bandit_users: np.ndarray, config: BanditConfig):
  """Logged events of the uniform random policy on the same user stream.

  Per round, a list of (user, shown items, index of the logged pick, its
  reward); the picked item leaves the user's pool, as in the simulation.
  """
  env = config.environment
  pools = bandit_env.UserPools(table, bandit_users, env)
  log = []
  for round_num in range(config.rounds):
    events = []
    for user in bandit_env.sample_users(bandit_users, round_num, env):
      items, rewards = pools.candidates(int(user), round_num)
      if not len(items):
        continue
      pick = int(np.random.default_rng(
          [env.seed, _LOG_STREAM, round_num, int(user)]).integers(len(items)))
      pools.remove(int(user), int(items[pick]))
      events.append((int(user), items, pick, float(rewards[pick])))
    log.append(events)
  return log


def replay(policies, log, config: BanditConfig, sums) -> dict:
  """The replay estimator (Li et al., WSDM 2011) of each policy's CTR.

  The policy is run over the uniformly logged events in order; an event
  counts, and the policy learns from it (its device and the round's sum),
  only where the policy picks the logged item; the click-through rate over
  the counted events is an unbiased estimate of the policy's own (for a
  uniform logger over a stationary stream).

  Returns:
    {policy: {replay_ctr, replay_events}} (None CTR if no event counted).
  """
  env = config.environment
  results = {}
  for policy, summed in zip(policies, sums):
    counted, clicks = 0, 0.0
    for round_num, events in enumerate(log):
      records = []
      for user, items, logged, reward in events:
        if policy.choose(items, _choice_rng(env, policy, round_num, user),
                         user) != logged:
          continue
        counted += 1
        clicks += reward
        policy.observe(user, int(items[logged]), reward)
        if summed is not None:
          records.append(policy.user_statistic(int(items[logged]), reward))
      _apply(policy, summed, records)
    results[policy.name] = dict(
        replay_ctr=clicks / counted if counted else None,
        replay_events=counted)
  return results


def _metrics_csv(history, policies) -> str:
  columns = [f'{p.name}/{m}' for p in policies for m in METRICS]
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['round'] + columns)
  rounds = len(next(iter(history.values()))['events'])
  for r in range(rounds):
    writer.writerow([r + 1] + [
        repr(float(history[c.split('/')[0]][c.split('/')[1]][r]))
        for c in columns])
  return out.getvalue()


def _visits_csv(history, policies) -> str:
  """Per policy, the click-through rate at users' k-th visit and how many
  users made it (blank after the last visit any user made)."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['visit'] + [f'{p.name}/{m}' for p in policies
                               for m in ('ctr', 'users')])
  made = max(len(history[p.name]['ctr_by_visit']) for p in policies)
  for k in range(made):
    cells = []
    for p in policies:
      ctr, users = history[p.name]['ctr_by_visit'], history[p.name][
          'users_by_visit']
      cells += [repr(ctr[k]), users[k]] if k < len(ctr) else ['', '']
    writer.writerow([k + 1] + cells)
  return out.getvalue()


def host_sum(records: np.ndarray) -> np.ndarray:
  """The centralized learner's sum of a round's records."""
  return records.sum(axis=0)


def run(config: BanditConfig, log: Callable[[str], None] = print,
        progress: bool = True, runtime_factory=None) -> dict:
  """Runs the bandits of `config`, writes its outputs, returns the summary.

  `runtime_factory()` gives the TFF runtime context manager of a federated
  run (training/runtime.py's `local_runtime`).
  """
  started = time.monotonic()
  corpus = corpus_lib.load_corpus(config.data)
  if corpus.implicit:
    raise ValueError('bandits need ratings (rewards): use explicit '
                     'feedback.')
  table = corpus.ratings
  env = config.environment
  context_users, bandit_users = bandit_env.split_users(corpus.num_users, env)
  bandit_env.check_users_per_round(len(bandit_users), env)
  if env.from_side_info:
    info = corpus.item_info(config.data, 'genome' in env.item_contexts)
    features, _ = side_info.item_features(info, env.item_contexts)
    contexts = bandit_env.feature_contexts(features, env)
    origin = f'{", ".join(env.item_contexts)} of {info.source}'
  else:
    contexts = bandit_env.item_contexts(table, context_users,
                                        corpus.num_items, env)
    origin = f'the likes of {len(context_users)} context users'
  policies = bandit_policies.create(config.policies, contexts,
                                    config.policy_settings)
  # The reference of linear regret, run on the same stream.
  pools = [bandit_env.UserPools(table, bandit_users, env)
           for _ in range(len(policies) + 1)]
  policies.append(bandit_policies.HindsightLinear.fit(
      contexts, config.policy_settings, *pools[0].all_rewards()))
  log(f'{corpus.name}: {corpus.num_users} users ({len(bandit_users)} are '
      f'bandit users; item contexts from {origin}), '
      f'{corpus.num_items} items; {config.rounds} rounds of '
      f'{env.users_per_round} users, {env.num_candidates} candidates each; '
      f'{config.execution}.')
  setting = privacy_setting(config, len(bandit_users))
  clip = bandit_policies.sensitivity(env.slate_size)
  noise = config.noise_multiplier
  if config.target_epsilon is not None:
    noise = setting.calibrate(config.target_epsilon, config.rounds)
    log(f'noise multiplier {noise:.4f} for epsilon {config.target_epsilon:g}'
        f' after {config.rounds} rounds.')

  os.makedirs(os.path.dirname(os.path.abspath(config.output_dir)),
              exist_ok=True)
  staging = tempfile.mkdtemp(
      prefix='.bandit-', dir=os.path.dirname(os.path.abspath(
          config.output_dir)))
  try:
    bar = tqdm.tqdm(total=config.rounds, unit='round', file=sys.stderr,
                    disable=not progress, dynamic_ncols=True)

    def on_round(round_num, row):
      del round_num
      bar.update(1)
      bar.set_postfix_str(' '.join(
          f'{p.name} ctr {row[f"{p.name}/ctr"]:.3f}' for p in policies))

    def execute(make_sum):
      """The simulated run, then (--replay) the replay evaluation."""
      def sums(of):
        return [make_sum(p.statistics_size) if p.statistics_size else None
                for p in of]
      history = run_policies(policies, pools, bandit_users, config,
                             sums(policies), on_round)
      if not config.replay:
        return history, None
      fresh = bandit_policies.create(config.policies, contexts,
                                     config.policy_settings)
      for policy in fresh:
        policy.noise_stddev = policies[0].noise_stddev
      log = uniform_log(table, bandit_users, config)
      return history, replay(fresh, log, config, sums(fresh))

    if config.execution == FEDERATED:
      # Imported here: TFF is only loaded for a federated run.
      from research.fedrec.algorithms import bandit_federated  # pylint: disable=g-import-not-at-top
      for policy in policies:  # Their post-processing of the noised sums.
        policy.noise_stddev = (noise or 0.0) * clip
      with runtime_factory(secure_aggregation=config.secure_aggregation):
        history, replayed = execute(
            lambda size: bandit_federated.FederatedSum(
                size, noise, clip, config.secure_aggregation))
    else:
      history, replayed = execute(lambda size: host_sum)
    bar.close()
    summary = _summary(config, corpus, policies, history, setting, noise,
                       len(context_users), len(bandit_users),
                       time.monotonic() - started)
    for name, values in (replayed or {}).items():
      summary['policies'][name].update(values)
    metrics_path = os.path.join(staging, 'metrics.csv')
    json_io.write_text_atomically(metrics_path,
                                  _metrics_csv(history, policies))
    plots.plot_column_family(
        metrics_path, os.path.join(staging, 'cumulative_regret.png'),
        'cumulative_regret', 'cumulative regret (per-user oracle)',
        f'{corpus.name}, {config.execution}'
        + (f', epsilon {summary["epsilon"]:.3g}' if 'epsilon' in summary
           else ''))
    visits_path = os.path.join(staging, 'ctr_by_visit.csv')
    json_io.write_text_atomically(visits_path, _visits_csv(history, policies))
    plots.plot_column_family(
        visits_path, os.path.join(staging, 'ctr_by_visit.png'), 'ctr',
        'click-through rate at the visit',
        f'{corpus.name}, {config.execution}: a user\'s k-th visit',
        x_column='visit')
    json_io.write_json_atomically(os.path.join(staging, 'summary.json'),
                                  summary)
    # The policies, to serve users with (recommend.py --bandit_dir).
    bandit_serving.save(staging, policies[:-1], pools[:-1], contexts,
                        corpus.id_maps.raw_users, corpus.id_maps.raw_items,
                        corpus.titles(config.data))
    os.chmod(staging, 0o755)
    if os.path.isdir(config.output_dir):
      shutil.rmtree(config.output_dir)
    os.replace(staging, config.output_dir)
  finally:
    if os.path.isdir(staging):
      shutil.rmtree(staging)
  log(summary_table(summary))
  log(f'Outputs: {config.output_dir}')
  return summary


def _summary(config, corpus, policies, history, setting, noise,
             num_context_users, num_bandit_users, seconds) -> dict:
  results = {}
  hindsight = history[bandit_policies.HindsightLinear.name]
  for policy in policies:
    h = history[policy.name]
    results[policy.name] = dict(
        label=policy.label, events=int(sum(h['events'])),
        regret_vs_hindsight=(hindsight['cumulative_reward'][-1] -
                             h['cumulative_reward'][-1]),
        cumulative_reward=h['cumulative_reward'][-1],
        cumulative_regret=h['cumulative_regret'][-1],
        oracle_reward=float(sum(h['oracle_clicks'])),
        ctr=h['ctr'][-1], ctr_by_visit=h['ctr_by_visit'],
        users_by_visit=h['users_by_visit'])
  summary = dict(
      corpus=corpus.name, num_users=corpus.num_users,
      num_items=corpus.num_items, context_users=num_context_users,
      bandit_users=num_bandit_users, execution=config.execution,
      rounds=config.rounds, secure_aggregation=config.secure_aggregation,
      environment=dataclasses.asdict(config.environment),
      policy_settings=dataclasses.asdict(config.policy_settings),
      policies=results, seconds=round(seconds, 1))
  if config.private and noise > 0:
    epsilon = setting.epsilon(noise, config.rounds)
    summary.update(
        noise_multiplier=noise,
        clip=bandit_policies.sensitivity(config.environment.slate_size),
        epsilon=epsilon, delta=setting.delta,
        privacy_statement=privacy_text(epsilon, setting, config.rounds))
  else:  # No noise (the DP path at noise 0 included): no guarantee.
    summary['privacy_statement'] = privacy_text(None, setting, config.rounds)
  return summary


def privacy_text(epsilon: Optional[float], setting, rounds: int) -> str:
  """The run's privacy statement (per policy, as deployed alone)."""
  note = (' Each policy releases only its round sums of users\' statistics '
          '(vec(x x^T) and r x of the items a user was given that round, or '
          'their shows and clicks), each user\'s bounded in L2 by sqrt(2) '
          'times the slate size; the '
          'epsilon holds for one policy deployed alone (running several on '
          'the same users composes their budgets).')
  if epsilon is None:
    return statement.privacy_statement(note, 'none')
  return statement.privacy_statement(note, 'fixed', epsilon, setting.delta,
                                     rounds, setting.sampling.value,
                                     setting.accountant.value)


def summary_table(summary: dict) -> str:
  """The policies' totals as a text table."""
  lines = [f'{"policy":<12} {"events":>7} {"reward":>8} {"regret":>8} '
           f'{"vs hindsight":>12} {"ctr":>6}']
  replayed = any('replay_events' in r for r in summary['policies'].values())
  if replayed:
    lines[0] += f' {"replay ctr":>10} {"(events)":>8}'
  for name, r in summary['policies'].items():
    line = (f'{name:<12} {r["events"]:>7d} '
            f'{r["cumulative_reward"]:>8.0f} '
            f'{r["cumulative_regret"]:>8.0f} '
            f'{r["regret_vs_hindsight"]:>12.0f} {r["ctr"]:>6.3f}')
    if 'replay_events' in r:
      ctr = r['replay_ctr']
      line += (f' {"-" if ctr is None else format(ctr, ".3f"):>10} '
               f'{r["replay_events"]:>8d}')
    lines.append(line)
  lines.append('regret: against the per-user oracle (the best shown '
               'items); vs hindsight: against the best fixed linear policy.')
  if 'epsilon' in summary:
    lines.append(f'user-level DP: epsilon {summary["epsilon"]:.3g} at delta '
                 f'{summary["delta"]:.3g} (noise multiplier '
                 f'{summary["noise_multiplier"]:.4g}).')
  return '\n'.join(lines)
