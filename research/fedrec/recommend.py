r"""Recommends items with a trained model's export (no TFF needed).

Uses <experiment_dir>/export/, which train.py writes at the end of a run.
Ids are the corpus's own (MovieLens user and movie ids).

  # Top 10 for a known user (items the user rated are excluded):
  python -m research.fedrec.recommend --experiment_dir=runs/default \
      --user_id=42 --k=10
  # A new user (cold start) from a few ratings, reconstructed locally:
  python -m research.fedrec.recommend --experiment_dir=runs/default \
      --ratings=50:5,181:4,100:1
  python -m research.fedrec.recommend --experiment_dir=runs/default \
      --ratings_file=my_ratings.csv          # lines: item,rating
  # A new user known only by demographics (a corpus with a user file):
  python -m research.fedrec.recommend --experiment_dir=runs/ml100k \
      --demographics=age=25,gender=F,occupation=student
  # A group:
  python -m research.fedrec.recommend --experiment_dir=runs/default \
      --group=1,2,3 --group_strategy=least_misery
  # A bandit policy of a bandit.py run, with each score's exploration bonus:
  python -m research.fedrec.recommend --bandit_dir=runs/bandits \
      --policy=hybrid --user_id=42

Under Federated Reconstruction a known user's embedding is reconstructed from
all of that user's ratings, as the user's own device would; under FedAvg it is
the user's row of the trained user table; under FedMF the vector its device
kept, and under PFedRec and FedRecon + DualPer also the user's personal view
of the item table, read from the run's client_states/ (the devices' side). A
new user with no ratings gets the model's ranking for the mean training user
(the mean of the training users' vectors and biases, released with the
export), ties by popularity; the output says so. A new user known only by
demographics (--demographics) gets the vector and bias of
a linear map from attributes to user vectors, fitted from two sums over the
training users that the run released with its export
(inference/demographics.py).

Implicit-feedback runs (--feedback=implicit, any --model) work the same way and
show the interaction probability instead of a rating. A new user's history may
list bare items (--ratings=50,181,100); an item:rating entry below the run's
--implicit_threshold is not an interaction and is dropped. U-AutoRec encodes
the user's interactions; with none, items are ranked by popularity.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags

from research.fedrec.utils import cli
import numpy as np

from research.fedrec.algorithms import client_states
from research.fedrec.data import corpus as corpus_lib
from research.fedrec.data import ratings as ratings_lib
from research.fedrec.data import side_info
from research.fedrec.inference import demographics
from research.fedrec.inference import groups
from research.fedrec.utils import json_io
from research.fedrec.utils import text_table

# TensorFlow-heavy: executed when first used, after the flags have passed.
export_lib = cli.lazy_import('research.fedrec.inference.export')
recommender_lib = cli.lazy_import('research.fedrec.inference.recommender')

_EXPERIMENT_DIR = flags.DEFINE_string(
    'experiment_dir', None, 'A run directory written by train.py (its export/ '
    'subdirectory is used).')
_EXPORT_DIR = flags.DEFINE_string(
    'export_dir', None, 'An export directory instead of --experiment_dir.')
_USER_ID = flags.DEFINE_string('user_id', None,
                               'Recommend for this known user (corpus id).')
_RATINGS = flags.DEFINE_string(
    'ratings', None, 'A new user\'s ratings as item:rating,... (corpus item '
    'ids); empty for a user with no ratings.')
_RATINGS_FILE = flags.DEFINE_string(
    'ratings_file', None, 'A CSV of a new user\'s ratings, one item,rating '
    'per line (a header line is optional).')
_GROUP = flags.DEFINE_list('group', None,
                           'Recommend for this group of known users.')
_GROUP_STRATEGY = flags.DEFINE_enum(
    'group_strategy', 'average', list(groups.GROUP_STRATEGIES),
    'How members\' predicted ratings combine into the group score.')
_BANDIT_DIR = flags.DEFINE_string(
    'bandit_dir', None, 'A run written by bandit.py: serve --user_id with '
    'one of its policies (--policy) instead of a trained model.')
_POLICY = flags.DEFINE_string('policy', 'linucb',
                              'With --bandit_dir: the policy that serves.')
_NEW_ITEM = flags.DEFINE_string(
    'new_item', None, 'An item no one has rated, described as a movies.dat '
    'line without its id: "Title (1996)::Comedy|Drama" (the year in the '
    'title, genres |-separated; either may be left out): its predicted rating '
    'for the user and its rank among the user\'s unrated items. Needs a '
    'model with item features (--model=mf_features or neumf_features).')
_DEMOGRAPHICS = flags.DEFINE_string(
    'demographics', None, 'A new user known only by demographics, as '
    'field=value pairs of the corpus\'s user file: "age=25,gender=F,'
    'occupation=student" (any of them; age is put into ml-1m\'s bands). '
    'The user\'s vector and bias come from a linear map from attributes to '
    'user vectors fitted over the corpus\'s users (any model with user '
    'vectors; docs/side_information.md). With --ratings, the new user\'s '
    'reconstruction starts at that vector and bias.')
_K = flags.DEFINE_integer('k', 10, 'Number of items to recommend.')
_FORMAT = flags.DEFINE_enum('format', 'table', ['table', 'json'],
                            'Output format.')
_RECON_EPOCHS = flags.DEFINE_integer(
    'reconstruction_epochs', None, 'Epochs of local reconstruction over a '
    'user\'s ratings (default: the run\'s --eval_recon_epochs, else its '
    '--recon_epochs).')


class _Context:
  """The export, and the corpus when known users are involved."""

  def __init__(self, export_dir: str, need_corpus: bool):
    self.exported = export_lib.load_export(export_dir)
    meta = self.exported.metadata
    self.dataset = meta.get('dataset', 'the corpus')
    settings = self.exported.settings
    if _RECON_EPOCHS.value is not None:
      if _RECON_EPOCHS.value < 1:
        raise ValueError(f'--reconstruction_epochs={_RECON_EPOCHS.value} must '
                         'be >= 1.')
      settings = type(settings)(**dict(settings.__dict__,
                                       epochs=_RECON_EPOCHS.value))
    self.implicit = isinstance(self.exported, export_lib.ImplicitExport)
    # Personal item views stay on the devices (the run's client_states/),
    # not in the export: found beside it, a known user is scored with its
    # own; else with the global item side, and the output says so.
    self.device_states, self.device_note = None, None
    if meta.get('device_states'):
      folder = os.path.join(os.path.dirname(os.path.normpath(export_dir)),
                            meta['device_states'])
      if os.path.isdir(folder):
        self.device_states = client_states.read_folder(folder)
      else:
        self.device_note = (f'the users\' personal item views stay on their '
                            f'devices ({folder} not found), so the global '
                            'item embeddings stand in for them')
    self.recommender = (
        recommender_lib.ImplicitRecommender(self.exported, settings,
                                            self.device_states)
        if self.implicit else
        recommender_lib.Recommender(self.exported, settings,
                                    self.device_states))
    self.threshold = (meta.get('data_config') or {}).get('implicit_threshold')
    self.numeric = meta.get('raw_ids_numeric', True)
    self.item_index = {str(r): i
                       for i, r in enumerate(self.exported.raw_items.tolist())}
    self.corpus = None
    if need_corpus:
      config = json_io.from_jsonable(corpus_lib.DataConfig,
                                     meta['data_config'])
      self.corpus = corpus_lib.load_corpus(config)
      recorded = meta.get('corpus_hash')  # Exports before 2026-12-04: none.
      if (self.corpus.num_users != len(self.exported.raw_users) or
          self.corpus.num_items != len(self.exported.raw_items) or
          (recorded is not None and
           recorded != self.corpus.content_hash())):
        raise ValueError(f'The corpus in {config.data_dir or self.dataset} '
                         'changed since the model was exported: restore the '
                         'corpus it was trained on, or retrain.')
      self.user_index = {str(r): i for i, r in enumerate(
          self.exported.raw_users.tolist())}
      order = np.argsort(self.corpus.ratings.users, kind='stable')
      self._by_user = order
      self._starts = np.searchsorted(self.corpus.ratings.users[order],
                                     np.arange(self.corpus.num_users + 1))

  def user(self, raw: str, flag: str) -> int:
    index = self.user_index.get(raw.strip())
    if index is None:
      raws = self.exported.raw_users
      hint = (f' (ids {raws.min()}..{raws.max()})' if self.numeric else '')
      raise ValueError(f'{flag}={raw}: no such user in {self.dataset}{hint}.')
    return index

  def item(self, raw: str, where: str) -> int:
    index = self.item_index.get(raw.strip())
    if index is None:
      raise ValueError(f'{where}: no item {raw.strip()!r} in {self.dataset}.')
    return index

  def attribute_map(self) -> demographics.AttributeMap:
    """The attribute-to-vector map fitted from what training released over
    its users (the export's user prior: inference/demographics.py).

    Raises:
      ValueError: the export has no user prior, or no demographics in it.
    """
    return self.user_prior().attribute_map()

  def user_prior(self) -> demographics.UserPrior:
    """The export's user prior.

    Raises:
      ValueError: the export has none (one line saying why).
    """
    prior = self.exported.user_prior
    if prior is not None:
      return prior
    why = self.exported.metadata.get(
        'user_prior', 'none: rerun train.py with the same flags to export '
        'again')
    raise ValueError(f'this export releases no user prior '
                     f'({why.removeprefix("none: ")}).')

  def history(self, user: int) -> recommender_lib.UserRatings:
    rows = self._by_user[self._starts[user]:self._starts[user + 1]]
    return recommender_lib.UserRatings(self.corpus.ratings.items[rows],
                                       self.corpus.ratings.ratings[rows])

  def item_row(self, item: int) -> collections.OrderedDict:
    return collections.OrderedDict(
        item=self.exported.raw_items[item].item(),
        title=self.exported.titles[item])

  def check_rating(self, value: str, where: str) -> float:
    scale = ratings_lib.RatingScale(*self.exported.rating_scale)
    try:
      rating = float(value)
    except ValueError:
      raise ValueError(f'{where}: rating {value.strip()!r} is not a '
                       'number.') from None
    if not scale.contains(np.array([rating]))[0]:
      raise ValueError(f'{where}: rating {rating:g} is off the scale of '
                       f'{self.dataset} ({scale.describe()}).')
    return rating


def _parse_new_user(context: _Context) -> recommender_lib.UserRatings:
  """The cold-start user's ratings from --ratings or --ratings_file."""
  entries = []  # (item text, rating text, where)
  if _RATINGS_FILE.value is not None:
    path = _RATINGS_FILE.value
    if not os.path.isfile(path):
      raise ValueError(f'--ratings_file={path}: no such file.')
    try:
      with open(path, newline='', encoding='utf-8-sig') as f:
        rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
      raise ValueError(f'{path}: not a UTF-8 text CSV of item,rating (byte '
                       f'{e.start}: {e.reason}).') from None
    except csv.Error as e:
      raise ValueError(f'{path}: not a CSV of item,rating ({e}).') from None
    for number, row in enumerate(rows, start=1):
      if not row or not ''.join(row).strip() or row[0].startswith('#'):
        continue
      if len(row) != 2:
        raise ValueError(f'{path}:{number}: expected item,rating, got '
                         f'{len(row)} fields.')
      if number == 1 and row[1].strip().lower() == 'rating':
        continue  # Header.
      entries.append((row[0], row[1], f'{path}:{number}'))
  else:
    for entry in (e for e in _RATINGS.value.split(',') if e.strip()):
      parts = entry.split(':')
      if len(parts) == 1 and context.implicit:
        parts.append(None)  # An interaction without a rating.
      if len(parts) != 2:
        raise ValueError(f'--ratings: {entry.strip()!r} is not item:rating' +
                         (' or item.' if context.implicit else '.'))
      entries.append((parts[0], parts[1], f'--ratings {entry.strip()}'))
  items, ratings, seen = [], [], {}
  for item_text, rating_text, where in entries:
    item = context.item(item_text, where)
    if item in seen:
      raise ValueError(f'{where}: item {item_text.strip()} is rated twice '
                       f'(also at {seen[item]}).')
    seen[item] = where
    if rating_text is None:
      rating = 1.0
    else:
      rating = context.check_rating(rating_text, where)
      if context.implicit:  # As the corpus: below the threshold is no positive.
        if context.threshold is not None and rating < context.threshold:
          continue
        rating = 1.0
    items.append(item)
    ratings.append(rating)
  return recommender_lib.UserRatings(np.array(items, np.int64),
                                     np.array(ratings, np.float32))


def _recommendations(context, items, scores, extra=None):
  rows = []
  column = 'probability' if context.implicit else 'predicted_rating'
  for position, item in enumerate(items, start=1):
    row = collections.OrderedDict(rank=position)
    row.update(context.item_row(item))
    if scores is not None:
      row[column] = round(float(scores[item]), 4)
    for name, values in (extra or {}).items():
      row[name] = round(float(values[item]), 4)
    rows.append(row)
  return rows


def _score_new_item(recommender, text: str, user, history, scores,
                    implicit: bool = False) -> collections.OrderedDict:
  """--new_item: the described item's predicted rating (`implicit`: its
  interaction probability) and rank."""
  title, _, genre_text = text.partition('::')
  title = title.strip()
  genres = [g.strip() for g in genre_text.split('|') if g.strip()]
  if not title and not genres:
    raise ValueError(f'--new_item={text!r}: expected "Title (year)::'
                     'Genre|Genre".')
  year = side_info.title_year(title)
  try:
    score = recommender.described_item_score(
        user, history, genres, None if np.isnan(year) else year, title)
  except ValueError as e:
    message = str(e)
    raise ValueError(message if message.startswith('--new_item') else
                     f'--new_item={text!r}: {message}') from None
  unrated = np.setdiff1d(np.arange(len(scores)), history.items)
  rank = int(np.sum(scores[unrated] > score)) + 1
  return collections.OrderedDict(
      [('title', title), ('genres', genres),
       ('year', None if np.isnan(year) else int(year)),
       ('probability' if implicit else 'predicted_rating', round(score, 4)),
       ('rank', rank), ('unrated_items', int(unrated.size))])


def _demographic_parts(context, text: str):
  """(the new user's parts, attributes, users fitted over) of
  --demographics (inference/demographics.py).

  Raises:
    ValueError: bad --demographics, or a model without user vectors (one
      line).
  """
  try:
    attributes = demographics.parse(text)
    attribute_map = context.attribute_map()
    return (attribute_map.row(attributes), attributes,
            attribute_map.num_users)
  except ValueError as e:
    raise ValueError(f'--demographics={text!r}: {e}') from None


def _demographics_user(context, parts, attributes, fitted_over: int,
                       k: int) -> dict:
  """--demographics: a new user's recommendations from its attributes
  alone (`parts`, `attributes`, `fitted_over`: `_demographic_parts`)."""
  scores = context.recommender.row_scores(parts)
  items = context.recommender.recommend(scores, [], k)
  return collections.OrderedDict(
      mode='new_user_demographics', demographics=attributes,
      note=(f'a new user known only by {", ".join(attributes)}: user vector '
            'and bias from the attribute-to-vector map fitted over the '
            f'{fitted_over} users of {context.dataset}, items scored by the '
            'trained model'),
      recommendations=_recommendations(context, items, scores))


def run(export_dir: str) -> collections.OrderedDict:
  """Computes the recommendation the flags ask for (JSON-able)."""
  modes = [name for name, given in (
      ('--user_id', _USER_ID.value is not None),
      ('--ratings/--ratings_file', _RATINGS.value is not None or
       _RATINGS_FILE.value is not None),
      ('--group', _GROUP.present)) if given]
  given_ratings = '--ratings/--ratings_file' in modes
  if _DEMOGRAPHICS.value is not None and not given_ratings:
    modes.append('--demographics')  # With ratings: where they start from.
  if len(modes) != 1:
    raise ValueError('Give exactly one of --user_id, --ratings (or '
                     '--ratings_file), --group and --demographics' +
                     (f' (got {", ".join(modes)}).' if modes else '.'))
  if _RATINGS.value is not None and _RATINGS_FILE.value is not None:
    raise ValueError('Give --ratings or --ratings_file, not both.')
  if _K.value < 1:
    raise ValueError(f'--k={_K.value} must be >= 1.')
  k = _K.value
  context = _Context(export_dir,
                     need_corpus=modes[0] in ('--user_id', '--group'))
  recommender = context.recommender
  source = context.exported.user_source
  scored = None  # (user or None, history, scores) of a single scored user.
  result = collections.OrderedDict(
      dataset=context.dataset,
      algorithm=context.exported.metadata.get('algorithm'), k=k)
  if _USER_ID.value is not None:
    user = context.user(_USER_ID.value, '--user_id')
    history = context.history(user)
    scores = recommender.user_scores(user, history)
    items = recommender.recommend(scores, history.items, k)
    result.update(mode='user', user=context.exported.raw_users[user].item(),
                  rated_items=len(history.items))
    what = 'interactions' if context.implicit else 'ratings'
    result['note'] = {
        export_lib.RECONSTRUCT: f'user vector reconstructed locally from the '
                                f'user\'s {len(history.items)} {what}',
        export_lib.USER_TABLE: (
            'user vector and personal item views as the user\'s device keeps '
            'them' if context.device_states is not None else
            'user vector from the trained user table'),
        export_lib.ENCODE: f'the user\'s {len(history.items)} interactions '
                           'encoded by the autoencoder',
    }[source] + (f'; {context.device_note}' if context.device_note else '')
    result['recommendations'] = _recommendations(context, items, scores)
    scored = (user, history, scores)
  elif _DEMOGRAPHICS.value is not None and not given_ratings:
    result.update(_demographics_user(
        context, *_demographic_parts(context, _DEMOGRAPHICS.value), k))
  elif _GROUP.present:
    raws = [r.strip() for r in (_GROUP.value or []) if r.strip()]
    if not raws:
      raise ValueError('--group is empty: list at least one user id.')
    members = []
    for raw in raws:
      member = context.user(raw, '--group')
      if member in members:
        raise ValueError(f'--group lists user {raw} twice.')
      members.append(member)
    histories = [context.history(m) for m in members]
    member_scores = np.stack([recommender.user_scores(m, h)
                              for m, h in zip(members, histories)])
    exclude = np.unique(np.concatenate([h.items for h in histories]))
    items, group = recommender.recommend_group(
        member_scores, exclude, k, _GROUP_STRATEGY.value)
    member_names = [f'user_{context.exported.raw_users[m]}' for m in members]
    result.update(mode='group', strategy=_GROUP_STRATEGY.value,
                  members=[context.exported.raw_users[m].item()
                           for m in members],
                  excluded_items=int(exclude.size))
    rows = _recommendations(context, items, None,
                            dict(zip(member_names, member_scores)))
    for row, item in zip(rows, items):
      row['group_score'] = round(float(group[item]), 4)
    result['recommendations'] = rows
  else:
    history = _parse_new_user(context)
    result.update(mode='new_user', given_ratings=len(history.items))
    start = None
    if _DEMOGRAPHICS.value is not None:
      start, attributes, fitted_over = _demographic_parts(
          context, _DEMOGRAPHICS.value)
      result['demographics'] = attributes
    if len(history.items):  # pylint: disable=g-explicit-length-test
      scores = (recommender.new_user_scores(history) if start is None else
                recommender.new_user_scores_from(history, start))
      result['note'] = (
          f'the new user\'s {len(history.items)} interaction(s) encoded by '
          'the autoencoder' if source == export_lib.ENCODE else
          f'new user reconstructed locally from {len(history.items)} '
          f'rating(s) ({recommender.settings.epochs} epoch(s) of '
          f'{recommender.settings.optimizer}), item model frozen' + (
              f', starting at the vector of its {", ".join(attributes)} '
              f'(the attribute map over {fitted_over} users)'
              if start is not None else ''))
      items = recommender.recommend(scores, history.items, k)
      result['recommendations'] = _recommendations(context, items, scores)
      scored = (None, history, scores)
    elif start is not None:  # No rating: its demographics alone.
      result.update(_demographics_user(context, start, attributes,
                                       fitted_over, k))
    else:
      key, shown, what = recommender.fallback_scores()
      result['note'] = f'no ratings given: ranked by {what}' + (
          ', ties by popularity' if shown is not None else '')
      items = recommender.recommend(key, [], k)
      result['recommendations'] = _recommendations(context, items, shown)
  if _NEW_ITEM.value is not None:
    if scored is None:
      raise ValueError('--new_item scores an item for --user_id or a new '
                       'user with --ratings (at least one rating).')
    result['new_item'] = _score_new_item(recommender, _NEW_ITEM.value,
                                         *scored, implicit=context.implicit)
  if len(result['recommendations']) < k:
    result['note'] = (result.get('note', '') + f'; only '
                      f'{len(result["recommendations"])} unrated items left'
                      ).lstrip('; ')
  return result


def format_table(result) -> str:
  """A readable table of `run`'s result."""
  rows = result['recommendations']
  lines = []
  if result['mode'] == 'user':
    lines.append(f'Top {result["k"]} for user {result["user"]} '
                 f'({result["algorithm"]} on {result["dataset"]}; '
                 f'{result["rated_items"]} rated items excluded):')
  elif result['mode'] == 'group':
    lines.append(f'Top {result["k"]} for the group '
                 f'{",".join(map(str, result["members"]))} '
                 f'({result["strategy"]}; {result["excluded_items"]} items '
                 'rated by a member excluded):')
  elif result['mode'] == 'new_user_demographics':
    described = ', '.join(f'{f} {v}' for f, v in result['demographics'].items())
    lines.append(f'Top {result["k"]} for a new user with no rating, '
                 f'{described} ({result["algorithm"]} on '
                 f'{result["dataset"]}):')
  else:
    lines.append(f'Top {result["k"]} for a new user with '
                 f'{result["given_ratings"]} rating(s) ({result["algorithm"]} '
                 f'on {result["dataset"]}):')
  if rows:
    columns = [c for c in rows[0] if c != 'title'] + ['title']
    lines.append(text_table.format_rows(
        [columns] + [[str(r[c]) for c in columns] for r in rows]))
  if result.get('note'):
    lines.append(f'({result["note"]})')
  if 'new_item' in result:
    new = result['new_item']
    score = (f'probability {new["probability"]}' if 'probability' in new else
             f'predicted rating {new["predicted_rating"]}')
    lines.append(
        f'New item {new["title"] or "(untitled)"} '
        f'[{"|".join(new["genres"]) or "no genres"}]: {score}, rank '
        f'{new["rank"]} of {new["unrated_items"]} unrated items (scored from '
        'its features alone).')
  return '\n'.join(lines)


def run_bandit() -> dict:
  """--bandit_dir: a bandit policy's top K for --user_id, with the parts
  of each score (estimate, exploration bonus)."""
  from research.fedrec.inference import bandit_serving  # pylint: disable=g-import-not-at-top
  if _USER_ID.value is None or _EXPERIMENT_DIR.value or _EXPORT_DIR.value:
    raise ValueError('--bandit_dir serves --user_id alone (no '
                     '--experiment_dir or --export_dir).')
  if _K.value < 1:
    raise ValueError(f'--k={_K.value} must be >= 1.')
  served = bandit_serving.load(_BANDIT_DIR.value, _POLICY.value)
  return bandit_serving.serve(served, _USER_ID.value, _K.value)


def format_bandit(result) -> str:
  """A readable table of `run_bandit`'s result."""
  rows = result['recommendations']
  lines = [f'Top {result["k"]} for user {result["user"]} by '
           f'{result["label"]}:']
  if rows:
    columns = list(rows[0])
    lines.append(text_table.format_rows(
        [columns] + [[str(r[c]) for c in columns] for r in rows]))
  lines.append(f'({result["note"]})')
  return '\n'.join(lines)


def main(argv):
  del argv  # cli.run refuses positional arguments.
  if _BANDIT_DIR.value:
    try:
      result = run_bandit()
    except cli.user_errors() as e:
      cli.fail('recommend.py', e)
    print(json.dumps(result, indent=2) if _FORMAT.value == 'json' else
          format_bandit(result))
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  try:
    if bool(_EXPERIMENT_DIR.value) == bool(_EXPORT_DIR.value):
      raise ValueError('Give one of --experiment_dir (a run written by '
                       'train.py) and --export_dir.')
    export_dir = _EXPORT_DIR.value or os.path.join(
        _EXPERIMENT_DIR.value, export_lib.EXPORT_DIRNAME)
    if _EXPERIMENT_DIR.value and not os.path.isdir(_EXPERIMENT_DIR.value):
      raise ValueError(f'--experiment_dir={_EXPERIMENT_DIR.value}: no such '
                       'directory.')
    result = run(export_dir)
  except cli.user_errors() as e:  # A user mistake or an I/O failure.
    cli.fail('recommend.py', e)
  if _FORMAT.value == 'json':
    print(json.dumps(result, indent=2))
  else:
    print(format_table(result))


if __name__ == '__main__':
  cli.run(main, 'recommend.py')
