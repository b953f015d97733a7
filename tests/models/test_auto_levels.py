"""The image-adaptive levels (models/auto_levels.py): identity untrained, and the editors' auto
rules (auto levels + auto gamma, grey world) are weights it can hold exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import fit_photo_part
from unet_jax import whole_photo
from unet_jax.models import auto_levels

TAIL = auto_levels._TAIL  # quantiles at each end the points read


def _photos(seed=0, count=3, size=24):
  """Photos of different ranges and casts: each channel spans its own part of [0, 1]."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  low = jax.random.uniform(keys[0], (count, 1, 1, 3), maxval=0.3)
  high = low + jax.random.uniform(keys[1], (count, 1, 1, 3), minval=0.3, maxval=0.7)
  return low + (high - low) * jax.random.uniform(keys[2], (count, size, size, 3)) ** 1.5


def _init(images):
  figures = whole_photo.photo_figures(images, tones=True)
  model = auto_levels.AutoLevels()
  return model, model.init(jax.random.PRNGKey(0), images, figures)['params'], figures


def test_untrained_levels_leave_photos_as_they_are():
  images = _photos()
  model, params, figures = _init(images)
  np.testing.assert_allclose(model.apply({'params': params}, images, figures), images, atol=1e-6)


def test_tone_figures_carry_each_channels_quantiles_and_mean():
  images = np.asarray(_photos(count=1))
  quantiles, means = whole_photo.tone_parts(whole_photo.photo_figures(images, True, np))
  np.testing.assert_allclose(quantiles[0, :, 0], images[0].min((0, 1)), atol=1e-5)
  np.testing.assert_allclose(quantiles[0, :, -1], images[0].max((0, 1)), atol=1e-5)
  np.testing.assert_allclose(means[0], images[0].mean((0, 1)), rtol=1e-6)


def _with(params, **weights):
  """`params` with the named `[module, leaf]` entries set at `index` to `value`."""
  params = jax.tree.map(np.array, params)
  for (module, leaf, index), value in weights.values():
    target = params[module][leaf]['kernel'] if leaf == 'linear' else params[module][leaf]
    target[index] = value
  return params


def test_auto_level_and_auto_gamma_are_weights_it_holds():
  """ImageMagick's `-auto-level -auto-gamma`: every channel stretched from the darkest to the
  brightest value of the three, then raised to the power that brings the stretched mean to 0.5."""
  images = _photos()
  model, params, figures = _init(images)
  params = _with(
    params,
    black=(('black', 'linear', (TAIL, 0)), 1.0),  # the smallest of the minima
    white=(('white', 'linear', (2 * TAIL - 1, 0)), 1.0),  # 1 + (the largest maximum - 1)
    gamma=(('gamma', 'linear', (1, 0)), -1.0),  # log gamma = log log 2 - log(-log mean)
    gamma_bias=(('gamma', 'channel_bias', (slice(None), 0)), np.log(np.log(2.0))),
  )
  x = np.asarray(images, np.float64)
  low = x.min(axis=(1, 2, 3), keepdims=True)
  high = x.max(axis=(1, 2, 3), keepdims=True)
  stretched = (x - low) / (high - low)
  power = np.log(0.5) / np.log(stretched.mean(axis=(1, 2, 3), keepdims=True))
  expected = stretched**power
  graded = model.apply({'params': params}, images, figures)
  np.testing.assert_allclose(graded, expected, atol=2e-5)


def test_grey_world_is_weights_it_holds():
  """OpenCV's grey-world balance: each channel scaled by the smallest channel sum over its own."""
  images = _photos(seed=1)
  model, params, figures = _init(images)
  params = _with(
    params,
    own=(('gain', 'linear', (0, 0)), -1.0),
    smallest=(('gain', 'linear', (2, 0)), 1.0),
  )
  x = np.asarray(images, np.float64)
  means = x.mean(axis=(1, 2), keepdims=True)
  expected = x * means.min(axis=-1, keepdims=True) / means
  graded = model.apply({'params': params}, images, figures)
  np.testing.assert_allclose(graded, expected, atol=2e-5)


@pytest.mark.slow
def test_levels_learn_auto_levels_from_pairs_and_grade_unseen_photos():
  """Trained from zero on photos of many ranges under one rule, the stage grades held-out photos
  to within an 8-bit step (tone curves reach 0.2x their error before training)."""
  inputs = _photos(seed=2, count=48)
  low = inputs.min(axis=(1, 2, 3), keepdims=True)
  high = inputs.max(axis=(1, 2, 3), keepdims=True)
  targets = (inputs - low) / (high - low)
  model, params, figures = _init(inputs)
  optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, 600))
  params = fit_photo_part(model, params, inputs, figures, targets, optimizer, 600, jnp.square)
  held_out = _photos(seed=3, count=8)
  expected = (held_out - held_out.min(axis=(1, 2, 3), keepdims=True)) / (
    held_out.max(axis=(1, 2, 3), keepdims=True) - held_out.min(axis=(1, 2, 3), keepdims=True)
  )
  held_out_figures = whole_photo.photo_figures(held_out, tones=True)
  graded = model.apply({'params': params}, held_out, held_out_figures)
  before = float(jnp.sqrt(jnp.mean(jnp.square(held_out - expected))))
  after = float(jnp.sqrt(jnp.mean(jnp.square(graded - expected))))
  assert after < 1 / 255 and after < 0.05 * before, (before, after)
