"""The U-Net family: every option builds and keeps shapes; residual, skip and dtype behave."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from unet_jax.config import get_base_config
from unet_jax.models import UNet, count_params, create_model, layers
from unet_jax.validation import validate_model_config

TINY = dict(levels=2, base_channels=4)

# Options that change the graph, and options that change the arithmetic inside a block.
STRUCTURE = dict(
  down=['maxpool', 'strided'],
  up=['bilinear', 'transposed', 'pixel_shuffle'],
  skip=['concat', 'none'],
  attention_gates=[False, True],
  multiscale_input=[False, True],
  global_context=['none', 'pooled'],
)
ALL_OPTIONS = dict(
  **STRUCTURE,
  norm=['batch', 'group', 'layer', 'none'],
  activation=['relu', 'gelu', 'silu'],
  residual=[False, True],
  task=['enhance', 'segment'],
  dtype=['float32', 'bfloat16'],
)


def _pairwise_cover(options: dict[str, list]) -> list[dict]:
  """A small set of option combinations in which every pair of values appears together."""
  names = list(options)
  uncovered = {
    (a, va, b, vb)
    for a, b in itertools.combinations(names, 2)
    for va in options[a]
    for vb in options[b]
  }
  rows = []
  rng = np.random.default_rng(0)
  while uncovered:
    best, best_gain = None, -1
    for _ in range(60):
      candidate = {name: options[name][rng.integers(len(options[name]))] for name in names}
      # Seed each candidate with one uncovered pair so that progress is guaranteed.
      a, va, b, vb = sorted(uncovered, key=str)[rng.integers(len(uncovered))]
      candidate[a], candidate[b] = va, vb
      gain = sum(
        (x, candidate[x], y, candidate[y]) in uncovered for x, y in itertools.combinations(names, 2)
      )
      if gain > best_gain:
        best, best_gain = candidate, gain
    rows.append(best)
    uncovered -= {(x, best[x], y, best[y]) for x, y in itertools.combinations(names, 2)}
  return rows


def _model_config(task: str = 'enhance', **overrides) -> ml_collections.ConfigDict:
  config = get_base_config().model
  config.update(TINY)
  config.update(overrides)
  if task == 'segment':
    config.num_classes = 5  # and `residual` is ignored: logits have no input to add to
  return config


def _expected_channels(config: ml_collections.ConfigDict, task: str) -> int:
  return config.num_classes if task == 'segment' else config.out_channels


@pytest.mark.parametrize(
  'combo',
  [dict(zip(STRUCTURE, values, strict=True)) for values in itertools.product(*STRUCTURE.values())],
  ids=lambda combo: '-'.join(str(v) for v in combo.values()),
)
@pytest.mark.slow
def test_every_structural_combination_builds_with_the_right_shapes(combo):
  model = create_model(_model_config(**combo), task='enhance')
  x = jnp.zeros((2, 24, 40, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  out = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert out.shape == (2, 24, 40, 3)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize(
  'combo', _pairwise_cover(ALL_OPTIONS), ids=lambda c: str(sorted(c.items()))
)
@pytest.mark.slow
def test_every_pair_of_options_runs_forward_in_train_and_eval(combo):
  config, task = _model_config(**combo), combo['task']
  model = create_model(config, task=task)
  x = jax.random.uniform(jax.random.key(1), (2, 20, 28, 3))
  variables = model.init(jax.random.key(0), x)
  out, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert out.shape == (2, 20, 28, _expected_channels(config, task))
  assert out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  if config.norm == 'batch':
    assert jax.tree.leaves(updates['batch_stats'])
  eval_out = model.apply({**variables, **updates}, x, train=False)
  assert eval_out.shape == out.shape


def test_parameter_count_does_not_depend_on_resolution():
  model = UNet(levels=3, base_channels=8, global_context=True, attention_gates=True)
  counts = []
  for size in (128, 256):
    variables = jax.eval_shape(
      lambda s=size: model.init(jax.random.key(0), jnp.zeros((1, s, s, 3)))
    )
    counts.append(count_params(variables['params']))
  assert counts[0] == counts[1] > 0


@pytest.mark.slow
@pytest.mark.parametrize('down', ['maxpool', 'strided'])
@pytest.mark.parametrize('up', ['bilinear', 'transposed', 'pixel_shuffle'])
def test_any_height_and_width_come_back_unchanged(down, up):
  model = UNet(levels=4, base_channels=4, down=down, up=up, residual=False)
  for shape in [(1, 37, 53, 3), (1, 517, 389, 3)]:
    x = jax.random.uniform(jax.random.key(2), shape)
    variables = model.init(jax.random.key(0), x[:, :37, :53])
    out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    assert out.shape == shape
    assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.slow
def test_inputs_much_smaller_than_the_padding_multiple_still_work():
  model = UNet(levels=4, base_channels=4)
  x = jax.random.uniform(jax.random.key(3), (1, 5, 3, 3))
  variables = model.init(jax.random.key(0), x)
  assert model.apply(variables, x).shape == (1, 5, 3, 3)


@pytest.mark.parametrize(
  'norm', [*(pytest.param(n, marks=pytest.mark.slow) for n in ('batch', 'group')), 'none']
)
def test_untrained_residual_net_is_exactly_the_identity(norm):
  model = UNet(**TINY, norm=norm, residual=True, global_context=True)
  x = jax.random.uniform(jax.random.key(4), (2, 33, 31, 3))
  variables = model.init(jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(model.apply(variables, x)), np.asarray(x))
  out, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_skip_none_removes_exactly_the_skip_inputs_of_the_decoder():
  with_skips = UNet(levels=3, base_channels=4, skip='concat')
  without = UNet(levels=3, base_channels=4, skip='none')
  x = jnp.zeros((1, 16, 16, 3))
  count = {}
  for name, model in [('concat', with_skips), ('none', without)]:
    variables = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), x))
    count[name] = count_params(variables['params'])
  # Each decoder's first 3x3 conv loses the skip's channels from its input.
  removed = sum(9 * with_skips.channels(level) ** 2 for level in range(3))
  assert count['concat'] - count['none'] == removed


def _grad_into_first_stage_with_downsampling_blocked(model: UNet) -> float:
  """Gradient of the output into encoder_0's weights when only the skip path may carry it."""
  x = jax.random.uniform(jax.random.key(5), (1, 16, 16, 3))
  variables = model.init(jax.random.key(0), x)

  def block_downsampling(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, layers.Downsample) and context.module.name == 'down_1':
      return jax.lax.stop_gradient(out)
    return out

  def output_sum(params):
    with nn.intercept_methods(block_downsampling):
      return jnp.sum(model.apply({**variables, 'params': params}, x) ** 2)

  grads = jax.grad(output_sum)(variables['params'])
  return float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads['encoder_0'])))


