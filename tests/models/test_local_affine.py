"""The local affine grid (models/local_affine.py): slicing, tiles, and the identity at init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import tiny_config
from unet_jax import whole_photo
from unet_jax.models import local_affine
from unet_jax.validation import ConfigError, validate_config


def _coords(height, width, batch=1):
  grid = whole_photo.photo_coords(np.arange(height), np.arange(width), height, width)
  return jnp.broadcast_to(jnp.asarray(grid), (batch, height, width, 2))


def test_a_uniform_grid_is_one_affine_transform_everywhere():
  images = jax.random.uniform(jax.random.PRNGKey(0), (1, 9, 7, 3))
  matrix = jnp.asarray([[0.2, 0.1, 0.0], [0.0, -0.3, 0.0], [0.05, 0.0, 0.1]])
  offset = jnp.asarray([0.01, -0.02, 0.03])
  grid = jnp.broadcast_to(jnp.concatenate([matrix.reshape(9), offset]), (1, 4, 4, 12))
  graded = local_affine.slice_affine(grid, images, _coords(9, 7))
  expected = images + jnp.einsum('ij,...j->...i', matrix, images) + offset
  np.testing.assert_allclose(graded, expected, atol=1e-6)


def test_each_cell_holds_at_its_centre_and_blends_between():
  """Cell i covers [i, i + 1) / G of the frame: a pixel at its centre takes its transform."""
  cells, size = 4, 16  # each cell is 4 x 4 pixels; its centre lies between pixels 1 and 2
  offsets = np.zeros((1, cells, cells, 12), np.float32)
  offsets[0, 1, 2, 9] = 1.0  # red + 1 in the cell at row 1, column 2
  images = jnp.zeros((1, size, size, 3))
  red = np.asarray(local_affine.slice_affine(jnp.asarray(offsets), images, _coords(size, size)))
  red = red[0, :, :, 0]
  # Pixels 5 and 6 straddle row 1's centre (5.5), pixels 9 and 10 column 2's (9.5).
  np.testing.assert_allclose(red[5:7, 9:11], 0.875**2, atol=1e-6)
  assert red[5:7, 9:11].min() > red.max() - 1e-6
  np.testing.assert_allclose(red[:, 0], 0.0, atol=1e-6)  # two cells away: untouched


@pytest.mark.slow
def test_a_tile_is_graded_as_its_part_of_the_whole_photo():
  height, width = 40, 56
  photo = jax.random.uniform(jax.random.PRNGKey(1), (1, height, width, 3))
  thumbnail = whole_photo.resize_thumbnail(photo, 32)
  # With the thumbnail's local statistics: they too are the whole photo's, not the tile's.
  model = local_affine.LocalAffine(grid=8, features=8, statistics=True)
  variables = model.init(jax.random.PRNGKey(2), photo, thumbnail, _coords(height, width))
  # Random coefficients in place of the zero-initialised last layer, so the grid is not flat.
  last = variables['params']['coefficients']
  variables['params']['coefficients'] = jax.tree.map(
    lambda leaf: 0.1 * jax.random.normal(jax.random.PRNGKey(3), leaf.shape), last
  )
  coords = _coords(height, width)
  whole = model.apply(variables, photo, thumbnail, coords)
  tile = model.apply(variables, photo[:, 8:24, 20:44], thumbnail, coords[:, 8:24, 20:44])
  np.testing.assert_allclose(tile, whole[:, 8:24, 20:44], atol=1e-6)
  assert float(jnp.abs(whole - photo).max()) > 1e-2


@pytest.mark.slow
def test_untrained_grid_leaves_photos_as_they_are():
  photo = jax.random.uniform(jax.random.PRNGKey(4), (2, 24, 24, 3))
  thumbnail = whole_photo.resize_thumbnail(photo, 32)
  model = local_affine.LocalAffine(grid=8, features=8)
  coords = _coords(24, 24, batch=2)
  variables = model.init(jax.random.PRNGKey(5), photo, thumbnail, coords)
  np.testing.assert_allclose(model.apply(variables, photo, thumbnail, coords), photo, atol=1e-6)


def test_local_statistics_are_each_windows_mean_and_spread_inside_the_frame():
  thumbnail = jax.random.uniform(jax.random.PRNGKey(6), (1, 64, 64, 3))
  statistics = np.asarray(local_affine.local_statistics(thumbnail))
  assert statistics.shape == (1, 64, 64, 18)
  pixels = np.asarray(thumbnail, np.float64)[0]
  for window, radius in enumerate((2, 4)):  # 1/32 and 1/16 of 64 px
    mean, spread, inverse = np.split(statistics[0, ..., 9 * window : 9 * (window + 1)], 3, -1)
    for y, x in ((0, 0), (10, 63), (31, 32), (63, 5)):  # corners, edges and the middle
      inside = pixels[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
      np.testing.assert_allclose(mean[y, x], inside.mean(axis=(0, 1)), atol=1e-5)
      np.testing.assert_allclose(spread[y, x], inside.std(axis=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(inverse, 0.02 / (spread + 0.02), atol=1e-6)
  # A flat photo: its own colour, no spread, and an inverse spread of 1.
  flat = np.asarray(local_affine.local_statistics(jnp.full((1, 32, 32, 3), 0.3)))
  np.testing.assert_allclose(flat[..., :3], 0.3, atol=1e-6)
  np.testing.assert_allclose(flat[..., 3:6], 0.0, atol=1e-3)
  np.testing.assert_allclose(flat[..., 6:9], 1.0, atol=0.05)


def test_local_statistics_without_a_local_grid_are_refused_naming_both_options():
  overrides = {'model.thumbnail': 'photo', 'model.curves': 8, 'model.thumbnail_size': 64}
  with pytest.raises(ConfigError, match=r'local_grid_statistics=True .* config\.model\.local_grid'):
    validate_config(tiny_config(**overrides, **{'model.local_grid_statistics': True}))
  validate_config(
    tiny_config(**overrides, **{'model.local_grid_statistics': True, 'model.local_grid': 16})
  )


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'model.local_grid': 8, 'model.thumbnail_size': 64}, "thumbnail='photo'"),
    ({'model.curves': 8}, "thumbnail='photo'"),
    (
      {'model.local_grid': 24, 'model.thumbnail_size': 64, 'model.thumbnail': 'photo'},
      'power of two',
    ),
  ],
)
def test_configs_the_whole_photo_parts_cannot_read_are_refused_naming_the_option(
  overrides, message
):
  with pytest.raises(ConfigError, match=message):
    validate_config(tiny_config(**overrides))
  fixed = {**overrides, 'model.thumbnail': 'photo', 'model.thumbnail_size': 64}
  if 'model.local_grid' in fixed:
    fixed['model.local_grid'] = 16
  validate_config(tiny_config(**fixed))
