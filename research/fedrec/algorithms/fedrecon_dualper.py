"""FedRecon + DualPer: Federated Reconstruction with PFedRec's dual
personalization (Zhang et al., IJCAI 2023, Table 3: "FedRecon" with the
dual personalization mechanism added; ML-100K HR@10 70.20, NDCG@10 41.83).

FedRecon's user part is local already: every visit rebuilds it from its
initial value (`--recon_epochs` of the reconstruction optimizer, the item
side frozen) and then trains the user's copies of the item side with it
frozen (`--post_recon_epochs`), as `--algorithm=fedrecon` does. Dual
personalization adds what PFedRec keeps on the device: the item rows the
user fine-tuned become its personal view of the item table, and the user is
scored with them and with the user part rebuilt on its last visit, both kept
on the device (algorithms/client_states.py). The next visit starts from the
server's item side and a fresh user part again. Only the item side's update
leaves the device, weighted, clipped per user under DP and averaged as
FedRecon's. See algorithms/stateful.py for the round.

Where PFedRec's paper says how the mechanism joins another method only in
outline, this follows FedRecon's own training (reconstruction, then the item
side with the user part frozen) and PFedRec's evaluation (each user with its
stored parameters, item embeddings included).
"""

from research.fedrec.algorithms import stateful


class FedReconDualPer(stateful.StatefulMethod):
  """The method object of FedRecon + DualPer (see the module doc)."""

  name = 'fedrecon_dualper'
  label = 'FedRecon+DualPer'

  def rules(self, settings: dict) -> stateful.Rules:
    return stateful.Rules(
        item_learning_rate_scale=float(settings['item_learning_rate_scale']),
        personal_items=True, reconstruct=True)


METHOD = FedReconDualPer()
