"""FedMF: federated matrix factorization with the user embedding kept on the
device (Chai et al., "Secure Federated Matrix Factorization", IEEE
Intelligent Systems 2020; the FedMF rows of the PFedRec paper, IJCAI 2023).

Each user's vector p_u and bias b_u live on its device from round to round
(algorithms/client_states.py): a visit starts from them, not from a fresh
vector as Federated Reconstruction's does. Each local batch takes one step of
the client optimizer on both the user's own part and its copies of the item
rows it met (and the item biases and global bias), and only the item side's
update is sent; the server averages it (weighted by examples, or uniformly)
and applies it with its optimizer. See algorithms/stateful.py for the round.
Chai et al. encrypt the gradients homomorphically; fedrec's equivalent
protections are secure summation and user-level DP, by flag.
"""

from research.fedrec.algorithms import stateful


class FedMF(stateful.StatefulMethod):
  """The method object of FedMF (see the module doc)."""

  name = 'fedmf'
  label = 'FedMF'

  def rules(self, settings: dict) -> stateful.Rules:
    del settings
    return stateful.Rules()


METHOD = FedMF()
