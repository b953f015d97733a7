"""The CPU BatchNorm computes what flax.linen.BatchNorm computes, with the same variables, and
each backend gets the implementation chosen for it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from unet_jax.models import batch_norm, create_model
from unet_jax.models.batch_norm import GemmBatchNorm as BatchNorm
from unet_jax.validation import validate_model_config


def _apply(module, variables, x, train):
  if train:
    return module.apply(variables, x, use_running_average=False, mutable=['batch_stats'])
  return module.apply(variables, x, use_running_average=True), {}


@pytest.fixture(scope='module')
def inputs():
  rng = np.random.default_rng(0)
  # A large mean against a small spread: a one-pass variance would lose it to cancellation.
  x = rng.normal(5.0, 0.3, (4, 6, 7, 5)).astype(np.float32)
  weights = rng.standard_normal(x.shape).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(weights)


def test_same_variables_outputs_and_running_statistics_as_flax(inputs):
  x, _ = inputs
  ours, theirs = BatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9, use_fast_variance=False)
  variables = ours.init(jax.random.key(0), x, use_running_average=False)
  reference = theirs.init(jax.random.key(0), x, use_running_average=False)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference)
  # Initialisation leaves the running statistics untouched, as in flax.
  np.testing.assert_array_equal(variables['batch_stats']['mean'], 0.0)
  np.testing.assert_array_equal(variables['batch_stats']['var'], 1.0)

  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda v: v + rng.uniform(0.1, 0.5, v.shape), variables)
  for train in (True, False):
    y, updates = _apply(ours, variables, x, train)
    y_ref, updates_ref = _apply(theirs, variables, x, train)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), updates, updates_ref
    )
  # Train mode normalises to zero mean and unit variance before scale and bias.
  y, _ = _apply(ours, variables, x, True)
  normalised = (y - variables['params']['bias']) / variables['params']['scale']
  np.testing.assert_allclose(normalised.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalised.var(axis=(0, 1, 2)), 1.0, rtol=1e-3)


def test_gradients_match_flax(inputs):
  x, weights = inputs

  def loss(module):
    def f(x, params, stats):
      y, _ = module.apply(
        {'params': params, 'batch_stats': stats},
        x,
        use_running_average=False,
        mutable=['batch_stats'],
      )
      return jnp.sum(jnp.sin(y) * weights)

    return f

  ours = BatchNorm()
  variables = ours.init(jax.random.key(0), x, use_running_average=False)
  params = {'scale': jnp.linspace(0.5, 2.0, 5), 'bias': jnp.linspace(-1.0, 1.0, 5)}
  stats = variables['batch_stats']
  got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, params, stats)
  theirs = nn.BatchNorm(use_fast_variance=False)
  want = jax.jit(jax.grad(loss(theirs), argnums=(0, 1)))(x, params, stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4), got, want)
  assert float(jnp.abs(got[0]).max()) > 1e-2  # the check above compared something


def test_bfloat16_compute_keeps_float32_statistics(inputs):
  x, _ = inputs
  module = BatchNorm(dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(0), x.astype(jnp.bfloat16), use_running_average=False)
  y, updates = module.apply(
    variables, x.astype(jnp.bfloat16), use_running_average=False, mutable=['batch_stats']
  )
  assert y.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(updates))
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
  np.testing.assert_allclose(updates['batch_stats']['mean'], 0.1 * x.mean(axis=(0, 1, 2)), 2e-2)


@pytest.mark.parametrize(
  'choice, platform, want',
  [
    ('auto', 'cpu', 'gemm'),
    ('auto', 'gpu', 'flax'),
    ('auto', 'cuda', 'flax'),
    ('auto', 'tpu', 'flax'),
    ('gemm', 'tpu', 'gemm'),
    ('flax', 'cpu', 'flax'),
  ],
)
def test_implementation_by_backend(choice, platform, want):
  assert batch_norm.implementation(choice, platform) == want


def test_auto_follows_the_backend_it_runs_on():
  # CPU in CI; experiments/device_check.sh runs this file on a GPU too.
  auto = batch_norm.create('auto', momentum=0.9, dtype=jnp.float32)
  want = BatchNorm if jax.default_backend() == 'cpu' else nn.BatchNorm
  assert type(auto) is want
  assert isinstance(batch_norm.create('flax', momentum=0.9, dtype=jnp.float32), nn.BatchNorm)


def test_unknown_implementation_names_the_option():
  config = tiny.get_config()
  config.model.batch_norm = 'fast'
  with pytest.raises(ValueError, match='config.model.batch_norm'):
    validate_model_config(config.model, task=config.task)


@pytest.mark.slow
def test_unet_checkpoint_loads_into_either_implementation():
  """A U-Net trained with one BatchNorm restores into the other and computes the same."""
  config = tiny.get_config()
  x = jnp.asarray(np.random.default_rng(2).random((2, 32, 32, 3), np.float32))
  models = {}
  for choice in ('gemm', 'flax'):
    config.model.batch_norm = choice
    models[choice] = create_model(config.model, task=config.task)
  variables = models['gemm'].init(jax.random.key(0), x)
  flax_variables = models['flax'].init(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(flax_variables)

  def run(model):
    train = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return train, model.apply(variables, x, train=False)

  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    run(models['gemm']),
    run(models['flax']),
  )
