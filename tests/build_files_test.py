"""Keeps the Bazel BUILD files complete: every module and test has a target."""

import ast
import os
import re

from absl.testing import absltest

# realpath: under Bazel, follow the runfiles symlink back to the source tree.
_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# A test module marks slow tests with the decorator or a module `pytestmark`.
_SLOW = re.compile(
    r'^ *(@pytest\.mark\.slow|pytestmark = pytest\.mark\.slow)$', re.MULTILINE)


def _target_args(build_file, rule):
  """name -> {srcs, size} of every `rule(...)` in a BUILD file."""
  with open(build_file) as f:
    tree = ast.parse(f.read())
  found = {}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and
        node.func.id == rule):
      args = {k.arg: ast.literal_eval(k.value) for k in node.keywords
              if k.arg in ('name', 'srcs', 'size')}
      found[args.pop('name')] = args
  return found


def _targets(build_file, rule):
  """(name, srcs) of every `rule(...)` in a BUILD file."""
  return {name: args.get('srcs', [])
          for name, args in _target_args(build_file, rule).items()}


def _python_files(top, pattern):
  for folder, _, files in os.walk(os.path.join(_ROOT, top)):
    for name in files:
      if re.fullmatch(pattern, name):
        yield os.path.join(folder, name)


class BuildFilesTest(absltest.TestCase):

  def _assert_covered(self, top, pattern, rules):
    missing = []
    for path in _python_files(top, pattern):
      folder, name = os.path.split(path)
      build = os.path.join(folder, 'BUILD')
      srcs = []
      if os.path.exists(build):
        for rule in rules:
          for target_srcs in _targets(build, rule).values():
            srcs += target_srcs
      if name not in srcs:
        missing.append(os.path.relpath(path, _ROOT))
    self.assertEmpty(missing, f'no {"/".join(rules)} target for these')

  def test_every_test_module_has_a_py_test(self):
    self._assert_covered('tests', r'.+_test\.py', ['py_test'])

  def test_every_library_module_has_a_target(self):
    self._assert_covered('research/fedrec', r'(?!__init__).+\.py',
                         ['py_library', 'py_binary'])

  def test_bazel_sizes_mirror_the_slow_marker(self):
    # `bazel test --test_size_filters=small //tests/...` is the fast subset:
    # a module with any test marked slow is medium or large, the others
    # small.
    wrong = []
    for build in _python_files('tests', 'BUILD'):
      for name, args in _target_args(build, 'py_test').items():
        (src,) = args['srcs']
        with open(os.path.join(os.path.dirname(build), src)) as f:
          slow = bool(_SLOW.search(f.read()))
        if (args.get('size') == 'small') == slow:
          wrong.append(f'{os.path.relpath(build, _ROOT)}:{name} '
                       f'size={args.get("size")} slow={slow}')
    self.assertEmpty(wrong)

  def test_test_helpers_have_a_py_library(self):
    self._assert_covered('tests', r'(?!__init__|conftest)(?!.*_test\.py).+\.py',
                         ['py_library'])


if __name__ == '__main__':
  absltest.main()
