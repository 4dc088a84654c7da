"""Each method's client data: the batches its model consumes, and their types.

The per-client preprocessing of FedRecon (training batches of item ids, or
with implicit feedback of items and their local epoch; evaluation batches with
a query flag) and of FedAvg / FedProx (batches of (user, item) pairs, or one
multi-hot vector per user for a model of user vectors), built from the
building blocks of data/pipelines.py, and the element types (`*_SPEC`) the
TFF models are given.
"""

import collections

import tensorflow as tf

from research.fedrec.data import pipelines


def _element_spec(batch: bool, with_user: bool, with_query_flag: bool):
  shape = [None] if batch else []
  x = collections.OrderedDict(item=tf.TensorSpec(shape, tf.int64))
  if with_user:
    x['user'] = tf.TensorSpec(shape, tf.int64)
  if with_query_flag:
    x['is_query'] = tf.TensorSpec(shape, tf.int64)
  if not with_user and not with_query_flag:
    x = x['item']
  return collections.OrderedDict(x=x, y=tf.TensorSpec(shape, tf.float32))


# Batches fed to the models: FedRecon training, FedRecon evaluation (the query
# flag tells reconstruction ratings from scored ones) and FedAvg.
RECON_TRAIN_SPEC = _element_spec(True, with_user=False, with_query_flag=False)
RECON_EVAL_SPEC = _element_spec(True, with_user=False, with_query_flag=True)
FEDAVG_SPEC = _element_spec(True, with_user=True, with_query_flag=False)
# Implicit FedRecon training: each batch carries its local epoch, so one client
# dataset holds the reconstruction epochs and then the training epochs, each
# with freshly drawn negatives (see `create_implicit_recon_train_fn`).
RECON_IMPLICIT_TRAIN_SPEC = collections.OrderedDict(
    x=collections.OrderedDict(item=tf.TensorSpec([None], tf.int64),
                              epoch=tf.TensorSpec([None], tf.int64)),
    y=tf.TensorSpec([None], tf.float32))


def user_vector_spec(num_items: int):
  """Batches of users: `(x=[batch, items] inputs, y=[batch, items] labels)`."""
  return collections.OrderedDict(
      x=tf.TensorSpec([None, num_items], tf.float32),
      y=tf.TensorSpec([None, num_items], tf.float32))


def create_recon_train_fn(config: pipelines.PipelineConfig):
  """Raw ratings -> FedRecon training batches `(x=item, y=rating)`.

  Epochs are applied by FedRecon's dataset split function, not here.
  """
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return pipelines.shuffled(dataset, config).batch(config.batch_size).map(
        lambda e: collections.OrderedDict(x=e['item'], y=e['rating']))
  return preprocess

def create_recon_eval_fn(config: pipelines.PipelineConfig):
  """Raw ratings -> evaluation batches `(x={item, is_query}, y=rating)`.

  `max_examples_per_user` is applied to the support ratings by the evaluation
  split function (`fed_recon.create_eval_split_fn`), not here.
  """
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.batch(config.batch_size).map(
        lambda e: collections.OrderedDict(
            x=collections.OrderedDict(item=e['item'], is_query=e['is_query']),
            y=e['rating']))
  return preprocess

def create_fedavg_train_fn(config: pipelines.PipelineConfig):
  """Raw ratings -> FedAvg batches `(x={item, user}, y=rating)`, repeated."""
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    dataset = pipelines.shuffled(dataset, config).repeat(config.local_epochs)
    return dataset.batch(config.batch_size).map(
        lambda e: collections.OrderedDict(
            x=collections.OrderedDict(item=e['item'], user=e['user']),
            y=e['rating']))
  return preprocess

def split_support_query(dataset: tf.data.Dataset,
                        config: pipelines.PipelineConfig):
  """Splits evaluation batches into (support, query) rating batches.

  Both keep the input order; support is shuffled and capped as in training.
  Returns datasets of `(x=item, y=rating)` batches.
  """
  flat = dataset.unbatch()

  def part(is_query: int) -> tf.data.Dataset:
    return flat.filter(lambda e: tf.equal(e['x']['is_query'], is_query)).map(
        lambda e: collections.OrderedDict(x=e['x']['item'], y=e['y']))

  support = pipelines.shuffled(part(0), config).batch(config.batch_size)
  query = part(1).batch(config.batch_size)
  return support, query

def create_implicit_recon_train_fn(config: pipelines.PipelineConfig,
                                   num_items: int,
                                   recon_epochs: int, post_recon_epochs: int,
                                   split_dataset: bool = False):
  """Positives -> FedRecon batches `(x={item, epoch}, y=label)`.

  Epochs [0, recon_epochs) are for reconstruction and the next
  `post_recon_epochs` for training (`fed_recon` splits them by `epoch`); with
  `split_dataset`, reconstruction sees the even-positioned positives and
  training the odd ones.
  """
  def make_epoch(rows, epoch, positives, negatives, seed):
    del rows
    if split_dataset:
      start = tf.where(epoch < recon_epochs, 0, 1)
      positives = positives[start::2]
      negatives = negatives[:tf.size(positives) * config.num_negatives]
    items, labels = pipelines.labelled(positives, negatives, seed)
    epochs = tf.fill(tf.shape(items), tf.cast(epoch, tf.int64))
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=collections.OrderedDict(item=items, epoch=epochs),
        y=labels)).batch(config.batch_size)

  return pipelines.each_epoch(config, num_items,
                              recon_epochs + post_recon_epochs,
                 make_epoch)


def create_implicit_fedavg_train_fn(config: pipelines.PipelineConfig,
                                    num_items: int):
  """Positives -> FedAvg batches `(x={item, user}, y=label)`, local epochs."""
  def make_epoch(rows, epoch, positives, negatives, seed):
    del epoch
    items, labels = pipelines.labelled(positives, negatives, seed)
    users = tf.fill(tf.shape(items), rows['user'][0])
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=collections.OrderedDict(item=items, user=users),
        y=labels)).batch(config.batch_size)

  return pipelines.each_epoch(config, num_items, config.local_epochs,
                              make_epoch)


def create_user_vector_train_fn(config: pipelines.PipelineConfig,
                                 num_items: int):
  """Positives -> examples of a model of user vectors (U-AutoRec), per epoch.

  `x` is the multi-hot vector of all the client's training items; `y` labels
  the (capped) positives 1, that epoch's negatives 0 and everything else -1.
  """
  def make_epoch(rows, epoch, positives, negatives, seed):
    del epoch, seed
    known = tf.scatter_nd(rows['item'][:, None],
                          tf.ones_like(rows['item'], tf.float32), [num_items])
    labels = tf.fill([num_items], -1.0)
    labels = tf.tensor_scatter_nd_update(
        labels, negatives[:, None], tf.zeros_like(negatives, tf.float32))
    labels = tf.tensor_scatter_nd_update(
        labels, positives[:, None], tf.ones_like(positives, tf.float32))
    return tf.data.Dataset.from_tensors(collections.OrderedDict(
        x=tf.minimum(known, 1.0), y=labels)).batch(1)

  return pipelines.each_epoch(config, num_items, config.local_epochs,
                              make_epoch)
