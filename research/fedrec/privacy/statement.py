"""The plain-language privacy statement of a training run."""

from typing import Optional


def privacy_statement(method_note: str, mechanism: str,
                      epsilon: Optional[float] = None,
                      delta: Optional[float] = None,
                      rounds: Optional[int] = None,
                      sampling: Optional[str] = None,
                      accountant: Optional[str] = None,
                      unit: str = 'user') -> str:
  """What is protected, by how much, and what is not covered.

  `method_note` is what the training method adds (`registry.privacy_note`).
  `unit`: 'user', or 'silo' for silo-level DP of cross-silo rounds (each
  silo's update clipped as one record).
  """
  if mechanism == 'none':
    text = ('No differential privacy: the trained model carries no formal '
            'guarantee about any user\'s ratings.')
  elif unit == 'silo':
    text = (
        f'Silo-level ({epsilon:.3g}, {delta:.3g})-differential privacy for the '
        f'trained global model after {rounds} rounds ({mechanism} clipping of '
        f'each silo\'s update, Gaussian noise; {accountant.upper()} '
        'accounting, every silo in every round, no sampling amplification). '
        'The protected '
        'unit is one silo\'s entire data, all of its users\' ratings: the '
        'distribution of everything the server sees and releases changes by '
        'at most that much when replacing one silo by another, and so for any '
        'one user in it (no better). It '
        'assumes the simulated noise is the real one and stays secret from '
        'the silos.')
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
    if unit == 'user_in_silos':
      text += (' In cross-silo rounds each user\'s update is clipped inside '
               'its silo before the silo sums them, so the bound holds for any '
               'one user across all silos (' + (
                   'each user drawn inside its silo by Poisson sampling).'
                   if sampling == 'poisson' else
                   'every user in every round: no sampling amplification).'))
  text += method_note
  text += (' Not covered: choosing hyperparameters (including these) on the '
           'same users, the centralized baseline and evaluation, which read '
           'raw ratings, and reconstructed embeddings, which stay on the '
           'clients.')
  return text
