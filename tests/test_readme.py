"""The README's promises that code can check: its commands and its parameter table."""

import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

from unet_jax.models import count_params, create_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def _load_config(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _table_rows():
  table = README.split('<!-- param-table -->')[1].split('<!-- /param-table -->')[0]
  rows = []
  for line in table.strip().splitlines():
    cells = [cell.strip() for cell in line.strip('|').split('|')]
    config_file = re.search(r'`(configs/\w+\.py)`', cells[0]).group(1)
    levels, base, crop, batch = (int(cell) for cell in cells[1:5])
    rows.append((config_file, levels, base, crop, batch, int(cells[5].replace(',', ''))))
  return rows


def test_table_lists_every_config():
  listed = {row[0] for row in _table_rows()}
  assert listed == {f'configs/{path.name}' for path in (ROOT / 'configs').glob('*.py')}


@pytest.mark.parametrize('row', _table_rows(), ids=lambda row: row[0])
def test_parameter_table_matches_the_code(row):
  config_file, levels, base, crop, batch, params = row
  config = _load_config(ROOT / config_file)
  assert (config.model.levels, config.model.base_channels) == (levels, base)
  assert (config.data.crop_size, config.batch_size) == (crop, batch)
  model = create_model(config.model)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert count_params(variables['params']) == params


def test_readme_opens_with_the_main_job_and_the_ci_test_command():
  commands = re.findall(r'^(pip install .+)$', README.split('## ')[0], flags=re.MULTILINE)
  assert commands[0] == (
    'pip install -r requirements.txt && python -m unet_jax.main '
    '--config=configs/default.py --workdir=runs/demo'
  )
  install, test_command = commands[1].split(' && ')
  ci = (ROOT / '.ci' / 'run').read_text()
  assert test_command in ci
  assert install.removeprefix('pip install ') in ci
