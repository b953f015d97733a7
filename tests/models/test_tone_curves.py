"""The per-photo tone curves (models/tone_curves.py) and the tone quantiles they read."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import fit_photo_part
from unet_jax import whole_photo
from unet_jax.models import tone_curves


def _photos(seed=0, shape=(2, 12, 10, 3)):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape)


def test_apply_curves_interpolates_between_knots():
  images = _photos()
  knots = jnp.linspace(0.0, 1.0, 33)
  # A square curve sampled at 33 knots: linear interpolation is within its chord error,
  # (1 / 32)^2 / 4.
  curves = jnp.broadcast_to(knots**2, (2, 3, 33))
  graded = tone_curves.apply_curves(curves, images)
  np.testing.assert_allclose(graded, images**2, atol=2.5e-4)
  identity = jnp.broadcast_to(knots, (2, 3, 33))
  np.testing.assert_allclose(tone_curves.apply_curves(identity, images), images, atol=1e-6)


def test_each_photo_and_channel_takes_its_own_curve():
  images = jnp.full((2, 4, 4, 3), 0.5)
  knots = jnp.linspace(0.0, 1.0, 5)
  gains = jnp.asarray([[1.0, 0.5, 0.2], [0.8, 1.2, 0.4]])
  curves = gains[:, :, None] * knots
  graded = tone_curves.apply_curves(curves, images)
  np.testing.assert_allclose(graded[:, 0, 0, :], 0.5 * gains, atol=1e-6)


@pytest.mark.slow
def test_untrained_curves_leave_photos_as_they_are():
  images = _photos()
  figures = whole_photo.photo_figures(images, tones=True)
  model = tone_curves.ToneCurves(knots=8)
  variables = model.init(jax.random.PRNGKey(0), images, figures)
  np.testing.assert_allclose(model.apply(variables, images, figures), images, atol=1e-6)


def test_tone_quantiles_agree_in_numpy_and_jax_and_read_each_channel():
  images = np.array(_photos(1, (1, 20, 30, 3)))
  images[..., 2] *= 0.5  # a blue cast: blue's quantiles halve
  in_numpy = whole_photo.tone_quantiles(images, np)
  in_jax = whole_photo.tone_quantiles(jnp.asarray(images))
  half_step = 0.5 / 65535  # numpy counts 16-bit codes; exact for 8- and 16-bit values
  np.testing.assert_allclose(in_numpy, in_jax, atol=half_step)
  eight_bit = np.round(images * 255) / 255
  np.testing.assert_allclose(
    whole_photo.tone_quantiles(eight_bit, np), whole_photo.tone_quantiles(eight_bit), atol=1e-6
  )
  levels = len(whole_photo.TONE_QUANTILES)
  per_channel = in_numpy.reshape(1, 3, levels)
  np.testing.assert_allclose(per_channel[0, 2, 0], images[..., 2].min(), atol=half_step)
  np.testing.assert_allclose(per_channel[0, 0, -1], images[..., 0].max(), atol=half_step)
  median = np.median(images[..., 2])
  np.testing.assert_allclose(per_channel[0, 2, levels // 2], median, atol=half_step)


@pytest.mark.slow
def test_curves_learn_a_grade_that_each_photo_sets_from_its_own_histogram():
  """An auto levels (each photo stretched from its own min and max to [0, 1]) is one network
  for all photos, not one curve: trained on photos of many ranges, it grades unseen ones."""

  def photos(seed, count):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    low = jax.random.uniform(keys[0], (count, 1, 1, 1), maxval=0.3)
    high = low + jax.random.uniform(keys[1], (count, 1, 1, 1), minval=0.4, maxval=0.7)
    images = low + (high - low) * jax.random.uniform(keys[2], (count, 16, 16, 3))
    return images, (images - low) / (high - low)

  inputs, targets = photos(0, 64)
  model = tone_curves.ToneCurves(knots=16)
  figures = whole_photo.photo_figures(inputs, tones=True)
  params = model.init(jax.random.PRNGKey(1), inputs, figures)['params']
  params = fit_photo_part(model, params, inputs, figures, targets, optax.adam(3e-3), 400)
  held_out, expected = photos(2, 16)
  held_out_figures = whole_photo.photo_figures(held_out, tones=True)
  before = float(jnp.mean(jnp.abs(held_out - expected)))
  graded = model.apply({'params': params}, held_out, held_out_figures)
  after = float(jnp.mean(jnp.abs(graded - expected)))
  assert after < 0.2 * before, (before, after)
