"""`optimizer.auto_levels_prefit`: the auto levels fitted alone to the training pairs before the
first step (training/levels_prefit.py), then held still."""

import jax
import numpy as np
import pytest

from tests import helpers
from tests.helpers import tiny_config
from unet_jax import whole_photo
from unet_jax.models import auto_levels
from unet_jax.training import levels_prefit
from unet_jax.validation import ConfigError, validate_config


def _photos(seed: int, count: int, size: int = 32) -> np.ndarray:
  """8-bit photos of different ranges and casts, some with a strongly coloured corner."""
  rng = np.random.default_rng(seed)
  low = rng.uniform(0.0, 0.3, (count, 1, 1, 3))
  high = low + rng.uniform(0.3, 0.7, (count, 1, 1, 3))
  photos = low + (high - low) * rng.random((count, size, size, 3)) ** 1.5
  photos[: count // 2, :4, :4] = (0.95, 0.2, 0.02)
  return (np.round(photos * 255) / 255).astype(np.float32)


def _grey_world_truncated(photos: np.ndarray) -> np.ndarray:
  """OpenCV's grey world as it writes 8-bit files: each channel times the smallest neutral
  channel mean over its own, truncated."""
  neutral = whole_photo.neutral_means(photos, np)
  gains = neutral.min(-1, keepdims=True) / neutral
  return np.floor(photos * 255 * gains[:, None, None, :]) / 255


def _auto_level_gamma_truncated(photos: np.ndarray) -> np.ndarray:
  """ImageMagick's `-auto-level -auto-gamma`, truncated to 8 bits."""
  low = photos.min(axis=(1, 2, 3), keepdims=True)
  high = photos.max(axis=(1, 2, 3), keepdims=True)
  stretched = (photos - low) / (high - low)
  power = np.log(0.5) / np.log(stretched.mean(axis=(1, 2, 3), keepdims=True))
  return np.floor(stretched**power * 255) / 255


@pytest.mark.parametrize('rule', [_grey_world_truncated, _auto_level_gamma_truncated])
def test_the_fit_recovers_an_editors_rule_and_grades_unseen_photos_to_its_file(rule):
  """From zero weights, on a sample of 24 photos' pixels, the stage with its offset grades 8
  photos it never saw within 0.35 of an 8-bit step RMS of the editor's files: the truncation
  alone is 0.29 (uniform over a step) for any output that is not itself in whole steps. (The
  half step down is shared by the offset and the black points, which the ridge finds cheaper.)"""
  train, held_out = _photos(1, 24), _photos(2, 8)
  figures = whole_photo.photo_figures(train, True, np)
  model = auto_levels.AutoLevels(offset=True)
  init = model.init(jax.random.key(0), train[:1], figures[:1])['params']
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 32 * 32, (24, 400))
  sample = lambda images: np.take_along_axis(images.reshape(24, -1, 3), pixels[..., None], 1)
  fitted, before, after = levels_prefit.fit_auto_levels(
    init, True, sample(train), sample(rule(train)), figures
  )
  assert after < 1e-3 * before
  graded = model.apply({'params': fitted}, held_out, whole_photo.photo_figures(held_out, True, np))
  wanted = rule(held_out)
  steps = lambda a: 255 * float(np.sqrt(np.mean(np.square(np.asarray(a) - wanted))))
  assert steps(graded) < 0.35 and steps(held_out) > 10, (steps(graded), steps(held_out))


@pytest.mark.slow
def test_a_prefit_run_starts_from_the_fitted_levels_and_holds_them(tmp_path):
  look = lambda x: _grey_world_truncated(x[None])[0] + 0.25 / 255  # rounded to the same file
  first, last = helpers.train_on_look(
    tmp_path,
    look,
    **{
      'model.thumbnail': 'photo',
      'model.auto_levels': True,
      'model.auto_levels_offset': True,
      'optimizer.auto_levels_prefit': True,
    },
  )
  # Fitted before step 1: the gains moved off the identity; held still from then on.
  assert np.abs(first['auto_levels']['gain']['linear']['kernel']).max() > 0.5
  jax.tree.map(np.testing.assert_array_equal, first['auto_levels'], last['auto_levels'])
  # ... while the U-Net learned.
  assert not np.array_equal(
    first['decoder_0']['conv_0']['kernel'], last['decoder_0']['conv_0']['kernel']
  )


def test_the_prefit_needs_the_stage_and_replaces_its_loss():
  config = tiny_config(**{'optimizer.auto_levels_prefit': True})
  with pytest.raises(ConfigError, match=r'auto_levels_prefit=True .*model.auto_levels=True'):
    validate_config(config, check_data_files=False)
  config.model.update(auto_levels=True, thumbnail='photo')
  validate_config(config, check_data_files=False)
  config.loss.auto_levels = 1.0
  with pytest.raises(ConfigError, match=r'loss.auto_levels=1.0 .*auto_levels_prefit=True'):
    validate_config(config, check_data_files=False)
