"""The package's layers: `data/` and `models/` never import each other (both may import
`whole_photo`), and no chain of module-level imports comes back to where it started."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / 'unet_jax'


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob('*.py')}


def _imports(name: str) -> set[str]:
  """The package modules `name` imports when it is imported (module level, not in functions);
  importing `a.b.c` also runs the packages `a.b` and `a`."""
  found = set()
  tree = ast.parse(MODULES[name].read_text())
  for node in tree.body:
    targets = []
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      targets = [node.module]
      targets += [f'{node.module}.{alias.name}' for alias in node.names]
    for target in targets:
      while target:
        if target in MODULES and target != name:
          found.add(target)
        target = target.rpartition('.')[0]
  return found


GRAPH = {name: _imports(name) for name in MODULES}


@pytest.mark.parametrize(('layer', 'other'), [('data', 'models'), ('models', 'data')])
def test_data_and_models_do_not_import_each_other(layer, other):
  crossing = sorted(
    f'{name} -> {target}'
    for name, targets in GRAPH.items()
    if name.startswith(f'unet_jax.{layer}')
    for target in targets
    if target.startswith(f'unet_jax.{other}')
  )
  assert not crossing


def test_the_import_graph_has_no_cycle():
  # A package's own __init__ importing its submodules is how packages work, not a cycle.
  edges = {
    name: {t for t in targets if not name.startswith(f'{t}.')} for name, targets in GRAPH.items()
  }
  done, path = set(), []

  def visit(name):
    if name in path:
      raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(name) :] + [name]))
    if name in done:
      return
    path.append(name)
    for target in sorted(edges[name]):
      visit(target)
    path.pop()
    done.add(name)

  for name in sorted(edges):
    visit(name)


def test_the_checker_sees_imports():
  assert 'unet_jax.whole_photo' in GRAPH['unet_jax.data.transforms']
  assert 'unet_jax.models.unet' in GRAPH['unet_jax.models']
