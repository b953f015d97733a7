"""Losses: minimum for identical inputs, positive otherwise, finite grads, bf16, jit; combined."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax import losses, metrics, pretrained
from unet_jax.config import get_base_config
from unet_jax.models import vgg


@pytest.fixture(scope='module')
def vgg_params():
  return pretrained.load_vgg_params()


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  target = rng.random((2, 32, 32, 3), np.float32)
  pred = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1).astype(np.float32)
  return jnp.asarray(pred), jnp.asarray(target)


def _loss_config(**weights):
  config = get_base_config().loss
  for name in losses.IMAGE_TERMS:
    config[name] = 0.0
  config.update(weights)
  return config


IMAGE_LOSSES = {
  'l1': lambda p, t, params: losses.l1(p, t),
  'l2': lambda p, t, params: losses.l2(p, t),
  'charbonnier': lambda p, t, params: losses.charbonnier(p, t),
  'ssim': lambda p, t, params: losses.ssim(p, t),
  'ms_ssim': lambda p, t, params: losses.ms_ssim(p, t),
  'perceptual': lambda p, t, params: losses.perceptual(p, t, params),
}


@pytest.mark.parametrize(
  'name',
  [pytest.param(n, marks=pytest.mark.slow) if n == 'perceptual' else n for n in IMAGE_LOSSES],
)
def test_image_loss(name, images, vgg_params):
  pred, target = images
  value_and_grad = jax.jit(jax.value_and_grad(IMAGE_LOSSES[name]))
  zero, _ = value_and_grad(target, target, vgg_params)
  value, grad = value_and_grad(pred, target, vgg_params)
  assert zero.dtype == jnp.float32 and zero.shape == ()
  assert abs(float(zero)) < 1e-5
  assert float(value) > 1e-3
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.max(jnp.abs(grad))) > 0

  half = jax.jit(IMAGE_LOSSES[name])(
    pred.astype(jnp.bfloat16), target.astype(jnp.bfloat16), vgg_params
  )
  assert half.dtype == jnp.float32 and bool(jnp.isfinite(half))
  np.testing.assert_allclose(half, value, rtol=0.1)


def test_charbonnier_is_smooth_l1():
  pred, target = jnp.full((1, 4, 4, 1), 0.75), jnp.full((1, 4, 4, 1), 0.25)
  expected = np.sqrt(0.5**2 + 1e-3**2) - 1e-3
  np.testing.assert_allclose(losses.charbonnier(pred, target, 1e-3), expected, rtol=1e-6)
  grad = jax.grad(losses.charbonnier)(target, target)
  assert float(jnp.max(jnp.abs(grad))) == 0.0


def test_ms_ssim_uses_the_scales_that_fit():
  rng = np.random.default_rng(1)
  a, b = rng.random((2, 1, 176, 176, 1), np.float32)
  ms_ssim = jax.jit(metrics.ms_ssim)
  full = ms_ssim(a, b)  # five scales just fit 176 px
  small = ms_ssim(a[:, :40, :40], b[:, :40, :40])  # two scales
  assert 0 < float(full[0]) < 1 and 0 < float(small[0]) < 1
  with pytest.raises(ValueError, match='at least 11'):
    metrics.ms_ssim(a[:, :8, :8], b[:, :8, :8])


@pytest.mark.slow
def test_perceptual_layer_weights(images, vgg_params):
  pred, target = images
  shallow = losses.perceptual(pred, target, vgg_params, layer_weights=(1, 0, 0, 0, 0))
  features = vgg.VGG16().apply({'params': vgg_params}, jnp.concatenate([pred, target]))
  expected = jnp.mean(jnp.abs(features['relu1_2'][:2] - features['relu1_2'][2:]))
  np.testing.assert_allclose(shallow, expected, rtol=1e-6)
  with pytest.raises(ValueError, match='5 layers'):
    losses.perceptual(pred, target, vgg_params, layer_weights=(1, 1))


def _saved_for_backward(fn, pred):
  """Elements the gradient of `fn` at `pred` keeps from the forward pass (traced, not run)."""
  vjp = jax.eval_shape(lambda p: jax.vjp(fn, p)[1], pred)
  return sum(leaf.size for leaf in jax.tree.leaves(vjp))


@pytest.mark.slow
def test_perceptual_keeps_no_target_activations_and_remat_keeps_block_outputs(images, vgg_params):
  pred, target = (image[:, :16, :16] for image in images)  # the smallest size VGG's pools allow
  loss = lambda p, remat=False: losses.perceptual(p, target, vgg_params, remat=remat)

  def one_call(p):  # predictions and targets through one VGG call, as before
    features = vgg.VGG16().apply({'params': vgg_params}, jnp.concatenate([p, target]))
    return sum(jnp.mean(jnp.abs(f[:2] - f[2:])) for f in features.values()) / len(features)

  values = jax.jit(lambda p: (loss(p), loss(p, remat=True), one_call(p)))(pred)
  np.testing.assert_allclose(values[1:], [values[0]] * 2, rtol=1e-5)
  # What each gradient keeps from the forward pass (traced, not run), less the frozen weights
  # every variant keeps. jax.checkpoint only moves work, so the gradients stay the same.
  weights = sum(leaf.size for leaf in jax.tree.leaves(vgg_params))
  kept = {
    name: _saved_for_backward(fn, pred) - weights
    for name, fn in {'one_call': one_call, 'split': loss, 'remat': lambda p: loss(p, True)}.items()
  }
  assert kept['split'] < 0.55 * kept['one_call']  # nothing of the targets' pass is kept
  assert kept['remat'] < 0.5 * kept['split']  # block outputs only


@pytest.mark.slow
def test_combined_default_is_the_seed_recipe(images):
  pred, target = images
  config = get_base_config().loss
  loss_params = losses.load_loss_params(config)
  assert set(loss_params) == {'vgg'}

  @jax.jit
  def step(p, t, params):
    loss_fn = lambda p: losses.combined(p, t, config, params)
    (total, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(p)
    separate = {
      'l1': losses.l1(p, t),
      'ssim': losses.ssim(p, t),
      'perceptual': losses.perceptual(p, t, params['vgg']),
    }
    return total, terms, grad, separate

  total, terms, grad, separate = step(pred, target, loss_params)
  assert set(terms) == {'l1', 'ssim', 'perceptual'}
  for name, value in separate.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5, err_msg=name)
  expected = terms['l1'] + 0.1 * terms['perceptual'] + 0.1 * terms['ssim']
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.max(jnp.abs(grad))) > 0


@pytest.mark.slow
def test_combined_other_terms(images):
  pred, target = images
  config = _loss_config(l2=1.0, charbonnier=0.5, ms_ssim=0.2)
  assert losses.load_loss_params(config) == {}
  total, terms = jax.jit(lambda p, t: losses.combined(p, t, config, {}))(pred, target)
  assert set(terms) == {'l2', 'charbonnier', 'ms_ssim'}
  expected = terms['l2'] + 0.5 * terms['charbonnier'] + 0.2 * terms['ms_ssim']
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  zero, _ = losses.combined(target, target, config, {})
  assert abs(float(zero)) < 1e-5
  half, half_terms = losses.combined(pred.astype(jnp.bfloat16), target, config, {})
  assert half.dtype == jnp.float32 and bool(jnp.isfinite(half))
  assert all(v.dtype == jnp.float32 for v in half_terms.values())


def test_combined_errors(images):
  pred, target = images
  with pytest.raises(ValueError, match='Every loss weight is 0'):
    losses.combined(pred, target, _loss_config(), {})
  with pytest.raises(ValueError, match='load_loss_params'):
    losses.combined(pred, target, _loss_config(perceptual=1.0), {})
  with pytest.raises(ValueError, match='>= 0'):
    losses.combined(pred, target, _loss_config(l1=-1.0), {})


# ----------------------------------------------------------------------------- segmentation


@pytest.fixture(scope='module')
def segmentation():
  rng = np.random.default_rng(2)
  logits = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (2, 8, 8)).astype(np.int32)
  labels[0, :2] = 255
  return jnp.asarray(logits), jnp.asarray(labels)


def test_cross_entropy_matches_numpy_and_ignores(segmentation):
  logits, labels = segmentation
  np_logits, np_labels = np.asarray(logits, np.float64), np.asarray(labels)
  log_probs = np_logits - np.log(np.exp(np_logits).sum(-1, keepdims=True))
  valid = np_labels != 255
  nll = -np.take_along_axis(log_probs, np.where(valid, np_labels, 0)[..., None], -1)[..., 0]
  expected = nll[valid].mean()
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, 255), expected, rtol=1e-5)

  changed = logits.at[0, :2].set(100.0)  # ignored pixels
  for fn in (losses.cross_entropy, losses.dice):
    np.testing.assert_allclose(fn(changed, labels, 255), fn(logits, labels, 255), rtol=1e-6)


@pytest.mark.parametrize('fn', [losses.cross_entropy, losses.dice], ids=['ce', 'dice'])
def test_segmentation_loss(fn, segmentation):
  logits, labels = segmentation
  confident = 30.0 * jax.nn.one_hot(jnp.where(labels == 255, 0, labels), 4)
  value_and_grad = jax.jit(jax.value_and_grad(fn), static_argnums=2)
  best, _ = value_and_grad(confident, labels, 255)
  value, grad = value_and_grad(logits, labels, 255)
  assert float(best) < 1e-4
  assert float(value) > 0.1
  assert bool(jnp.all(jnp.isfinite(grad)))
  half = fn(logits.astype(jnp.bfloat16), labels, 255)
  assert half.dtype == jnp.float32 and bool(jnp.isfinite(half))
  nothing, nothing_grad = value_and_grad(logits, jnp.full_like(labels, 255), 255)
  assert bool(jnp.isfinite(nothing)) and bool(jnp.all(jnp.isfinite(nothing_grad)))


def test_segmentation_combined(segmentation):
  logits, labels = segmentation
  config = get_base_config().loss
  config.dice = 0.5
  total, terms = jax.jit(lambda x, y: losses.segmentation_combined(x, y, config))(logits, labels)
  assert set(terms) == {'cross_entropy', 'dice'}
  expected = losses.cross_entropy(logits, labels, 255)
  np.testing.assert_allclose(terms['cross_entropy'], expected, rtol=1e-6)
  np.testing.assert_allclose(total, terms['cross_entropy'] + 0.5 * terms['dice'], rtol=1e-6)
  config.dice = 0.0
  _, terms = losses.segmentation_combined(logits, labels, config)
  assert set(terms) == {'cross_entropy'}
