"""pyproject.toml and requirements*.txt say the same thing, and say all the package needs.

`pip install .` (pyproject) and the README's `pip install -r requirements.txt` must install the
same runtime; jax2onnx, which caps orbax-checkpoint below the 0.12 line, stays an extra that
only the ONNX part of export imports, and export without it says how to get it.
"""

import ast
import importlib.metadata
import pathlib
import re
import sys
import tomllib

import jax
import jax.numpy as jnp
import pytest

from unet_jax.inference import export
from unet_jax.models import UNet

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())


def _requirements(name: str) -> set[str]:
  lines = (ROOT / name).read_text().splitlines()
  return {
    line.replace(' ', '')
    for line in lines
    if line.strip() and not line.startswith(('#', '-e', '-r'))
  }


def _name(requirement: str) -> str:
  return re.split(r'[<>=!~\[;]', requirement)[0].lower().replace('_', '-')


def _declared(requirements: set[str]) -> set[str]:
  return {_name(r) for r in requirements}


def test_pyproject_and_requirements_files_agree():
  project = PYPROJECT['project']
  assert {r.replace(' ', '') for r in project['dependencies']} == _requirements('requirements.txt')
  extras = project['optional-dependencies']
  assert set(extras['export']) == _requirements('requirements-export.txt')
  assert set(extras['dev']) == _requirements('requirements-dev.txt')


def test_the_runtime_leaves_out_what_only_export_or_tests_use():
  runtime = _declared(_requirements('requirements.txt'))
  assert 'jax2onnx' not in runtime and 'dm-pix' not in runtime
  assert 'jax2onnx' in _declared(set(PYPROJECT['project']['optional-dependencies']['export']))
  assert 'dm-pix' in _declared(_requirements('requirements-dev.txt'))


def test_python_version_is_what_jax_needs_and_ruff_targets():
  assert PYPROJECT['project']['requires-python'] == '>=3.11'
  assert PYPROJECT['tool']['ruff']['target-version'] == 'py311'
  jax_python = importlib.metadata.metadata('jax')['Requires-Python']
  assert jax_python.replace(' ', '') == '>=3.11'


def _third_party_imports() -> dict[str, bool]:
  """Top-level modules unet_jax imports, each with whether some import is at module level."""
  found: dict[str, bool] = {}
  for path in (ROOT / 'unet_jax').rglob('*.py'):
    tree = ast.parse(path.read_text())
    module_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split('.')[0]
        if top in sys.stdlib_module_names or top == 'unet_jax':
          continue
        found[top] = found.get(top, False) or id(node) in module_level
  return found


def test_every_module_the_package_imports_is_declared():
  runtime = _declared(_requirements('requirements.txt'))
  # Modules of packages the declared ones require (ml_dtypes comes with jax).
  brought = {
    _name(r)
    for dist in runtime
    for r in importlib.metadata.requires(dist) or []
    if 'extra ==' not in r
  }
  distributions = importlib.metadata.packages_distributions()
  imports = _third_party_imports()
  assert imports.pop('jax2onnx') is False, 'jax2onnx is imported only where export needs it'
  for module in imports:
    names = {_name(dist) for dist in distributions[module]}
    assert names & (runtime | brought), f'unet_jax imports {module} ({names}): not declared'


def test_onnx_export_without_jax2onnx_says_how_to_get_it(monkeypatch):
  monkeypatch.setitem(sys.modules, 'jax2onnx', None)  # `import jax2onnx` now fails
  model = UNet(levels=2, base_channels=8)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(ValueError, match=re.escape("pip install '.[export]'")):
    export.export_onnx(model, variables, 32)
