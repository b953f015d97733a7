"""The design card's command, `python -m unet_jax.main --config=configs/res512.py`, trains on a
fresh checkout with no other flag: default workdir, built-in photos prepared for 512 px crops.

On CPU it runs 1 step with a batch of 1 and eval at 128 px in 128 px tiles without LPIPS
(`--config.*` overrides only; the model, crop size and data are the config's own): the compile
and the one step of the 22.7 M-parameter bfloat16 U-Net at 512 px are most of its time. (With
the config's 512 px tiles, eval would grade each 128 px photo padded to 512 px: 20 s instead
of 5 here.)
"""

import importlib
import os
import pathlib

import numpy as np
import pytest

from tests import xla_flags
from tests.helpers import ROOT, run_main, run_python
from unet_jax import cli_errors
from unet_jax.config import get_base_config
from unet_jax.data import LOOKS, builtin, load_image, validate_data_config
from unet_jax.data.images import image_size

SHRUNK = (
  '--config.num_train_steps=1',
  '--config.batch_size=1',
  '--config.data.eval_size=128',
  '--config.eval_lpips=false',
  '--config.predict.tile_size=128',
  '--config.predict.tile_overlap=32',
)


@pytest.mark.slow
def test_res512_trains_with_no_other_flag(tmp_path):
  config_path = pathlib.Path(ROOT, 'configs', 'res512.py')
  result = run_python(
    '-m',
    'unet_jax.main',
    f'--config={config_path}',
    *SHRUNK,
    cwd=tmp_path,
    # One CPU device, as on a fresh machine (the suite's 8 fake ones would refuse a batch of 1);
    # the suite's compile flags stay (tests/xla_flags.py).
    env={**os.environ, 'XLA_FLAGS': xla_flags.COMPILE},
    timeout=1800,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Workdir: {os.path.join("runs", "res512")}' in result.stdout
  workdir = tmp_path / 'runs' / 'res512'
  assert (workdir / 'checkpoints' / '1').is_dir()
  assert (workdir / 'parameters.txt').read_text().count('Total:') == 1
  assert 'Held-out PSNR: model' in result.stdout
  assert 'enlarged to it (Lanczos)' in result.stderr  # said in the log

  # Every photo is at least 512 px on its shorter side, and each target is still the look of
  # its (enlarged) input.
  data = get_base_config().data
  data.crop_size = 512
  root = builtin.build_folder(data.look, builtin.min_side(data))
  inputs = sorted(root.glob('*/input/*.png'))
  assert len(inputs) == len(builtin.photo_files())
  for path in inputs:
    assert min(load_image(path).shape[:2]) >= 512, path
  chelsea = load_image(root / 'test' / 'input' / 'chelsea.png')
  target = load_image(root / 'test' / 'target' / 'chelsea.png')
  np.testing.assert_allclose(target, LOOKS[data.look](chelsea), atol=0.5 / 255 + 1e-6)


@pytest.mark.slow
def test_other_modes_need_a_workdir_or_the_config_that_names_it(tmp_path):
  result = run_main('--mode=eval', cwd=tmp_path)
  assert result.returncode == cli_errors.EXIT_USAGE
  assert result.stderr.strip().splitlines()[-1] == (
    'Error: --mode=eval needs --workdir=DIR (or --config=FILE, whose default workdir is '
    'runs/<config file name>).'
  )


@pytest.mark.parametrize('name', sorted(p.stem for p in pathlib.Path(ROOT, 'configs').glob('*.py')))
def test_every_shipped_config_accepts_the_builtin_photos(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  if config.data.name != 'builtin':
    pytest.skip(f'configs/{name}.py reads {config.data.name!r}')
  validate_data_config(config)
  side = builtin.min_side(config.data)
  for path in builtin.photo_files().values():
    height, width = image_size(path.read_bytes(), str(path))
    assert min(builtin.stored_size(height, width, side)) >= config.data.crop_size
