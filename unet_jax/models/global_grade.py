"""The global grade under the U-Net's edit: exposure, then a learned 3D LUT, then a frame gain.

- `Exposure` (`model.exposure`): a per-photo exposure shift in linear light, read off the whole
  photo's key, with a highlight roll-off.
- `ColorHead` (`model.color_head`): `lut`, one learned `[S, S, S, 3]` table for every photo (a
  fixed global grade); `adaptive_lut`, K basis tables mixed per photo by weights read off the
  thumbnail encoder's vector (Zeng et al., "Learning Image-adaptive 3D Lookup Tables", TPAMI
  2020; AdaInt, CVPR 2022, without its adaptive sampling intervals).
- `FrameGain` (`model.frame_gain`): one learned per-channel gain over the frame, read at each
  pixel's whole-photo coordinates (vignettes, graduated filters).

Each starts as the identity, so with the U-Net's zero-initialised residual an untrained model
leaves photos as they are. Each sows what the train step's regularisers read (`intermediates`).
Why each is shaped as it is, with the runs that decided it: experiments/results/color_head_notes.md.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from unet_jax import whole_photo
from unet_jax.models import lut as lut_lib

# The exposure's white-point parameter at init (`Exposure`).
_WHITE_INIT = 1e-3


def has_global_grade(model: Any) -> bool:
  """Whether `model` (a `UNet` or its `config.model`) puts a grade under the U-Net: auto
  levels, an exposure, tone curves, a colour head, a local affine grid or a frame gain."""

  def option(name: str, default: Any) -> Any:
    if isinstance(model, ml_collections.ConfigDict):
      return model.get(name, default)
    return getattr(model, name, default)

  return (
    option('color_head', 'none') != 'none'
    or bool(option('frame_gain', 0))
    or bool(option('exposure', False))
    or bool(option('auto_levels', False))
    or bool(option('curves', 0))
    or bool(option('local_grid', 0))
  )


class ColorHead(nn.Module):
  """Grades `[B, H, W, 3]` colours with a learned table; `context [B, C]` mixes the bases.

  The table actually applied is sown as `intermediates/lut` (`[S, S, S, 3]` or `[B, S, S, S,
  3]`), so the train step can put the smoothness and monotonicity terms on it.
  """

  kind: str = 'lut'
  size: int = 17
  bases: int = 3
  method: str = 'auto'

  @nn.compact
  def __call__(self, images: jax.Array, context: jax.Array | None = None) -> jax.Array:
    identity = lut_lib.identity_lut(self.size)
    if self.kind == 'lut':
      table = self.param('lut', lambda _, shape: lut_lib.identity_lut(shape[0]), (self.size,))
    else:
      if context is None:
        raise ValueError('color_head=adaptive_lut needs the thumbnail context vector.')
      # Bases are offsets from the identity, zero at init; the weights start near 1 (bias)
      # so every basis gets a gradient from the first step, and vary per photo (kernel).
      basis = self.param('basis', nn.initializers.zeros, (self.bases, *identity.shape))
      weights = nn.Dense(self.bases, bias_init=nn.initializers.ones, name='weights')(context)
      table = identity + jnp.einsum('bk,k...->b...', weights.astype(jnp.float32), basis)
    self.sow('intermediates', 'lut', table)
    return lut_lib.apply_lut(table, images, self.method)


class FrameGain(nn.Module):
  """Multiplies `[B, H, W, 3]` colours by a per-channel gain that depends on where each pixel
  sits in its whole photo: a `[size, size, 3]` lattice over the frame's `coords` in [-1, 1],
  bilinear between lattice points, 1 everywhere at init.

  One gain field for every photo, learned from the pairs: what a vignette or a graduated filter
  does. It reads whole-photo coordinates, so training crops, predict tiles and the whole image
  get the same gain at the same pixel. The lattice's mean is taken out of it: the same gain
  everywhere is a colour grade, the LUT's job, and when both could do it the white balance
  split between them, and the frame's edges, which random crops seldom reach, kept their
  initial share.
  """

  size: int = 9

  @nn.compact
  def __call__(self, images: jax.Array, coords: jax.Array) -> jax.Array:
    raw = self.param('gain', nn.initializers.zeros, (self.size, self.size, images.shape[-1]))
    offset = raw - jnp.mean(raw, axis=(0, 1))
    self.sow('intermediates', 'frame_gain', offset)
    return images * (1.0 + sample_frame_field(offset, coords))


def frame_curvature(field: jax.Array) -> jax.Array:
  """Mean squared second difference of a `[S, S, C]` field over the frame, down and across:
  a uniform or linearly graded gain costs nothing, a vignette's gentle bowl little. Random crops
  reach the frame's edges and corners far less often than its middle (a corner pixel is in one
  crop in crop_size^2 of those that hold a central one), so without it the lattice points there
  stay near their initial value while the rest learns."""
  return lut_lib.mean_squared_bend(field, (0, 1))


def sample_frame_field(field: jax.Array, coords: jax.Array) -> jax.Array:
  """`field [S, S, C]` over the frame, `coords [..., 2]` (y, x) in [-1, 1] -> `[..., C]`,
  bilinear between the 4 lattice points around each position."""
  size = field.shape[0]
  lower_y, frac_y = frame_lattice_cell(coords[..., 0], size)
  lower_x, frac_x = frame_lattice_cell(coords[..., 1], size)
  flat = field.reshape(size * size, field.shape[-1]).astype(jnp.float32)
  out = 0.0
  for dy in (0, 1):
    wy = frac_y if dy else 1.0 - frac_y
    for dx in (0, 1):
      wx = frac_x if dx else 1.0 - frac_x
      corner = (lower_y + dy) * size + lower_x + dx
      out = out + (wy * wx)[..., None] * jnp.take(flat, corner, axis=0)
  return out


def frame_field_planes(field: jax.Array, ys: jax.Array, xs: jax.Array) -> jax.Array:
  """`sample_frame_field` at every pixel of a block of whole rows, channels first: `field [S, S,
  C]`, the rows' `ys [R]` and the columns' `xs [W]` in [-1, 1] -> `[C, R, W]`.

  Bilinear is separable: the lattice is first blended down each column at the R rows (a small
  `[C, R, S]`), then along each row at the W columns. Written elementwise in channel planes, so
  XLA fuses each plane into whatever reads it without materialising the field: the preview
  slices whole-frame fields this way (`inference/preview.py`)."""
  size = field.shape[0]
  lower_y, frac_y = frame_lattice_cell(ys, size)
  lower_x, frac_x = frame_lattice_cell(xs, size)
  planes = jnp.moveaxis(field.astype(jnp.float32), -1, 0)
  rows = (1.0 - frac_y)[None, :, None] * planes[:, lower_y]
  rows = rows + frac_y[None, :, None] * planes[:, lower_y + 1]
  return (1.0 - frac_x) * rows[:, :, lower_x] + frac_x * rows[:, :, lower_x + 1]


def frame_lattice_cell(coords: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """`[N]` coordinates in [-1, 1] -> the lower lattice index in [0, size - 2] and the fraction
  past it, as `sample_frame_field` and `frame_field_planes` take them (and
  `experiments/local_grid_fit.py` builds its design matrix from)."""
  position = (jnp.clip(coords.astype(jnp.float32), -1.0, 1.0) + 1.0) * (0.5 * (size - 1))
  lower = jnp.clip(jnp.floor(position), 0, size - 2)
  return lower.astype(jnp.int32), position - lower


class Exposure(nn.Module):
  """Re-exposes `[B, H, W, 3]` photos in linear light by `ev [B]` stops read off each whole
  photo's key (the first of its `statistics [B, 8]`, `whole_photo.photo_statistics`), then
  rolls the highlights off.

  The stops are proportional to the key, the log-average luminance an averaging meter sets
  exposure by, relative to middle grey, clipped to +-`range_ev`: one number to learn (-1 / ln 2
  brings every key to middle grey), because the photos a user trains on are few. No constant
  term: the same shift for every photo is a tone curve, the LUT's job, and a learned one pushed
  the highlights of every photo past 1. Only the key, not all eight figures: a map from all of
  them fitted the training photos' spread, percentiles and cast, and picked the wrong stops for
  held-out photos. The roll-off is Reinhard's extended operator `v (1 + v / w^2) / (1 + v)` with
  a learned white point `w >= 1`: at `w = 1` it is the identity, at `w > 1` it brings up to `w`
  back under 1, so a brightened photo keeps its highlights instead of clipping them. Zero stops
  and `w = 1` at init: the identity. Its two numbers must travel far from there (-1.44 stops per
  stop of key undoes a meter) on noisy gradients: `optimizer.exposure_lr_factor` gives them a
  larger step.
  """

  range_ev: float = 2.0

  @nn.compact
  def __call__(self, images: jax.Array, statistics: jax.Array) -> jax.Array:
    figure = whole_photo.KEY_FIGURE
    key = statistics[:, figure : figure + 1]
    raw = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros, name='stops')(key)[:, 0]
    ev = jnp.clip(raw, -self.range_ev, self.range_ev)
    self.sow('intermediates', 'exposure_ev', ev)
    # log w^2 = white^2 keeps w >= 1: under 1 the curve would push the brightest colours past 1
    # and clip them, a loss no LUT after it undoes. A floor at w = 1 would stop the gradient
    # for good once reached; the square does not, and starts just off 0, where its gradient
    # vanishes (w - 1 ~ 1e-6: the identity to float32 precision).
    white = self.param('white', nn.initializers.constant(_WHITE_INIT), ())
    white_sq = jnp.exp(jnp.square(white))
    linear = jnp.clip(images.astype(jnp.float32), 0.0, 1.0) ** whole_photo.GAMMA
    linear = linear * jnp.exp2(ev)[:, None, None, None]
    linear = jnp.clip(linear * (1.0 + linear / white_sq) / (1.0 + linear), 0.0, 1.0)
    return _encode(linear)


def _encode(linear: jax.Array) -> jax.Array:
  """`linear ** (1 / gamma)` with a finite gradient at 0 (where the power's is infinite)."""
  positive = linear > 1e-12
  return jnp.where(positive, jnp.where(positive, linear, 1.0) ** (1.0 / whole_photo.GAMMA), 0.0)
