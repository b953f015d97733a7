"""The image-adaptive levels (models/auto_levels.py): identity untrained, and the editors' auto
rules (auto levels + auto gamma, grey world) are weights it can hold exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import fit_photo_part
from unet_jax import whole_photo
from unet_jax.config import get_base_config
from unet_jax.models import auto_levels, create_model
from unet_jax.training import steps
from unet_jax.training.train_state import TrainState
from unet_jax.validation import ConfigError, validate_config

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


def test_tone_figures_carry_each_channels_quantiles_and_means():
  images = np.array(_photos(count=1))
  images[0, :4] = (0.9, 0.05, 0.1)  # a strongly coloured band, left out of the neutral means
  counted = images[0].max(-1) - images[0].min(-1) <= 0.9 * images[0].max(-1)
  figures = whole_photo.photo_figures(images, True, np)
  quantiles, means, neutral = whole_photo.tone_parts(figures)
  np.testing.assert_allclose(quantiles[0, :, 0], images[0].min((0, 1)), atol=1e-5)
  np.testing.assert_allclose(quantiles[0, :, -1], images[0].max((0, 1)), atol=1e-5)
  np.testing.assert_allclose(means[0], images[0].mean((0, 1)), rtol=1e-6)
  assert not counted[:4].any()
  np.testing.assert_allclose(neutral[0], images[0][counted].mean(0), rtol=1e-6)
  # In the graph (a model given no figures takes them itself) they are the same figures.
  np.testing.assert_allclose(whole_photo.photo_figures(images, True), figures, rtol=2e-5, atol=2e-5)


def test_neutral_means_of_a_large_photo_leave_out_its_strongly_coloured_pixels():
  """Taken in chunks by numpy (a 24 MP photo at once would cost gigabytes), equal to the rule
  on the whole array; a photo with no neutral pixel falls back to every pixel's mean."""
  rng = np.random.default_rng(5)
  photo = rng.random((600, 520, 3), dtype=np.float32)  # more pixels than one chunk
  photo[:100] = (0.8, 0.02, 0.3)
  counted = photo.max(-1) - photo.min(-1) <= 0.9 * photo.max(-1)
  assert photo.shape[0] * photo.shape[1] > whole_photo._CHUNK and not counted[:100].any()
  np.testing.assert_allclose(
    whole_photo.neutral_means(photo, np), photo[counted].mean(0, dtype=np.float64), rtol=1e-6
  )
  red = np.zeros((4, 4, 3), np.float32) + (1.0, 0.0, 0.0)
  np.testing.assert_allclose(whole_photo.neutral_means(red, np), (1.0, 0.0, 0.0))
  np.testing.assert_allclose(whole_photo.neutral_means(red), (1.0, 0.0, 0.0))


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


@pytest.mark.parametrize('neutral_only', [True, False], ids=['opencv', 'every_pixel'])
def test_grey_world_is_weights_it_holds(neutral_only):
  """A grey-world balance: each channel scaled by the smallest channel mean over its own. OpenCV's
  takes the means over the pixels whose saturation (max - min) / max is at most 0.9; the plain
  rule over every pixel (the gain's second block of figures adds the difference)."""
  images = np.array(_photos(seed=1))
  images[:, :5] = (0.95, 0.2, 0.02)  # saturation 0.98: left out of OpenCV's means
  images = jnp.asarray(images)
  model, params, figures = _init(images)
  weights = {'own': ((0,), -1.0), 'smallest': ((2,), 1.0)}
  if not neutral_only:  # + (every pixel's figure - the neutral one's)
    weights.update({'own_every': ((4,), -1.0), 'smallest_every': ((6,), 1.0)})
  params = _with(params, **{k: (('gain', 'linear', (*i, 0)), v) for k, (i, v) in weights.items()})
  x = np.asarray(images, np.float64)
  counted = (x.max(-1) - x.min(-1) <= 0.9 * x.max(-1))[..., None]
  assert not counted[:, :5].any() and counted.mean() > 0.5
  if not neutral_only:
    counted = np.ones_like(counted)
  means = (x * counted).sum(axis=(1, 2), keepdims=True) / counted.sum(axis=(1, 2), keepdims=True)
  expected = x * means.min(axis=-1, keepdims=True) / means
  graded = model.apply({'params': params}, images, figures)
  np.testing.assert_allclose(graded, expected, atol=2e-5)


