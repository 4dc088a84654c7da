"""The plain-language privacy statement of a training run."""

from typing import Optional


def privacy_statement(method_note: str, mechanism: str,
                      epsilon: Optional[float] = None,
                      delta: Optional[float] = None,
                      rounds: Optional[int] = None,
                      sampling: Optional[str] = None,
                      accountant: Optional[str] = None) -> str:
  """What is protected, by how much, and what is not covered.

  `method_note` is what the training method adds (`registry.privacy_note`).
  """
  if mechanism == 'none':
    text = ('No differential privacy: the trained model carries no formal '
            'guarantee about any user\'s ratings.')
  else:
    relation = ('adding or removing one user' if sampling == 'poisson' else
                'replacing one user by another')
    text = (
        f'User-level ({epsilon:.3g}, {delta:.3g})-differential privacy for the '
        f'trained global model after {rounds} rounds ({mechanism} clipping, '
        f'Gaussian noise; {accountant.upper()} accounting of {sampling} client '
        f'sampling). The protected unit is one user\'s entire rating history: '
        f'the distribution of everything the server sees and releases changes '
        f'by at most that much when {relation}. It assumes the simulated '
        'sampling and noise are the real ones and that the noise stays secret '
        'from clients.')
  text += method_note
  text += (' Not covered: choosing hyperparameters (including these) on the '
           'same users, the centralized baseline and evaluation, which read '
           'raw ratings, and reconstructed embeddings, which stay on the '
           'clients.')
  return text
