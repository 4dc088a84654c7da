"""Models' scores for a cohort of users, each user with its own parameters.

A cohort client work (e.g. fed_avg_cohort.py) holds, for each of K users, its
own copy of every parameter it trains. A model's cohort scorer computes one
training step's logits (or predicted ratings) and L2 terms for all K users at
once from those copies, exactly as the model's Keras layers compute them for
one user's batch:

  scores(config, params, inputs) -> (prediction [K, B], squares [K, B])

`params` maps each trainable weight's name (its layer's name for a layer of
one weight, e.g. 'item_embedding', 'global_bias'; else `<layer>/<weight>`,
e.g. 'mlp_0/kernel') to the users' copies: a row of a user table as
[K, ...], the rows of the step's items of an item table as [K, B, ...], any
other weight (dense layers, the global bias) as [K, ...]: a dense layer
x W + b becomes the batched matmul einsum('kbi,kio->kbo', x, W) + b. A
weight that every user of the cohort holds at the same value (the global
side, frozen while FedRecon reconstructs) may be given once, unstacked
([...]): its products are then one matmul over the whole cohort
(einsum('kbi,io->kbo', x, W)). `squares` is each example's
sum of squares of its (user, item) embeddings, the model's per-example L2
(`mf.PairL2`). `inputs` holds what a model reads besides its parameters
(U-AutoRec: each user's vector `x` [K, items]; MF with item features: the
step's item ids `items` [K, B] and real positions `mask` [K, B]; id models:
nothing).

A model runs in cohorts once its scorer is registered here (`SCORERS`, by
--model name); the exactness tests compare it with the per-client process.
"""

import tensorflow as tf


def weight_names(keras_model) -> dict:
  """`id(weight)` -> its name in `params`, for each trainable weight."""
  names = {}
  for layer in keras_model.layers:
    weights = layer.trainable_weights
    for weight in weights:
      short = weight.name.split('/')[-1].split(':')[0]
      names[id(weight)] = (layer.name if len(weights) == 1 else
                           f'{layer.name}/{short}')
  return names


def _squares(vectors):
  """Per-example sums of squares of user [K, d] and item [K, B, d] vectors."""
  total = 0.0
  for vector in vectors:
    square = tf.reduce_sum(tf.square(vector), axis=-1)
    total += square[:, None] if vector.shape.rank == 2 else square
  return total


def _times(x, weight, spec: str):
  """einsum `spec` (e.g. 'kbi,io->kbo') of `x` and the cohort's one `weight`,
  or of each user's copy of it ([K, ...]: 'kbi,kio->kbo')."""
  inputs, output = spec.split('->')
  x_spec, weight_spec = inputs.split(',')
  if weight.shape.rank > len(weight_spec):
    spec = f'{x_spec},k{weight_spec}->{output}'
  return tf.einsum(spec, x, weight)


def _bias(bias, rank: int):
  """`bias` broadcast against [K, B, ...]: each user's ([K, ...], of
  `rank`) gets an axis for B; the cohort's one ([...]) broadcasts as is."""
  return bias[:, None] if bias.shape.rank == rank else bias


@tf.autograph.experimental.do_not_convert
def mf_scores(config, params, inputs=None):
  """Matrix factorization (models/mf.py, the classic layout's names)."""
  del inputs
  user = params['user_embedding']
  rows = params['item_embedding']
  prediction = tf.reduce_sum(user[:, None, :] * rows, axis=-1)
  pair = [user, rows]
  if config.use_biases:
    user_bias = params['user_bias']  # [K, 1]
    row_biases = params['item_bias']  # [K, B, 1]
    prediction += (user_bias + row_biases[..., 0] +
                   _bias(params['global_bias'], 1))
    pair += [user_bias, row_biases]
  return prediction, _squares(pair)


def _dense(inputs, params, name: str):
  """Dense layer `name` (each user's copy, or the cohort's one) on each
  user's batch [K, B, in]."""
  return (_times(inputs, params[f'{name}/kernel'], 'kbi,io->kbo') +
          _bias(params[f'{name}/bias'], 2))


@tf.autograph.experimental.do_not_convert
def ncf_scores(config, params, inputs=None):
  """GMF, MLP or NeuMF (models/ncf.py): the logit of each example."""
  del inputs
  return _ncf(config, params, lambda tower: params[f'{tower}_item_embedding'])


def _ncf(config, params, item_rows):
  """NCF's logits and squares, each tower's item rows [K, B, d] from
  `item_rows(tower)` ('gmf' or 'mlp')."""
  towers, pair = [], []
  if 'gmf_user_embedding' in params:
    user = params['gmf_user_embedding']
    rows = item_rows('gmf')
    towers.append(user[:, None, :] * rows)
    pair += [user, rows]
  if 'mlp_user_embedding' in params:
    user = params['mlp_user_embedding']
    rows = item_rows('mlp')
    hidden = tf.concat([
        tf.tile(user[:, None, :], [1, tf.shape(rows)[1], 1]), rows], axis=-1)
    for index in range(len(config.mlp_layers)):
      hidden = tf.nn.relu(_dense(hidden, params, f'mlp_{index}'))
    towers.append(hidden)
    pair += [user, rows]
  joined = towers[0] if len(towers) == 1 else tf.concat(towers, axis=-1)
  return _dense(joined, params, 'logit')[..., 0], _squares(pair)


