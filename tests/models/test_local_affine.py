"""The local affine grid (models/local_affine.py): slicing, tiles, and the identity at init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import tiny_config
from unet_jax import whole_photo
from unet_jax.models import local_affine
from unet_jax.models.global_grade import sample_frame_field
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
  inputs = whole_photo.WholePhotoInputs(thumbnail_size=32, extremes=True)
  thumbnail = inputs.fill_in(photo, None, None, None)[0]
  # With the thumbnail's local statistics, extremes and detail: they too are the whole photo's.
  model = local_affine.LocalAffine(grid=8, features=8, statistics=True, extremes=True, detail=True)
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


def test_local_extremes_are_each_windows_extremes_and_the_inverse_of_their_range():
  extremes = jax.random.uniform(jax.random.PRNGKey(7), (1, 64, 64, 6))
  extremes = extremes.at[..., 3:].add(1.0)  # the brightest above the darkest
  features = np.asarray(local_affine.local_extremes(extremes))
  assert features.shape == (1, 64, 64, 32)
  darkest, brightest = np.asarray(extremes)[0, ..., :3], np.asarray(extremes)[0, ..., 3:]
  for window, radius in enumerate((2, 4)):  # 1/32 and 1/16 of 64 px
    low, high, inverse, scaled = np.split(features[0, ..., 16 * window : 16 * (window + 1)], 4, -1)
    for y, x in ((0, 0), (10, 63), (31, 32), (63, 5)):  # corners, edges and the middle
      inside = np.s_[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
      np.testing.assert_allclose(low[y, x, :3], darkest[inside].min(axis=(0, 1)))
      np.testing.assert_allclose(high[y, x, :3], brightest[inside].max(axis=(0, 1)))
      np.testing.assert_allclose(low[y, x, 3], darkest[inside].min())  # over all channels
      np.testing.assert_allclose(high[y, x, 3], brightest[inside].max())
    np.testing.assert_allclose(inverse, 0.02 / (high - low + 0.02), rtol=1e-6)
    np.testing.assert_allclose(scaled, low * inverse, rtol=1e-6)
  # A flat photo: no range, an inverse of 1.
  flat = np.asarray(local_affine.local_extremes(jnp.full((1, 32, 32, 6), 0.3)))
  np.testing.assert_allclose(flat[..., 8:12], 1.0, atol=1e-6)


def test_the_detail_weights_make_a_local_contrast_and_a_local_stretch():
  """A grid whose only coefficients weigh the detail by `s` adds `s` times the photo minus its
  local mean, and `s` times its place between its local extremes: the same weights everywhere."""
  photo = jax.random.uniform(jax.random.PRNGKey(8), (1, 40, 56, 3))
  inputs = whole_photo.WholePhotoInputs(thumbnail_size=32, extremes=True)
  thumbnail = inputs.fill_in(photo, None, None, None)[0]
  coords = _coords(40, 56)
  guides = local_affine.guide_fields(thumbnail, extremes=True)
  assert guides.shape == (1, 32, 32, 10)
  fields = jax.vmap(sample_frame_field)(guides, local_affine.cell_lattice(coords, 32))
  for block, scale in ((0, 0.5), (1, -0.3), (3, 0.7)):  # mean 1/32, extremes 1/32, extremes 1/16
    grid = np.zeros((1, 4, 4, 12 + 9 * 4), np.float32)
    grid[..., 12 + 9 * block : 12 + 9 * (block + 1)] = scale * np.eye(3).reshape(9)
    graded = local_affine.slice_affine(jnp.asarray(grid), photo, coords, guides, photo)
    start = 5 * (block // 2)
    if block % 2 == 0:
      expected = photo + scale * (photo - fields[..., start : start + 3])
    else:
      low, inverse = fields[..., start + 3 : start + 4], fields[..., start + 4 : start + 5]
      expected = photo + scale * (photo - low) * inverse
    np.testing.assert_allclose(graded, expected, atol=1e-5)
  # The local mean is the box mean of the thumbnail's colours, as the statistics read it.
  np.testing.assert_allclose(
    guides[..., :3], local_affine.local_statistics(thumbnail[..., :3])[..., :3], atol=1e-6
  )


@pytest.mark.parametrize(
  'option', ['local_grid_statistics', 'local_grid_extremes', 'local_grid_detail']
)
def test_the_local_grids_inputs_without_a_local_grid_are_refused_naming_both_options(option):
  overrides = {'model.thumbnail': 'photo', 'model.curves': 8, 'model.thumbnail_size': 64}
  with pytest.raises(ConfigError, match=rf'{option}=True .* config\.model\.local_grid'):
    validate_config(tiny_config(**overrides, **{f'model.{option}': True}))
  validate_config(tiny_config(**overrides, **{f'model.{option}': True, 'model.local_grid': 16}))


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
