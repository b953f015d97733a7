"""`optimizer.local_grid_prefit`: the local grid fitted as one transform over the frame before
the first step (training/grid_prefit.py); the grid learns on from there."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.helpers import tiny_config
from unet_jax import whole_photo
from unet_jax.models import local_affine
from unet_jax.training import grid_prefit, levels_prefit
from unet_jax.validation import ConfigError, validate_config

THUMBNAIL = 32


def _local_contrast(photo: np.ndarray, strength: float) -> np.ndarray:
  """`photo + strength * (photo - its local mean)`, the mean read as the grid reads it: a
  local contrast the detail weights hold exactly."""
  inputs = whole_photo.WholePhotoInputs(thumbnail_size=THUMBNAIL, extremes=True)
  guides = local_affine.guide_fields(jnp.asarray(inputs.thumbnail_of(photo))[None], True)
  height, width = photo.shape[:2]
  coords = whole_photo.photo_coords(np.arange(height), np.arange(width), height, width)
  detail = local_affine.pixel_detail(guides, jnp.asarray(photo)[None], jnp.asarray(coords)[None])
  return photo + strength * np.asarray(detail)[0, :, :, 0]


def test_the_fit_finds_a_local_contrasts_strength_from_a_sample_of_pixels():
  rng = np.random.default_rng(0)
  inputs, targets, coords, thumbnails = [], [], [], []
  reads = whole_photo.WholePhotoInputs(thumbnail_size=THUMBNAIL, extremes=True)
  for seed in range(6):
    photo = helpers.photo(48, 64, seed=seed)
    target = _local_contrast(photo, 0.8)
    kept = rng.permutation(48 * 64)[:2000]
    place = whole_photo.photo_coords(np.arange(48), np.arange(64), 48, 64).reshape(-1, 2)
    inputs.append(photo.reshape(-1, 3)[kept])
    targets.append(target.reshape(-1, 3)[kept])
    coords.append(place[kept])
    thumbnails.append(reads.thumbnail_of(photo))
  sample = levels_prefit.PixelSample(
    *(np.stack(a) for a in (inputs, targets, coords)), None, np.stack(thumbnails)
  )
  fitted, before, after = grid_prefit.fit_uniform_grid(sample, detail=True, extremes=True)
  assert fitted.shape == (12 + 9 * 4,)
  assert after < 1e-3 * before
  # The first detail block (the 1/32 window's mean) at the strength, the rest near zero.
  np.testing.assert_allclose(fitted[12:21], 0.8 * np.eye(3).reshape(9), atol=0.03)
  np.testing.assert_allclose(fitted[:12], 0.0, atol=0.03)
  # Without the detail, the grid can only fit an affine colour map: far from the look.
  _, _, affine_after = grid_prefit.fit_uniform_grid(sample, detail=False, extremes=False)
  assert affine_after > 100 * after


@pytest.mark.slow
def test_a_prefit_run_starts_from_the_fitted_grid_and_learns_on(tmp_path):
  # Half the contrast about mid-grey, plus a local contrast: within [0, 1] for any photo, so no
  # clipping bends the fit (the photos are uniform noise).
  look = lambda photo: _local_contrast(0.5 * photo + 0.25, 0.5)
  first, last = helpers.train_on_look(
    tmp_path,
    look,
    **{
      'model.thumbnail': 'photo',
      'model.thumbnail_size': THUMBNAIL,
      'model.local_grid': 8,
      'model.local_grid_extremes': True,
      'model.local_grid_detail': True,
      'optimizer.local_grid_prefit': True,
    },
  )
  # Fitted before step 1, to the look's numbers (8-bit files): the matrix halves the colours,
  # the offset adds a quarter, the first detail block weighs the detail by 0.5 x 0.5.
  bias = first['local_affine']['coefficients']['bias']
  np.testing.assert_allclose(np.diag(bias[:9].reshape(3, 3)), -0.5, atol=0.05)
  np.testing.assert_allclose(bias[9:12], 0.25, atol=0.05)
  np.testing.assert_allclose(np.diag(bias[12:21].reshape(3, 3)), 0.25, atol=0.05)
  # ... and not held: the grid's last layer moved on.
  assert not np.array_equal(bias, last['local_affine']['coefficients']['bias'])


def test_the_prefit_needs_a_local_grid_and_not_the_levels_prefit():
  config = tiny_config(**{'optimizer.local_grid_prefit': True})
  with pytest.raises(ConfigError, match=r'local_grid_prefit=True .*model.local_grid'):
    validate_config(config, check_data_files=False)
  config.model.update(local_grid=8, thumbnail='photo', thumbnail_size=32)
  validate_config(config, check_data_files=False)
  config.model.auto_levels = True
  config.optimizer.auto_levels_prefit = True
  with pytest.raises(ConfigError, match=r'local_grid_prefit=True .*auto_levels_prefit=True'):
    validate_config(config, check_data_files=False)
