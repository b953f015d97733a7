"""experiments/device_check.sh, the prepared GPU check, and its install step (gpu_env.py).

The real run needs the lent GPU machine that CI never has; the dry run (CPU, tiny sizes, nothing
installed) keeps every step of the script (environment check, tests, benchmarks against PyTorch,
training run, large predict, the JSON report) known to work.
"""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from tests import xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'experiments' / 'device_check.sh'
GPU_ENV = ROOT / 'experiments' / 'gpu_env.py'


def _script(tmp_path, *args, **env):
  environment = dict(os.environ, OUT=str(tmp_path / 'out'), PYTHON=sys.executable, **env)
  return subprocess.run(
    ['bash', str(SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=2400
  )


@pytest.mark.slow
def test_dry_run_writes_every_steps_figures(tmp_path):
  pytest.importorskip('torch')  # the benchmark steps race the PyTorch reference
  # One device, as a user has (the suite's 8 fake ones would split the tiny batches); compiled
  # without backend optimisation like the rest of the suite (tests/conftest.py). No carried
  # wheels: the environment's packages are checked, not installed.
  done = _script(
    tmp_path,
    '--dry-run',
    XLA_FLAGS=xla_flags.COMPILE,
    CARRY=str(tmp_path / 'no_carry'),
  )
  log = (tmp_path / 'out' / 'device_check.log').read_text()
  assert done.returncode == 0, done.stdout[-3000:] + log[-5000:]
  report = json.loads((tmp_path / 'out' / 'device_check.json').read_text())
  assert report['dry_run'] is True
  for step in ('install', 'tests', 'bench256', 'bench512', 'train', 'predict'):
    assert report['steps'][step]['exit'] == '0', step
  assert 'versions: jax ' in log  # the install step's environment check
  summary = report['summary']
  for name, resolution in (('bench256', 32), ('bench512', 64)):
    row = summary[name]
    assert row['resolution'] == resolution
    assert row['jax_images_per_second'] > 0
    assert row['torch_images_per_second'] > 0
    assert row['jax_over_torch'] == pytest.approx(
      row['jax_images_per_second'] / row['torch_images_per_second']
    )
  assert report['bench256']['config']['model']['dtype'] == 'bfloat16'
  assert report['bench256']['train'][0]['torch']['amp_bfloat16'] is True
  assert summary['train_images_per_second'] > 0
  assert 0 < summary['held_out_psnr'] < 100
  assert summary['held_out_lpips'] >= 0
  assert summary['predict_megapixels'] == pytest.approx(96 * 64 / 1e6)
  assert summary['predict_seconds'] > 0


def test_unknown_argument_is_refused(tmp_path):
  done = _script(tmp_path, '--fast')
  assert done.returncode == 2
  assert "unknown argument '--fast'" in done.stderr


def test_unknown_step_is_refused(tmp_path):
  done = _script(tmp_path, '--dry-run', STEPS='install,benchmark')
  assert done.returncode == 2
  assert "unknown step 'benchmark'" in done.stderr


@pytest.mark.slow
def test_missing_wheels_fail_the_install_step_of_a_real_run(tmp_path):
  # Only the install step, so no GPU is needed to see it refuse to go on without the wheels.
  done = _script(tmp_path, STEPS='install', CARRY=str(tmp_path / 'no_carry'))
  log = (tmp_path / 'out' / 'device_check.log').read_text()
  assert done.returncode == 1, log
  report = json.loads((tmp_path / 'out' / 'device_check.json').read_text())
  assert report['steps']['install']['exit'] == '1'
  assert report['steps']['train']['exit'] == 'not run'
  assert 'no wheels in' in log and 'gpu_wheels.sh' in log


def _fake_wheel(folder: pathlib.Path, name: str, version: str) -> pathlib.Path:
  """A minimal pure-Python wheel: one module that records its version."""
  path = folder / f'{name}-{version}-py3-none-any.whl'
  info = f'{name}-{version}.dist-info'
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(f'{name}.py', f'VERSION = {version!r}\n')
    metadata = f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n'
    archive.writestr(f'{info}/METADATA', metadata)
    wheel = 'Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n'
    archive.writestr(f'{info}/WHEEL', wheel)
    archive.writestr(f'{info}/RECORD', '')
  return path


@pytest.mark.slow
def test_install_fills_gaps_and_never_replaces_installed_packages(tmp_path):
  wheels = tmp_path / 'wheels'
  wheels.mkdir()
  _fake_wheel(wheels, 'numpy', '0.0.1')  # installed here: must be left alone
  _fake_wheel(wheels, 'unet_jax_fake_missing', '1.0')
  site = tmp_path / 'site'
  done = subprocess.run(
    [sys.executable, str(GPU_ENV), 'install', str(wheels), str(site)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr
  assert 'numpy-0.0.1-py3-none-any.whl: not installed, the machine has' in done.stderr
  assert (site / 'unet_jax_fake_missing.py').read_text() == "VERSION = '1.0'\n"
  assert not (site / 'numpy.py').exists()


def test_plan_of_an_empty_folder_is_an_error(tmp_path):
  done = subprocess.run(
    [sys.executable, str(GPU_ENV), 'plan', str(tmp_path)], capture_output=True, text=True
  )
  assert done.returncode == 1
  assert f'no wheels in {tmp_path}' in done.stderr
