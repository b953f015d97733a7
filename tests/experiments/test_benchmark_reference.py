"""The PyTorch reference of experiments/benchmark.py is the same net as unet_jax's UNet.

Skipped where torch is not installed (it is not a dependency of unet_jax), except on CI, which
installs requirements-torch.txt so that these tests always run there.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.config import get_base_config
from unet_jax.inference import grading
from unet_jax.models import count_params, create_model

if os.environ.get('CI') == 'true':
  import torch  # CI must run these tests: a missing torch is a failure there, not a skip.
else:
  torch = pytest.importorskip('torch')
from experiments import torch_unet  # noqa: E402  (after the torch check above)


def _model_config(**overrides):
  config = get_base_config().model
  config.update({'levels': 2, 'base_channels': 4, **overrides})
  return config


def _init(model_config, init=jax.eval_shape):
  """The flax model and its variables; shapes only by default, which needs no compilation."""
  model = create_model(model_config, task='enhance')
  dummy = jnp.zeros((1, 16, 16, model_config.in_channels), jnp.float32)
  return model, init(model.init, jax.random.key(0), dummy)


@pytest.mark.parametrize(
  'overrides',
  [
    {},
    dict(levels=3, base_channels=8, max_channels=16),
    dict(norm='none', activation='silu', skip='none'),
    dict(in_channels=1, out_channels=1),
  ],
)
def test_parameter_counts_match(overrides):
  model_config = _model_config(**overrides)
  _, variables = _init(model_config)
  reference = torch_unet.from_config(model_config)
  assert torch_unet.count_params(reference) == count_params(variables['params'])


def _random_like(shapes, rng):
  """Random variables of the given shapes: weights, and running variances kept positive."""

  def fill(path, leaf):
    values = rng.standard_normal(leaf.shape).astype(np.float32) * 0.3
    return np.abs(values) + 0.5 if path[-1].key == 'var' else values

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.slow
def test_same_function_with_the_same_weights():
  # A non-residual head with random weights: the output is not just the input.
  model_config = _model_config(residual=False)
  model, shapes = _init(model_config)
  variables = _random_like(shapes, np.random.default_rng(0))
  reference = torch_unet.from_config(model_config)
  torch_unet.load_flax_params(reference, variables)

  @jax.jit
  def both_modes(x):
    train_out, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return model.apply(variables, x, train=False), train_out

  # 20 x 24 is not a multiple of 4: both nets reflect-pad and crop back.
  x = np.random.default_rng(1).random((2, 20, 24, 3), np.float32)
  for train, ours in zip((False, True), both_modes(x), strict=True):
    reference.train(train)
    with torch.no_grad():
      theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs.transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_tiled_grading_matches_unet_jax():
  """The predict race grades the same tiles with the same blending in both frameworks."""
  model_config = _model_config(residual=False)
  model, shapes = _init(model_config)
  variables = _random_like(shapes, np.random.default_rng(2))
  reference = torch_unet.from_config(model_config)
  torch_unet.load_flax_params(reference, variables)
  reference.eval()
  image = np.random.default_rng(3).random((37, 50, 3), np.float32)
  kwargs = dict(tile_size=16, tile_overlap=4, batch_tiles=2)
  ours = grading.grade_image(model, variables, image, **kwargs)
  theirs = torch_unet.grade_image(reference, image, **kwargs)
  assert theirs.shape == ours.shape == (37, 50, 3)
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-3)


def test_options_it_does_not_build_are_refused():
  with pytest.raises(NotImplementedError, match='attention_gates'):
    torch_unet.from_config(_model_config(attention_gates=True))


@pytest.mark.slow
def test_train_step_runs_and_counts_parameters():
  config = get_base_config()
  config.model.update(levels=2, base_channels=4)
  batch = {
    'input': np.random.default_rng(0).random((2, 16, 16, 3), np.float32),
    'target': np.random.default_rng(1).random((2, 16, 16, 3), np.float32),
  }
  step = torch_unet.TrainStep(config, batch)
  before = [p.detach().clone() for p in step.params]
  assert step() > 0
  assert step.num_params == torch_unet.count_params(step.model)
  assert any(not torch.equal(a, b) for a, b in zip(before, step.params, strict=True))
