"""Predict's tiles per device call: 1 on CPU, from the free device memory elsewhere."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from unet_jax import parallel, validation
from unet_jax.inference import grading, tile_programs
from unet_jax.models import create_model


@dataclasses.dataclass
class _FakeDevice:
  platform: str
  stats: dict | None

  def memory_stats(self):
    return self.stats


@pytest.mark.parametrize(
  'device, want',
  [
    (_FakeDevice('cpu', {'bytes_limit': 10**12}), 1),  # CPU stays at 1 whatever its memory
    (_FakeDevice('gpu', {'bytes_limit': 80 * 2**30, 'bytes_in_use': 0}), 32),  # the cap
    (_FakeDevice('gpu', {'bytes_limit': 16 * 2**30, 'bytes_in_use': 8 * 2**30}), 4),
    (_FakeDevice('tpu', {'bytes_limit': 2**30, 'bytes_in_use': 0}), 1),  # one tile, however big
    (_FakeDevice('gpu', None), 1),  # a device that reports nothing
  ],
)
def test_batch_that_fits(device, want):
  assert parallel.batch_that_fits(2**30, device=device) == want


@pytest.fixture(scope='module')
def model_and_variables():
  config = tiny.get_config()
  model = create_model(config.model, task=config.task)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: 0.1 * rng.standard_normal(s.shape).astype(s.dtype), shapes)
  variables['batch_stats'] = jax.tree.map(np.abs, variables['batch_stats'])
  return model, variables


def test_automatic_batch_on_an_accelerator_grades_the_same(model_and_variables, monkeypatch):
  """With a GPU of 6 tiles' free memory, 0 picks 3 tiles per call, and the photo is the same."""
  model, variables = model_and_variables
  image = np.random.default_rng(1).random((70, 90, 3)).astype(np.float32)
  kwargs = dict(tile_size=32, tile_overlap=8)
  one = grading.grade_image(model, variables, image, batch_tiles=1, **kwargs)

  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(parallel, 'batch_that_fits', lambda b: 32)
  assert tile_programs.auto_batch_tiles(model, variables, 32) == 32
  per_tile = tile_programs._tile_bytes[model, 32]
  assert per_tile > 32 * 32 * 3 * 4  # at least the input tile itself
  monkeypatch.undo()
  gpu = _FakeDevice('gpu', {'bytes_limit': 6 * per_tile, 'bytes_in_use': 0})
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(jax, 'local_devices', lambda: [gpu])
  assert tile_programs.auto_batch_tiles(model, variables, 32) == 3
  auto = grading.grade_image(model, variables, image, batch_tiles=0, **kwargs)
  np.testing.assert_allclose(auto, one, rtol=1e-5, atol=1e-5)


def test_cpu_default_is_one_tile_per_call(model_and_variables):
  model, variables = model_and_variables
  assert tiny.get_config().predict.batch_tiles == 0
  assert tile_programs.auto_batch_tiles(model, variables, 32) == 1


def test_negative_batch_is_refused():
  config = tiny.get_config()
  config.predict.batch_tiles = -1
  with pytest.raises(validation.ConfigError, match='config.predict.batch_tiles'):
    validation.validate_config(config, training=False, check_data_files=False)