def test_the_offset_shifts_each_channel_by_8_bit_steps():
  """`offset`: zero at init (the identity), and a weight of -0.5 lowers every value half a step
  of an 8-bit file, as an editor's truncation does (tests/training/test_levels_prefit.py fits
  it)."""
  images = _photos()
  figures = whole_photo.photo_figures(images, tones=True)
  model = auto_levels.AutoLevels(offset=True)
  params = model.init(jax.random.PRNGKey(0), images, figures)['params']
  np.testing.assert_allclose(model.apply({'params': params}, images, figures), images, atol=1e-6)
  params = jax.tree.map(np.array, params)
  params['offset'][:] = (-0.5, 0.0, 0.25)
  graded = model.apply({'params': params}, images, figures)
  expected = np.clip(np.asarray(images) + np.array([-0.5, 0.0, 0.25]) / 255, 0.0, 1.0)
  np.testing.assert_allclose(graded, expected, atol=1e-6)


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


def _levels_config(**loss):
  config = get_base_config()
  config.model.update(
    levels=2, base_channels=4, auto_levels=True, thumbnail='photo', global_context='none'
  )
  config.loss.update(perceptual=0.0, ssim=0.0, **loss)
  return config


@pytest.mark.slow
def test_the_auto_levels_loss_fits_the_stage_itself_to_the_target():
  """`loss.auto_levels`: an L1 term on the levelled photo alone, beside the whole model's; it
  teaches the stage the editor's stretch."""
  config = _levels_config(auto_levels=1.0)
  inputs = jnp.asarray(_photos(seed=4, count=8, size=16))
  low = inputs.min(axis=(1, 2, 3), keepdims=True)
  high = inputs.max(axis=(1, 2, 3), keepdims=True)
  batch = {
    'input': inputs,
    'target': (inputs - low) / (high - low),
    'statistics': whole_photo.photo_figures(inputs, tones=True),
  }
  model = create_model(config.model, task=config.task)
  variables = model.init(jax.random.key(0), inputs, statistics=batch['statistics'])
  optimizer = optax.adam(1e-2)
  params = variables['params']
  state = TrainState(
    jnp.zeros((), jnp.int32), params, variables['batch_stats'], optimizer.init(params), params
  )
  step = jax.jit(
    lambda s: steps.train_step(s, batch, {}, model=model, optimizer=optimizer, config=config)
  )
  state, first = step(state)
  # Untrained, the stage is the identity and the U-Net's edit zero: both terms are the same.
  untrained = float(jnp.mean(jnp.abs(inputs - batch['target'])))
  assert float(first['loss_auto_levels']) == pytest.approx(untrained, rel=1e-5)
  assert float(first['loss_l1']) == pytest.approx(untrained, rel=1e-5)
  for _ in range(150):
    state, metrics = step(state)
  assert float(metrics['loss_auto_levels']) < 0.1 * untrained


def test_the_auto_levels_loss_needs_the_stage():
  config = _levels_config(auto_levels=1.0)
  validate_config(config, training=True, check_data_files=False)
  config.model.update(auto_levels=False, thumbnail='crop')
  with pytest.raises(ConfigError, match=r'config.loss.auto_levels=1.0 .*model.auto_levels=True'):
    validate_config(config, training=True, check_data_files=False)
  config.loss.auto_levels = -1.0
  with pytest.raises(ConfigError, match='config.loss.auto_levels'):
    validate_config(config, training=True, check_data_files=False)


def test_the_offset_needs_the_stage():
  config = _levels_config()
  config.model.auto_levels_offset = True
  validate_config(config, training=True, check_data_files=False)
  config.model.update(auto_levels=False, thumbnail='crop')
  with pytest.raises(ConfigError, match=r'auto_levels_offset=True .*model.auto_levels=True'):
    validate_config(config, training=True, check_data_files=False)
