"""Traces TFF's model methods into the client's computation, not as calls.

TFF declares `forward_pass` (and Keras FedAvg's `predict_on_batch`) as
`tf.function`s. Inside a client's dataset `reduce`, each becomes a nested
function call, and TF's runtime instantiates and graph-optimizes every nested
function again whenever the reduce runs: once per client per round. Profiling
a 100-client FedRecon round (perf on TFF's `worker_binary`) put about a fifth of
the round in that instantiation. The plain Python bodies build the same ops,
traced once into the reduce function, so results are unchanged.

It also fixes FedAvg with a regularized model: TFF's `forward_pass` reads the
Keras model's `add_loss` terms, which a separate `predict_on_batch` function
graph would hide from it ("tensor is out of scope").
"""

import types


def inline_tf_functions(model, names):
  """Replaces `model`'s `tf.function` methods `names` by their Python bodies."""
  for name in names:
    function = getattr(type(model), name)
    setattr(model, name, types.MethodType(function.python_function, model))
  return model
