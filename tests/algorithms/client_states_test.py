"""The device-side store of users' local states: writes, snapshots, restore."""

import os

from absl.testing import absltest
import numpy as np

from research.fedrec.algorithms import client_states

_SPECS = {'user_embedding': (2,), 'personal/item_bias': (3, 1),
          'visited': ()}


class ClientStatesTest(absltest.TestCase):

  def _store(self, seed=1):
    store = client_states.ClientStates(
        os.path.join(self.create_tempdir().full_path, 'states'), _SPECS, 4,
        seed, stddev={'user_embedding': 0.5})
    store.reset()
    return store

  def test_initial_values_are_seeded_normal_or_zero(self):
    store = self._store()
    first = store.view()
    self.assertEqual(first['user_embedding'].shape, (4, 2))
    self.assertEqual(first['personal/item_bias'].shape, (4, 3, 1))
    np.testing.assert_array_equal(first['user_embedding'],
                                  store.initial_value('user_embedding'))
    np.testing.assert_array_equal(first['user_embedding'],
                                  self._store(seed=1).view()['user_embedding'])
    self.assertFalse(np.array_equal(
        first['user_embedding'], self._store(seed=2).view()['user_embedding']))
    np.testing.assert_array_equal(first['visited'], np.zeros(4))

  def test_scatter_writes_only_the_given_users(self):
    store = self._store()
    before = store.view()['user_embedding'].copy()
    store.scatter([2, 0], {'user_embedding': np.array([[1., 2.], [3., 4.]])})
    after = store.gather([0, 1, 2], ['user_embedding'])['user_embedding']
    np.testing.assert_array_equal(after, [[3., 4.], before[1], [1., 2.]])
    with self.assertRaisesRegex(ValueError, 'twice'):
      store.scatter([1, 1], {'visited': np.ones(2)})

  def test_restore_gives_the_saved_states_and_selection(self):
    store = self._store()
    store.scatter([1], {'visited': np.ones(1)})
    store.select(3)
    store.scatter([1], {'user_embedding': np.array([[9., 9.]])})
    store.save(4)
    saved = {n: a.copy() for n, a in store.view().items()}
    selected = {n: a.copy() for n, a in store.view(selected=True).items()}
    store.scatter([0, 1], {'user_embedding': np.zeros((2, 2))})
    store.select(5)
    store.restore(4)
    self.assertEqual(store.selected_round, 3)
    for name in _SPECS:
      np.testing.assert_array_equal(store.view()[name], saved[name])
      np.testing.assert_array_equal(store.view(selected=True)[name],
                                    selected[name])
    self.assertEqual(selected['user_embedding'][1].tolist(),
                     store.initial_value('user_embedding')[1].tolist())

  def test_unchanging_files_are_shared_not_copied(self):
    store = self._store()

    def folder_bytes(folder):
      path = os.path.join(store.directory, folder)
      return sum(os.path.getsize(os.path.join(path, f))
                 for f in os.listdir(path))

    one_copy = folder_bytes(client_states.CURRENT)
    # In copies of the states (a snapshot's selected_round file is 2 bytes).
    copies = lambda: store.disk_bytes() // one_copy
    self.assertEqual(store.disk_bytes(), one_copy)
    store.scatter([1], {'user_embedding': np.array([[1., 2.]])})
    store.select(2)
    store.save(2)  # Right after the selection: current is the selected copy.
    self.assertEqual(copies(), 2)
    for folder in (client_states.CURRENT, client_states.SELECTED):
      for name in os.listdir(os.path.join(store.directory, 'round_2', folder)):
        self.assertTrue(os.path.samefile(
            os.path.join(store.directory, 'round_2', folder, name),
            os.path.join(store.directory, client_states.SELECTED, name)))
    saved = {n: a.copy() for n, a in store.view().items()}
    store.scatter([1, 3], {'user_embedding': np.array([[5., 6.], [7., 8.]])})
    store.save(3)  # Changed since: a copy of its own.
    self.assertEqual(copies(), 3)
    store.scatter([0], {'visited': np.ones(1)})
    store.select(4)
    store.save(4)
    store.scatter([2], {'visited': np.ones(1)})
    store.save(5)  # Round 2's snapshot is dropped.
    self.assertEqual(store.saved_rounds(), [3, 4, 5])
    # The live states; the selected copy of round 4 (also round 4's
    # current); round 3's current and the selection it keeps (round 2's,
    # still linked); round 5's current. Copied, not linked: 8 copies.
    self.assertEqual(copies(), 5)
    # Writing the live states never reaches a snapshot or the selection.
    store.restore(4)
    store.restore(3)
    self.assertEqual(store.selected_round, 2)
    for name in _SPECS:
      np.testing.assert_array_equal(store.view(selected=True)[name],
                                    saved[name])
    self.assertEqual(store.view()['user_embedding'][3].tolist(), [7., 8.])
    store.scatter([3], {'user_embedding': np.array([[0., 0.]])})
    np.testing.assert_array_equal(
        store.snapshot(3)['user_embedding'][3], [7., 8.])

  def test_old_snapshots_are_dropped(self):
    store = self._store()
    for round_num in range(1, 6):
      store.save(round_num)
    self.assertEqual(store.saved_rounds(),
                     [3, 4, 5][-client_states.KEEP_SNAPSHOTS:])

  def test_missing_or_foreign_snapshot_is_one_line(self):
    store = self._store()
    with self.assertRaisesRegex(ValueError, 'round 7 are missing'):
      store.restore(7)
    other = client_states.ClientStates(store.directory,
                                       {'user_embedding': (5,)}, 4, 1)
    store.save(2)
    with self.assertRaisesRegex(ValueError, r'has shape \(4, 2\)'):
      other.restore(2)


if __name__ == '__main__':
  absltest.main()
