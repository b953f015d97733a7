"""A local grade over the frame: a per-pixel colour transform predicted from the thumbnail.

Large-radius local looks (local contrast, local normalisation, glows, dodging and burning) act
over tens of pixels of a 1 MP photo: more than a training crop or the U-Net's receptive field
holds, and no global curve or table can make them. As in HDRNet (Gharbi et al., SIGGRAPH 2017),
a small network reads the whole photo at low resolution and predicts a coarse grid of affine
colour transforms, sliced at full resolution: each pixel gets the transform interpolated at its
place in the frame. Without HDRNet's intensity axis, as the looks it is built for (a blur
subtracted or divided out) vary smoothly over the frame. It reads the whole-photo thumbnail and
each pixel's whole-photo coordinates, so crops, tiles and the whole image are graded alike.

With `statistics`, the grid network also reads the thumbnail's local means and spreads (and a
bounded inverse of the spreads) over two windows. A local normalisation divides each pixel's
distance from its neighbourhood's mean by that neighbourhood's spread: a division that a few
convolutions of the colours learn poorly from a hundred pairs, and that these inputs hand the
network directly.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.models import global_grade

# Each grid cell: a 3 x 3 matrix and an offset, as offsets from the identity.
COEFFICIENTS = 12
# Dilations of the residual convolutions at grid resolution: they widen the reach to about 15
# cells, so a cell's transform can depend on its surroundings, as a local contrast's does.
DILATIONS = (1, 2, 4, 1)
# The windows of the local statistics, as fractions of the thumbnail's side (half-widths of 1/32
# and 1/16 of the frame: 32 and 64 px on a 1024 px photo, the radii of editors' local looks).
STATISTICS_RADII = (1 / 32, 1 / 16)
# The inverse spread is SPREAD_FLOOR / (spread + SPREAD_FLOOR): 1 on flat areas, bounded below 1.
SPREAD_FLOOR = 0.02


class LocalAffine(nn.Module):
  """`[B, H, W, 3]` colours -> the same, each pixel through the affine transform sliced from a
  `[B, grid, grid, 12]` grid read off the `thumbnail [B, T, T, 3]` of its whole photo, at its
  `coords [B, H, W, 2]` (y, x in [-1, 1]). The grid's last layer starts at zero: the identity.
  `T / grid` must be a power of two (the thumbnail is halved down to the grid)."""

  grid: int = 32
  features: int = 32
  statistics: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, thumbnail: jax.Array, coords: jax.Array) -> jax.Array:
    features = thumbnail.astype(jnp.float32)
    if self.statistics:
      features = jnp.concatenate([features, local_statistics(features)], axis=-1)
    size, stage = thumbnail.shape[1], 0
    while size > self.grid:
      features = nn.Conv(self.features, (3, 3), strides=(2, 2), name=f'down_{stage}')(features)
      features = nn.leaky_relu(features, 0.2)
      size, stage = size // 2, stage + 1
    if stage == 0:
      features = nn.Conv(self.features, (3, 3), name='down_0')(features)
    for i, dilation in enumerate(DILATIONS):
      update = nn.Conv(self.features, (3, 3), kernel_dilation=dilation, name=f'context_{i}')
      features = features + update(nn.leaky_relu(features, 0.2))
    whole = nn.Dense(self.features, name='whole_frame')(jnp.mean(features, axis=(1, 2)))
    features = nn.leaky_relu(features + whole[:, None, None, :], 0.2)
    zeros = nn.initializers.zeros
    grid = nn.Conv(COEFFICIENTS, (1, 1), kernel_init=zeros, bias_init=zeros, name='coefficients')(
      features
    )
    self.sow('intermediates', 'local_affine', grid)
    return slice_affine(grid, images, coords)


def local_statistics(thumbnail: jax.Array) -> jax.Array:
  """`[B, T, T, C]` -> `[B, T, T, 3 * C * len(STATISTICS_RADII)]`: per channel and window
  (`STATISTICS_RADII`), the local mean, the local standard deviation and the bounded inverse
  spread `SPREAD_FLOOR / (std + SPREAD_FLOOR)`. Box windows, averaged over the pixels inside the
  frame at the edges."""
  size, outputs = thumbnail.shape[1], []
  for fraction in STATISTICS_RADII:
    radius = max(1, round(fraction * size))
    mean = _box_mean(thumbnail, radius)
    spread = jnp.sqrt(jnp.maximum(_box_mean(thumbnail * thumbnail, radius) - mean * mean, 0.0))
    outputs += [mean, spread, SPREAD_FLOOR / (spread + SPREAD_FLOOR)]
  return jnp.concatenate(outputs, axis=-1)


def _box_mean(x: jax.Array, radius: int) -> jax.Array:
  """The mean over a `(2 radius + 1)^2` window of each channel of `x [B, H, W, C]`, over the
  pixels inside the frame: a depthwise convolution of ones."""
  height, width, channels = x.shape[1:]
  side = 2 * radius + 1
  kernel = jnp.ones((side, side, 1, channels), x.dtype)
  dimensions = ('NHWC', 'HWIO', 'NHWC')
  sums = jax.lax.conv_general_dilated(
    x, kernel, (1, 1), 'SAME', dimension_numbers=dimensions, feature_group_count=channels
  )
  # Pixels inside the frame under each window: a constant of the shapes.
  counts = np.outer(_inside(height, radius), _inside(width, radius)).astype(np.float32)
  return sums / counts[None, :, :, None]


def _inside(length: int, radius: int) -> np.ndarray:
  """How many of the `2 radius + 1` positions around each index of `range(length)` lie in it."""
  index = np.arange(length)
  return np.minimum(index + radius, length - 1) - np.maximum(index - radius, 0) + 1


def slice_affine(grid: jax.Array, images: jax.Array, coords: jax.Array) -> jax.Array:
  """Applies `grid [B, G, G, 12]` (cell centres over the frame) at each pixel's `coords`.

  The grid's cells tile the frame as a convolution's outputs do: cell `i`'s centre sits at
  `(i + 0.5) / G` of the frame. Between centres the coefficients are bilinear; beyond the outer
  centres they hold their edge value.
  """
  field = jax.vmap(global_grade.sample_frame_field)(grid, cell_lattice(coords, grid.shape[1]))
  return apply_affine(field, images)


def cell_lattice(coords: jax.Array, cells: int) -> jax.Array:
  """Frame coordinates in [-1, 1] -> the lattice coordinates (in [-1, 1]) that put the centres
  of `cells` cells at lattice points (`global_grade.sample_frame_field` reads a lattice whose
  ends are the frame's edges). Elementwise: rows and columns may be mapped apart."""
  position = ((coords.astype(jnp.float32) + 1.0) * (0.5 * cells) - 0.5) / (cells - 1)
  return jnp.clip(position * 2.0 - 1.0, -1.0, 1.0)


def apply_affine(field: jax.Array, images: jax.Array) -> jax.Array:
  """`[..., 12]` coefficients (3 x 3 matrix, then offset, as offsets from the identity) applied
  to `[..., 3]` colours."""
  matrix = field[..., :9].reshape(*field.shape[:-1], 3, 3)
  colours = images.astype(jnp.float32)
  return colours + jnp.einsum('...ij,...j->...i', matrix, colours) + field[..., 9:]
