"""Every config's train step, eval scoring and tile grading lower for CUDA and TPU.

No accelerator is needed: `jax.export` lowers for other platforms on this CPU machine, and it
refuses what only XLA:CPU has (a CPU custom call, a CPU-only primitive), so such a construct
fails here before it reaches a user's GPU or TPU. Nothing is materialised: parameters and
optimiser state are `jax.eval_shape` shapes, so res1024 lowers as fast as the tiny config.

Where the code chooses by backend, the accelerators' choice is what gets lowered:
`model.batch_norm='auto'` means `flax.linen.BatchNorm` there (resolved with the target platform,
since `jax.default_backend()` here is 'cpu'), and the train step gets no XLA:CPU options.
"""

import functools
import importlib
import math
import pathlib

import jax
import jax.numpy as jnp
import pytest
from jax import export

from unet_jax import losses, metrics, parallel
from unet_jax.inference import tile_programs
from unet_jax.models import batch_norm, create_model
from unet_jax.training.steps import make_train_step
from unet_jax.training.train_state import create_optimizer, create_train_state

PLATFORMS = ('cuda', 'tpu')
CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[2] / 'configs').glob('*.py'))


def _accelerator_config(name: str, norm: str | None = None):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.model.batch_norm = norm or batch_norm.implementation(config.model.batch_norm, PLATFORMS[0])
  assert norm or config.model.batch_norm == batch_norm.implementation('auto', PLATFORMS[1])
  return config


@functools.cache
def _setup(name: str, norm: str | None = None):
  """(config, model, optimiser, abstract train state, abstract loss params) of configs/<name>.py,
  with the BatchNorm the accelerators get unless `norm` names one."""
  config = _accelerator_config(name, norm)
  model = create_model(config.model, task=config.task)
  optimizer = create_optimizer(config)
  state = jax.eval_shape(
    functools.partial(create_train_state, config, model, optimizer), jax.random.key(0)
  )
  loss_params = jax.eval_shape(functools.partial(losses.load_loss_params, config.loss))
  return config, model, optimizer, state, loss_params


def _lower(fn, *args) -> export.Exported:
  exported = export.export(fn, platforms=PLATFORMS)(*args)
  assert exported.platforms == PLATFORMS
  return exported


def test_every_config_is_covered():
  assert {'default', 'res256', 'res512', 'res1024', 'tiny'} <= set(CONFIGS)


def test_accelerators_get_flax_batch_norm_and_no_cpu_compiler_options():
  for platform in ('gpu', 'cuda', 'rocm', 'tpu'):
    assert batch_norm.implementation('auto', platform) == 'flax'
    assert parallel.train_compiler_options(platform) == {}
  assert parallel.train_compiler_options('cpu')  # the one place options are given


# Every config as the accelerators run it, and the CPU BatchNorm forced on them (custom VJP and
# matrix-product sums must not be CPU-only either).
@pytest.mark.slow
@pytest.mark.parametrize('name, norm', [(name, None) for name in CONFIGS] + [('tiny', 'gemm')])
def test_train_step_lowers(name, norm):
  config, model, optimizer, state, loss_params = _setup(name, norm)
  # A mesh the global batch divides (res1024 trains 4 images on the tests' 8 devices).
  devices = math.gcd(config.batch_size, jax.device_count())
  mesh = jax.make_mesh(
    (devices,),
    ('data',),
    axis_types=(jax.sharding.AxisType.Auto,),
    devices=jax.devices()[:devices],
  )
  replicated = parallel.replicated(mesh)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  step = make_train_step(config, model, optimizer, mesh, state_sharding)
  crop, channels = config.data.crop_size, config.model.in_channels
  shape = (config.batch_size, crop, crop, channels)
  batch = {
    'input': jax.ShapeDtypeStruct(shape, jnp.float32),
    'target': jax.ShapeDtypeStruct(shape[:-1] + (config.model.out_channels,), jnp.float32),
  }
  exported = _lower(step, state, batch, loss_params)
  assert exported.nr_devices == devices
  # The new state comes back with the old one's shapes and dtypes (the loop feeds it back in).
  count = len(jax.tree.leaves(state))
  assert exported.out_avals[:count] == exported.in_avals[:count]


@pytest.mark.parametrize('name', CONFIGS)
def test_tile_grading_lowers(name):
  config, model, _, state, _ = _setup(name)
  variables = {'params': state.ema_params, 'batch_stats': state.batch_stats}
  tile = config.predict.tile_size
  tiles = jax.ShapeDtypeStruct((2, tile, tile, config.model.in_channels), jnp.float32)
  context = None
  if config.model.global_context != 'none':
    # The first pass: each tile's bottleneck sums over the cells it owns.
    cells = tile // 2**config.model.levels
    weights = jax.ShapeDtypeStruct((2, cells, cells), jnp.float32)
    sums = _lower(tile_programs.context_sums, model, variables, tiles, weights)
    (sums_aval,) = sums.out_avals
    context = jax.ShapeDtypeStruct(sums_aval.shape, jnp.float32)
  exported = _lower(tile_programs.grade_tiles, model, variables, tiles, context)
  (graded,) = exported.out_avals
  assert graded.shape == (2, tile, tile, config.model.out_channels)
  assert graded.dtype == jnp.float32


@pytest.mark.parametrize('name', CONFIGS)
def test_eval_scoring_lowers(name):
  config = _accelerator_config(name)
  # Eval scores the graded photo against its target: PSNR, SSIM, delta E 2000 and LPIPS.
  size = config.data.eval_size or config.predict.tile_size
  image = jax.ShapeDtypeStruct((1, size, size, config.model.out_channels), jnp.float32)
  lpips_params = jax.eval_shape(metrics.load_lpips_params)
  exported = _lower(jax.jit(metrics.image_metrics), image, image, lpips_params)
  assert len(exported.out_avals) == 4  # psnr, ssim, delta_e2000, lpips
