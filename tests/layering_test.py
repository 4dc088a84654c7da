"""The library's layers: which package may import which (imports read, not run).

data/ is the bottom (it must not reach up into models/, algorithms/,
training/ or reporting/); models/ are Keras only (no TFF, no evaluation/,
algorithms/, training/ or reporting/); the building blocks (algorithms/,
evaluation/, inference/, privacy/) never import the orchestration (training/)
or reporting/ (tables, benchmarks, plots); training/ draws plots but never
runs tables or benchmarks; no library module reads flags or imports a
binary: only the binaries (and utils/cli.py, their start-up) use absl.flags.
"""

import ast
import os

from absl.testing import absltest

from tests import binaries

_PACKAGE = 'research.fedrec'
_LIBRARY = os.path.join(binaries.REPO_ROOT, 'research', 'fedrec')
# The binaries and their start-up helper.
_BINARIES = ('train', 'bandit', 'evaluate', 'recommend', 'benchmark', 'reproduce',
             'privacy.__main__')
_FLAG_USERS = tuple(f'{_PACKAGE}.{b}' for b in _BINARIES) + (
    f'{_PACKAGE}.utils.cli',)
# Package -> the imports (module name prefixes) it must not have.
_ORCHESTRATION = tuple(f'{_PACKAGE}.{p}' for p in ('training', 'reporting'))
_FORBIDDEN = {
    'data': tuple(f'{_PACKAGE}.{p}' for p in ('models', 'algorithms',
                                               'training', 'reporting')),
    'models': tuple(f'{_PACKAGE}.{p}' for p in ('evaluation', 'algorithms',
                                                 'training', 'reporting')) + (
                                                     'tensorflow_federated',),
    # The building blocks never reach up into orchestration or reporting.
    'algorithms': _ORCHESTRATION,
    'evaluation': _ORCHESTRATION,
    'inference': _ORCHESTRATION,
    'privacy': _ORCHESTRATION,
    # Orchestration draws its plots but never runs tables or benchmarks.
    'training': tuple(f'{_PACKAGE}.reporting.{m}' for m in ('reproduction',
                                                            'benchmarking')),
}
_EVERYWHERE = ('absl.flags',) + tuple(f'{_PACKAGE}.{b}' for b in _BINARIES)


def _imports(source: str) -> list[tuple[int, str]]:
  """(line, module) of every import in `source`, `from a import b` as a.b."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      found += [(node.lineno, f'{node.module}.{alias.name}')
                for alias in node.names]
  return found


def _matches(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + '.')


def violations(module: str, source: str) -> list[str]:
  """`path:line: imports X` for each import `module` must not have."""
  parts = module.split('.')
  forbidden = _FORBIDDEN.get(parts[2], ()) if len(parts) > 3 else ()
  if module not in _FLAG_USERS:
    forbidden += _EVERYWHERE
  return [f'{module}:{line}: imports {name}'
          for line, name in _imports(source)
          if any(_matches(name, prefix) for prefix in forbidden)]


def _library_modules():
  for folder, _, files in os.walk(_LIBRARY):
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        relative = os.path.relpath(path, binaries.REPO_ROOT)[:-len('.py')]
        module = relative.replace(os.sep, '.')
        if module.endswith('.__init__'):
          module = module[:-len('.__init__')]
        yield module, path


class LayeringTest(absltest.TestCase):

  def test_no_module_imports_upwards(self):
    found = []
    for module, path in _library_modules():
      with open(path) as f:
        found += violations(module, f.read())
    self.assertEmpty(found)

  def test_an_upward_import_is_caught(self):
    self.assertEqual(violations(
        'research.fedrec.data.corpus',
        'import os\nfrom research.fedrec.training import experiment\n'),
        ['research.fedrec.data.corpus:2: imports '
         'research.fedrec.training.experiment'])
    self.assertEqual(violations(
        'research.fedrec.models.mf', 'import tensorflow_federated as tff\n'
        'from research.fedrec.evaluation import ranking\n'), [
            'research.fedrec.models.mf:1: imports tensorflow_federated',
            'research.fedrec.models.mf:2: imports '
            'research.fedrec.evaluation.ranking'])
    self.assertEqual(violations(
        'research.fedrec.training.loop',
        'def f():\n  from absl import flags\n  from research.fedrec import '
        'train\n'), [
            'research.fedrec.training.loop:2: imports absl.flags',
            'research.fedrec.training.loop:3: imports research.fedrec.train'])
    # The binaries read flags; a module of data/ may use another of data/.
    self.assertEmpty(violations('research.fedrec.train',
                                'from absl import flags\n'))
    self.assertEmpty(violations('research.fedrec.data.corpus',
                                'from research.fedrec.data import ratings\n'))


if __name__ == '__main__':
  absltest.main()