@tf.autograph.experimental.do_not_convert
def autorec_scores(config, params, inputs):
  """U-AutoRec (models/autorec.py): every item's logit for each user.

  A "batch" is the user's one example, so B is the number of items: the
  prediction is [K, items], and `squares` carries each user's sum of squares
  of its two kernels (the Keras L2 of the whole model) at every entry, so
  that its masked mean (`cohort_work.masked_losses`) is that sum itself.
  """
  encoder, decoder = params['encoder/kernel'], params['decoder/kernel']
  hidden = tf.sigmoid(tf.einsum('kn,knh->kh', inputs['x'], encoder) +
                      params['encoder/bias'])
  logits = (tf.einsum('kh,khn->kn', hidden, decoder) +
            params['decoder/bias'])
  if not config.l2:
    return logits, tf.zeros_like(logits)
  squares = (tf.reduce_sum(tf.square(encoder), axis=[1, 2]) +
             tf.reduce_sum(tf.square(decoder), axis=[1, 2]))
  return logits, tf.broadcast_to(squares[:, None], tf.shape(logits))


def id_keep(config, items, mask):
  """[K, B] 1.0 where an example keeps its item's id part under id dropout
  (`mf_features.IdDropout` of each user's batch: its real positions, `mask`,
  in order; the mask a stateless function of the seed and the batch's
  items, so each user's is the per-client one)."""
  if not config.id_dropout:
    return tf.ones_like(mask)
  ids = tf.cast(items, tf.int64)
  inside = tf.cast(mask > 0, tf.int64)
  batch_key = (tf.reduce_sum(inside * ids * (ids + 7), axis=1) +
               tf.reduce_sum(inside, axis=1))
  seeds = tf.stack([tf.fill(tf.shape(batch_key),
                            tf.constant(config.seed, tf.int64)),
                    batch_key], axis=1)
  width = tf.shape(items)[1]
  # A batch's real positions come first, so each user's draws are the
  # first of `width` draws from its seed (Philox: a prefix of the same).
  draws = tf.map_fn(
      lambda seed: tf.random.stateless_uniform([width], seed=seed), seeds,
      fn_output_signature=tf.float32)
  return tf.cast(draws >= config.id_dropout, tf.float32)


@tf.autograph.experimental.do_not_convert
def mf_features_scores(config, params, inputs):
  """MF with item features (models/mf_features.py): an item's vector and
  bias are its id part (under id dropout while training) plus the learned
  projection of its feature row, a constant of the config. `inputs`: the
  step's `items` [K, B] and `mask` [K, B] (its real positions)."""
  items = inputs['items']
  keep = id_keep(config, items, inputs['mask'])
  features = tf.gather(tf.constant(config.features), items)  # [K, B, F]
  user = params['user_embedding']
  rows = (params['item_embedding'] * keep[..., None] + _times(
      features, params['feature_projection'], 'kbf,fd->kbd'))
  prediction = tf.reduce_sum(user[:, None, :] * rows, axis=-1)
  pair = [user, rows]
  if config.use_biases:
    user_bias = params['user_bias']  # [K, 1]
    row_biases = (params['item_bias'][..., 0] * keep + _times(
        features, params['feature_bias'][..., 0], 'kbf,f->kb'))
    prediction += user_bias + row_biases + _bias(params['global_bias'], 1)
    pair += [user_bias, row_biases[..., None]]
  return prediction, _squares(pair)


@tf.autograph.experimental.do_not_convert
def neumf_features_scores(config, params, inputs):
  """NeuMF with item features (models/ncf_features.py): each tower's item
  vector is its id part (under one id dropout mask for both towers) plus
  its projection of the item's feature row. `inputs` as
  `mf_features_scores`'s."""
  items = inputs['items']
  keep = id_keep(config, items, inputs['mask'])[..., None]
  features = tf.gather(tf.constant(config.features), items)  # [K, B, F]
  return _ncf(config, params, lambda tower: (
      params[f'{tower}_item_embedding'] * keep + _times(
          features, params[f'{tower}_feature_projection'], 'kbf,fd->kbd')))


# --model name -> scorer.
SCORERS = {'mf': mf_scores, 'gmf': ncf_scores, 'mlp': ncf_scores,
           'neumf': ncf_scores, 'autorec': autorec_scores,
           'mf_features': mf_features_scores,
           'neumf_features': neumf_features_scores}
