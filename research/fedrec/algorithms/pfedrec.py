"""PFedRec: dual personalization (Zhang et al., "Dual Personalization on
Federated Recommendation", IJCAI 2023; official code Zhangcx19/IJCAI-23-PFedRec).

Their model is an item embedding table and, per user, a score function (a
linear layer with a bias and a sigmoid) that never leaves the device. On
fedrec's MF the score function is the user's vector p_u and bias b_u (the
linear layer's weight and bias), kept on the device between rounds; fedrec's
MF also has item biases and a global bias, trained as the item side (theirs
has neither).

As their `engine.py` trains a client (followed here, where it differs from
the paper's text):

* each local batch takes two steps: one on the score function with the item
  embeddings frozen, then, recomputing the loss with the updated score
  function, one on the item embeddings (`fed_train_single_batch`);
* the item embeddings' learning rate is the client rate times
  `--item_learning_rate_scale` (theirs: lr x num_items x lr_eta = 0.1 x 1682
  x 80 on ML-100K; fedrec's item biases take it too);
* the server averages the item embeddings uniformly over the round's users
  (`aggregate_clients_params`; fedrec: `--uniform_weighting`, server SGD at
  rate 1) and sends them back; the user's score function stays local;
* their loss is torch's BCELoss of the model's float32 sigmoid outputs, not
  of logits: a saturated score passes (almost) no gradient. fedrec computes
  it from the logits unless `--probability_loss` asks for theirs;
* dual personalization: each user keeps its item embeddings as fine-tuned by
  its last local training and scores with them (`fed_evaluate` loads each
  user's stored parameters, item embeddings included); the next round starts
  from the server's embeddings again.

See algorithms/stateful.py for the round and the device-side states.
"""

from research.fedrec.algorithms import stateful


class PFedRec(stateful.StatefulMethod):
  """The method object of PFedRec (see the module doc)."""

  name = 'pfedrec'
  label = 'PFedRec'

  def rules(self, settings: dict) -> stateful.Rules:
    return stateful.Rules(
        alternating=True,
        item_learning_rate_scale=float(settings['item_learning_rate_scale']),
        personal_items=True,
        probability_loss=bool(settings['probability_loss']))

  def validate(self, config) -> None:
    super().validate(config)
    if (config.method_settings['probability_loss'] and
        config.data.feedback.value != 'implicit'):
      raise ValueError('--probability_loss is a loss of implicit feedback '
                       '(--feedback=implicit).')


METHOD = PFedRec()
