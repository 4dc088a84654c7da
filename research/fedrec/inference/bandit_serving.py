"""Saving a bandit run's policies and serving a user with one of them.

bandit.py saves, at the end of a run, what the server holds (`policies.npz`:
each policy's shared model, the item contexts, the ids and titles) apart from
what the simulated users' devices hold (`devices.npz`: each personalized
policy's per-user state, and the items each user was given, which the
device knows). `serve` ranks the items a user has not been given by a
policy's score and shows what the score is made of (estimate and
exploration bonus), the user's own device state included: a user the
bandit never served gets the shared model alone.
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from research.fedrec.algorithms import bandit_policies
from research.fedrec.utils import json_io

SERVER_FILE, DEVICES_FILE = 'policies.npz', 'devices.npz'


def _write_npz(path: str, arrays: dict) -> None:
  """`np.savez` to a temporary file renamed into place."""
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def save(directory: str, policies, pools, contexts: np.ndarray,
         raw_users: np.ndarray, raw_items: np.ndarray, titles) -> None:
  """Writes `policies.npz` and `devices.npz` of a finished run."""
  server = {'contexts': contexts, 'raw_users': raw_users.astype(str),
            'raw_items': raw_items.astype(str), 'titles': np.array(titles)}
  devices = {}
  for policy, pool in zip(policies, pools):
    for key, value in policy.server_arrays().items():
      server[f'{policy.name}/{key}'] = value
    for key, value in policy.device_arrays().items():
      devices[f'{policy.name}/{key}'] = value
    users, items = pool.given()
    devices[f'{policy.name}/given_users'] = users
    devices[f'{policy.name}/given_items'] = items
  _write_npz(os.path.join(directory, SERVER_FILE), server)
  _write_npz(os.path.join(directory, DEVICES_FILE), devices)


@dataclasses.dataclass
class Served:
  """A restored policy and what serving a user needs."""

  policy: bandit_policies.Policy
  raw_users: np.ndarray
  raw_items: np.ndarray
  titles: np.ndarray
  given: dict  # Dense user -> items it was given.


def load(directory: str, name: str) -> Served:
  """Policy `name` of the bandit.py run in `directory`.

  Raises:
    ValueError: no such run or policy (one line).
  """
  paths = [os.path.join(directory, f) for f in (SERVER_FILE, DEVICES_FILE,
                                                 'summary.json')]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise ValueError(f'--bandit_dir={directory}: no {missing[0]} (a folder '
                     'written by bandit.py is expected).')
  with open(paths[2]) as f:
    summary = json.load(f)
  run_policies = [p for p in summary['policies']
                  if p != bandit_policies.HindsightLinear.name]
  if name not in run_policies:
    raise ValueError(f'--policy={name}: the run has {", ".join(run_policies)}'
                     '.')
  settings = json_io.from_jsonable(bandit_policies.PolicySettings,
                                   summary['policy_settings'])
  with np.load(paths[0]) as server_file, np.load(paths[1]) as device_file:
    prefix = name + '/'
    server = {k[len(prefix):]: server_file[k] for k in server_file.files
              if k.startswith(prefix)}
    devices = {k[len(prefix):]: device_file[k] for k in device_file.files
               if k.startswith(prefix)}
    policy = bandit_policies.POLICIES[name](server_file['contexts'],
                                            settings)
    policy.load(server, devices)
    given = {}
    for user, item in zip(devices['given_users'], devices['given_items']):
      given.setdefault(int(user), []).append(int(item))
    return Served(policy, server_file['raw_users'], server_file['raw_items'],
                  server_file['titles'], given)


def serve(served: Served, raw_user: str, k: int) -> dict:
  """The top `k` items for `raw_user` and the columns behind each score."""
  known = np.flatnonzero(served.raw_users == raw_user)
  user: Optional[int] = int(known[0]) if len(known) else None
  given = served.given.get(user, []) if user is not None else []
  candidates = np.setdiff1d(np.arange(len(served.raw_items)), given)
  columns = served.policy.explain(candidates, -1 if user is None else user)
  key = columns.get('score', next(iter(columns.values())))
  order = np.lexsort((candidates, -np.asarray(key)))[:k]
  rows = []
  for rank, position in enumerate(order, start=1):
    item = int(candidates[position])
    row = {'rank': rank, 'item': served.raw_items[item].item()}
    for column, values in columns.items():
      row[column] = round(float(values[position]), 4)
    row['title'] = served.titles[item].item() if len(served.titles) else ''
    rows.append(row)
  if user is None or user not in served.given:
    note = ('a user this policy never served: the shared model alone '
            '(a new user)')
  else:
    device = (' and this user\'s device model'
              if served.policy.device_arrays() else '')
    note = (f'the shared model{device}; the {len(given)} items this user '
            'was given are excluded')
  return {'policy': served.policy.name, 'label': served.policy.label,
          'user': raw_user, 'k': k, 'note': note, 'recommendations': rows}