@pytest.mark.slow
def test_skip_none_cuts_the_gradient_path_from_the_first_encoder_stage():
  common = dict(levels=2, base_channels=4, residual=False, norm='none')
  assert _grad_into_first_stage_with_downsampling_blocked(UNet(**common, skip='concat')) > 0
  assert _grad_into_first_stage_with_downsampling_blocked(UNet(**common, skip='none')) == 0


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_output():
  model = create_model(
    _model_config(dtype='bfloat16', global_context='pooled', attention_gates=True), task='enhance'
  )
  x = jax.random.uniform(jax.random.key(6), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  assert {p.dtype for p in jax.tree.leaves(variables['params'])} == {jnp.dtype('float32')}
  out, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.slow
def test_pooled_context_from_outside_replaces_the_inputs_own():
  model = UNet(**TINY, global_context=True, residual=False)
  x = jax.random.uniform(jax.random.key(7), (1, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  pooled = model.apply(variables, x, return_pooled_context=True)
  assert pooled.shape == (1, model.channels(TINY['levels']))
  same = model.apply(variables, x, pooled_context=pooled)
  np.testing.assert_allclose(same, model.apply(variables, x), atol=1e-6)
  other = model.apply(variables, x, pooled_context=pooled + 1.0)
  assert float(jnp.abs(other - same).max()) > 1e-4


@pytest.mark.parametrize(
  'shape, message',
  [((32, 32, 3), 'rank 3'), ((1, 32, 32, 4), '3 input channels')],
)
def test_wrong_input_rank_or_channels_is_a_clear_error(shape, message):
  model = UNet(**TINY)
  with pytest.raises(ValueError, match=message):
    model.init(jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize(
  'task, overrides, message',
  [
    ('enhance', dict(norm='instance'), 'config.model.norm'),
    ('enhance', dict(up='nearest'), 'config.model.up'),
    ('enhance', dict(levels=0), 'config.model.levels'),
    ('segment', dict(residual=False, num_classes=1), 'config.model.num_classes'),
    ('enhance', dict(out_channels=1, residual=True), 'out_channels'),
  ],
)
def test_bad_model_options_are_named(task, overrides, message):
  config = get_base_config().model
  config.update(overrides)
  with pytest.raises(ValueError, match=message):
    validate_model_config(config, task=task)


def test_max_pool_matches_flax_in_value_and_gradient_and_shares_ties():
  x = jnp.asarray(np.random.default_rng(0).random((2, 9, 7, 3), np.float32))
  ours = lambda x: layers.max_pool_2x2(x)
  theirs = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(ours(x), theirs(x))
  cotangent = jnp.asarray(np.random.default_rng(1).random((2, 4, 3, 3), np.float32))
  grad = lambda f: jax.vjp(f, x)[1](cotangent)[0]
  np.testing.assert_array_equal(grad(ours), grad(theirs))
  tie = jnp.ones((1, 2, 2, 1))
  np.testing.assert_allclose(jax.grad(lambda x: layers.max_pool_2x2(x).sum())(tie), 0.25)


def test_max_pool_gradient_is_never_nan_when_the_max_was_computed_apart():
  # XLA may compute the pooled tensor twice (in the max's fusion and in the gradient's), and
  # the copies can differ in the last bit: then no entry equals the max the forward pass saw.
  blocks = jnp.asarray(np.random.default_rng(0).random((1, 2, 2, 2, 2, 1), np.float32))
  pooled = blocks.max(axis=(2, 4))
  off_by_an_ulp = pooled.at[0, 0, 0, 0].set(jnp.nextafter(pooled[0, 0, 0, 0], 2.0))
  (grad,) = layers.block_max_backward((blocks, off_by_an_ulp), jnp.ones_like(pooled))
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert float(grad[0, 0, :, 0, :, 0].sum()) == 0.0  # that block gets nothing
  np.testing.assert_allclose(grad.sum(axis=(2, 4))[0, :, :, 0], [[0, 1], [1, 1]])
