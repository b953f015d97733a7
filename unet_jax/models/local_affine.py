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

With `extremes`, the thumbnail carries each of its pixels' darkest and brightest values
(`whole_photo.cell_extremes`), and the grid network also reads their extremes over the same two
windows, the bounded inverse of the range between them, and the darkest value times that
inverse. A local min-max stretch (G'MIC's `normalize_local`) maps each pixel to
`(x - darkest) / range` around it: the grid's gain and offset are then those last two inputs,
which a thumbnail's averaged pixels cannot give (its range shrinks to nothing over fine texture).

With `detail`, each pixel's transform also weighs its detail against its neighbourhood
(`guide_fields`, read off the thumbnail and sliced at the pixel): the photo's value minus the
local mean, and with `extremes` its place between the local darkest and brightest values, over
each window. A local contrast (`x + s (x - mean)`) or a local min-max stretch is then mostly
one transform over the whole frame, where without it each cell's offset must follow the photo's
blur. Adam reaches that transform slowly from the zero start; `optimizer.local_grid_prefit`
(training/grid_prefit.py) fits it before the first step.
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
  `[B, grid, grid, 12]` grid read off the `thumbnail [B, T, T, 3]` of its whole photo (`9`
  channels with `extremes`: the colours, then each pixel's darkest and brightest values), at its
  `coords [B, H, W, 2]` (y, x in [-1, 1]). The grid's last layer starts at zero: the identity.
  `T / grid` must be a power of two (the thumbnail is halved down to the grid)."""

  grid: int = 32
  features: int = 32
  statistics: bool = False
  extremes: bool = False
  detail: bool = False

  @nn.compact
  def __call__(
    self,
    images: jax.Array,
    thumbnail: jax.Array,
    coords: jax.Array,
    photo: jax.Array | None = None,
  ) -> jax.Array:
    """`photo`: the input the detail is measured on (`detail`; default `images`)."""
    features = thumbnail.astype(jnp.float32)
    colours = features[..., :3]
    if self.statistics:
      features = jnp.concatenate([features, local_statistics(colours)], axis=-1)
    if self.extremes:
      features = jnp.concatenate([features, local_extremes(thumbnail[..., 3:9])], axis=-1)
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
    guides = guide_fields(thumbnail, self.extremes) if self.detail else None
    count = COEFFICIENTS + (9 * detail_blocks(self.extremes) if self.detail else 0)
    grid = nn.Conv(count, (1, 1), kernel_init=zeros, bias_init=zeros, name='coefficients')(features)
    self.sow('intermediates', 'local_affine', grid)
    if guides is not None:
      self.sow('intermediates', 'local_guides', guides)
    photo = images if photo is None else photo
    return slice_affine(grid, images, coords, guides, photo)


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


def local_extremes(extremes: jax.Array) -> jax.Array:
  """`[B, T, T, 6]` each thumbnail pixel's darkest and brightest values per channel ->
  `[B, T, T, 16 * len(STATISTICS_RADII)]`: per window (`STATISTICS_RADII`), the darkest and
  brightest values around each pixel per channel and over all channels (8), the bounded inverse
  `SPREAD_FLOOR / (range + SPREAD_FLOOR)` of each of the four ranges, and the darkest value
  times it (4 + 4). Square windows, cut at the frame's edges."""
  darkest, brightest = extremes[..., :3], extremes[..., 3:]
  darkest = jnp.concatenate([darkest, darkest.min(axis=-1, keepdims=True)], axis=-1)
  brightest = jnp.concatenate([brightest, brightest.max(axis=-1, keepdims=True)], axis=-1)
  size, outputs = extremes.shape[1], []
  for fraction in STATISTICS_RADII:
    low, high = _window_extremes(darkest, brightest, max(1, round(fraction * size)))
    inverse = SPREAD_FLOOR / (high - low + SPREAD_FLOOR)
    outputs += [low, high, inverse, low * inverse]
  return jnp.concatenate(outputs, axis=-1)


def _window_extremes(
  darkest: jax.Array, brightest: jax.Array, radius: int
) -> tuple[jax.Array, jax.Array]:
  """The least of `darkest` and the greatest of `brightest` (`[B, T, T, C]`) over the
  `(2 radius + 1)^2` window around each pixel, cut at the frame's edges."""
  side = 2 * radius + 1
  window, ones = (1, side, side, 1), (1, 1, 1, 1)
  low = jax.lax.reduce_window(darkest, jnp.inf, jax.lax.min, window, ones, 'SAME')
  high = jax.lax.reduce_window(brightest, -jnp.inf, jax.lax.max, window, ones, 'SAME')
  return low, high


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


def detail_blocks(extremes: bool) -> int:
  """How many `[3]` detail inputs each pixel's transform weighs (`guide_fields`)."""
  return len(STATISTICS_RADII) * (2 if extremes else 1)


def guide_fields(thumbnail: jax.Array, extremes: bool) -> jax.Array:
  """`[B, T, T, 3 (+ 6)]` thumbnail -> `[B, T, T, G]`, what each pixel's detail is measured
  against, per window (`STATISTICS_RADII`): the local mean of each channel (3) and, with
  `extremes`, the darkest value over all channels and the inverse `1 / (range + SPREAD_FLOOR)`
  of the range up to the brightest (2), both box-averaged over the window again so the fields
  are as smooth as an editor's blurred masks."""
  colours, size, fields = thumbnail[..., :3].astype(jnp.float32), thumbnail.shape[1], []
  for fraction in STATISTICS_RADII:
    radius = max(1, round(fraction * size))
    fields.append(_box_mean(colours, radius))
    if extremes:
      darkest = thumbnail[..., 3:6].min(axis=-1, keepdims=True).astype(jnp.float32)
      brightest = thumbnail[..., 6:9].max(axis=-1, keepdims=True).astype(jnp.float32)
      low, high = _window_extremes(darkest, brightest, radius)
      low, high = _box_mean(low, radius), _box_mean(high, radius)
      fields += [low, 1.0 / (high - low + SPREAD_FLOOR)]
  return jnp.concatenate(fields, axis=-1)


def pixel_detail(guides: jax.Array, photo: jax.Array, coords: jax.Array) -> jax.Array:
  """`guides [B, T, T, G]` (`guide_fields`), the `photo [B, H, W, 3]` and its `coords` ->
  `[B, H, W, K, 3]`: per window, the photo minus the local mean and, with extremes, its place
  `(x - darkest) / (range + SPREAD_FLOOR)` between the local extremes."""
  field = jax.vmap(global_grade.sample_frame_field)(guides, cell_lattice(coords, guides.shape[1]))
  colours, blocks, start = photo.astype(jnp.float32), [], 0
  per_window = guides.shape[-1] // len(STATISTICS_RADII)  # 3, or 5 with the extremes
  for _ in STATISTICS_RADII:
    blocks.append(colours - field[..., start : start + 3])
    if per_window > 3:
      low, inverse = field[..., start + 3 : start + 4], field[..., start + 4 : start + 5]
      blocks.append((colours - low) * inverse)
    start += per_window
  return jnp.stack(blocks, axis=-2)


def slice_affine(
  grid: jax.Array,
  images: jax.Array,
  coords: jax.Array,
  guides: jax.Array | None = None,
  photo: jax.Array | None = None,
) -> jax.Array:
  """Applies `grid [B, G, G, 12 (+ 9 K)]` (cell centres over the frame) at each pixel's `coords`;
  with `guides` (`guide_fields`), its last `9 K` coefficients weigh `photo`'s detail.

  The grid's cells tile the frame as a convolution's outputs do: cell `i`'s centre sits at
  `(i + 0.5) / G` of the frame. Between centres the coefficients are bilinear; beyond the outer
  centres they hold their edge value.
  """
  field = jax.vmap(global_grade.sample_frame_field)(grid, cell_lattice(coords, grid.shape[1]))
  graded = apply_affine(field[..., :COEFFICIENTS], images)
  if guides is None:
    return graded
  detail = pixel_detail(guides, images if photo is None else photo, coords)
  weights = field[..., COEFFICIENTS:].reshape(*detail.shape[:-2], -1, 3, 3)
  return graded + jnp.einsum('...kij,...kj->...i', weights, detail)


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
