"""The global colour head beside the U-Net: learned 3D LUTs and the thumbnail encoder.

- `lut`: one learned `[S, S, S, 3]` table for every photo (a fixed global grade).
- `adaptive_lut`: K basis tables mixed per photo by weights that a small CNN reads off a
  thumbnail of the whole photo (Zeng et al., "Learning Image-adaptive 3D Lookup Tables",
  TPAMI 2020; AdaInt, CVPR 2022, without its adaptive sampling intervals).

Both start as the identity table: an untrained head leaves colours as they are, so with the
U-Net's zero-initialised residual the whole model starts as the identity.

Beside them, `FrameGain` (`model.frame_gain`): one learned per-channel gain over the frame, read
at each pixel's whole-photo coordinates (vignettes, graduated filters), 1 everywhere at init;
`photo_statistics`, the metering figures of the whole photo that join the context vector; and
`Exposure` (`model.exposure`): a per-photo exposure shift in linear light that a linear map
reads off the photo's key (the first of those figures), with a highlight roll-off, before the
colour head.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.models import lut as lut_lib

COLOR_HEADS = ('none', 'lut', 'adaptive_lut')
UNET_INPUTS = ('input', 'lut')
# The CNN's channels per stride-2 stage; a 64 px thumbnail ends at 4 x 4 before pooling.
ENCODER_CHANNELS = (16, 32, 64, 128)


# Rec. 709 luma weights and the display gamma the metering figures decode with.
_LUMA = (0.2126, 0.7152, 0.0722)
_GAMMA = 2.2
# The floor under the log of the luminance, as in Reinhard's log-average key (delta = 1e-4).
_LOG_FLOOR = 1e-4
# Metering is relative to middle grey: a photo whose key is 18 % grey reads 0.
_MIDDLE_GREY = 0.18
_PERCENTILES = (10.0, 50.0, 90.0)
# The darkest value metered: its decoded light (1e-26) is 0 for every figure, and its log is finite.
_DARKEST = 1e-12
# Where `photo_statistics` puts the key (the mean log luminance) among its figures.
_KEY_FIGURE = 0
# The exposure's white-point parameter at init (`Exposure`).
_WHITE_INIT = 1e-3


def photo_statistics(images: Any, xp: Any = jnp) -> Any:
  """`[..., H, W, 3]` photos -> `[..., 8]` metering figures of each, with `xp` numpy or jax.numpy.

  The log of the (approximately linear) luminance relative to middle grey: its mean (the photo's
  key, as Reinhard's operator and camera metering use it), spread and 10th / 50th / 90th
  percentiles, and the log mean of each linear channel (the colour cast). The data pipeline
  meters each whole photo at full resolution (numpy) and predict does the same, so a crop, a
  tile and the whole image get the same figures; a thumbnail would not do, as its averaged
  pixels read brighter than the photo (the log of a mean exceeds the mean of the logs).
  """
  # The decode as exp(gamma log x): numpy's float32 exp and log are vectorised and its power is
  # not (2.6x faster at 24 MP); the two agree to 3e-6, relative.
  linear = xp.exp(_GAMMA * xp.log(xp.clip(xp.asarray(images, xp.float32), _DARKEST, 1.0)))
  log_grey = float(np.log(_MIDDLE_GREY))
  log_luma = xp.log(_LOG_FLOOR + linear @ xp.asarray(_LUMA, xp.float32)) - log_grey
  log_luma = log_luma.reshape(*log_luma.shape[:-2], -1)
  percentiles = xp.percentile(log_luma, xp.asarray(_PERCENTILES), axis=-1)
  # numpy sums across the pixel axes one value at a time: in float32 a 24 MP photo's channel
  # means came out 3 % low (random pixels) to 0.25 off in log units (one flat colour), so the
  # colour cast depended on the photo's size.
  sums_dtype = np.float64 if xp is np else None
  figures = [
    xp.mean(log_luma, axis=-1, keepdims=True),  # the key: _KEY_FIGURE
    xp.std(log_luma, axis=-1, keepdims=True),
    xp.moveaxis(percentiles, 0, -1),
    xp.log(_LOG_FLOOR + xp.mean(linear, axis=(-3, -2), dtype=sums_dtype)) - log_grey,
  ]
  return xp.concatenate(figures, axis=-1).astype(xp.float32)


class ThumbnailEncoder(nn.Module):
  """`[B, T, T, 3]` thumbnail -> `[B, C]` context vector: stride-2 3x3 convs, then the mean,
  and `statistics [B, 8]` (the photo's `photo_statistics`) after them when given.

  No batch statistics, so a photo's vector is the same whatever it is batched with, and the
  same in training and at predict time.
  """

  channels: tuple[int, ...] = ENCODER_CHANNELS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, thumbnail: jax.Array, statistics: jax.Array | None = None) -> jax.Array:
    features = thumbnail.astype(self.dtype)
    for i, channels in enumerate(self.channels):
      features = nn.Conv(channels, (3, 3), strides=(2, 2), dtype=self.dtype, name=f'conv_{i}')(
        features
      )
      features = nn.leaky_relu(features, 0.2)
      if i > 0:
        features = nn.LayerNorm(dtype=self.dtype, name=f'norm_{i}')(features)
    context = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    if statistics is not None:
      context = jnp.concatenate([context, statistics.astype(jnp.float32)], axis=1)
    return context


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
  split between them and the frame's edges, which random crops seldom reach, kept their
  initial share (built-in warm_film, configs/photo.py, 600 steps, seed 0: 36 dB held-out with
  the frame gain set to 1 after training, where the look has no spatial part).
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
  position = (jnp.clip(coords.astype(jnp.float32), -1.0, 1.0) + 1.0) * (0.5 * (size - 1))
  lower = jnp.clip(jnp.floor(position), 0, size - 2)
  frac = position - lower
  index = lower.astype(jnp.int32)
  flat = field.reshape(size * size, field.shape[-1]).astype(jnp.float32)
  out = 0.0
  for dy in (0, 1):
    wy = frac[..., 0] if dy else 1.0 - frac[..., 0]
    for dx in (0, 1):
      wx = frac[..., 1] if dx else 1.0 - frac[..., 1]
      corner = (index[..., 0] + dy) * size + index[..., 1] + dx
      out = out + (wy * wx)[..., None] * jnp.take(flat, corner, axis=0)
  return out


class Exposure(nn.Module):
  """Re-exposes `[B, H, W, 3]` photos in linear light by `ev [B]` stops read off each whole
  photo's key (the first of its `statistics [B, 8]`, `photo_statistics`), then rolls the
  highlights off.

  The stops are proportional to the key, the log-average luminance an averaging meter sets
  exposure by, relative to middle grey, clipped to +-`range_ev`: one number to learn (-1 / ln 2
  brings every key to middle grey), because the photos a user trains on are few. No constant
  term: the same shift for every photo is a tone curve, the LUT's job, and one learned here
  pushed the highlights of every photo past 1 (built-in warm_film, configs/photo.py with global
  grade loss 1, 600 steps, seed 0: 55.55 dB with it, 56.36 dB without). A map from all eight
  figures also fitted the training photos' spread, percentiles and cast, and picked the wrong
  stops for held-out photos (built-in `auto_exposure`, adaptive LUT, 600 steps, seed 0: 29.97 dB
  with all eight, 37.87 dB with the key). The roll-off is Reinhard's extended operator
  `v (1 + v / w^2) / (1 + v)` with a learned white point `w >= 1`: at `w = 1` it is the
  identity, at `w > 1` it brings up to `w` back under 1, so a brightened photo keeps its
  highlights instead of clipping them. Zero stops and `w = 1` at init: the identity. Its two
  numbers must travel far from there (-1.44 stops per stop of key undoes a meter) on noisy
  gradients: `optimizer.exposure_lr_factor` gives them a larger step.
  """

  range_ev: float = 2.0

  @nn.compact
  def __call__(self, images: jax.Array, statistics: jax.Array) -> jax.Array:
    key = statistics[:, _KEY_FIGURE : _KEY_FIGURE + 1]
    raw = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.zeros, name='stops')(key)[:, 0]
    ev = jnp.clip(raw, -self.range_ev, self.range_ev)
    self.sow('intermediates', 'exposure_ev', ev)
    # log w^2 = white^2 keeps w >= 1: under 1 the curve would push the brightest colours past 1
    # and clip them, a loss no LUT after it undoes. A floor at w = 1 would stop the gradient
    # for good once reached; the square does not, and starts just off 0, where its gradient
    # vanishes (w - 1 ~ 1e-6: the identity to float32 precision).
    white = self.param('white', nn.initializers.constant(_WHITE_INIT), ())
    white_sq = jnp.exp(jnp.square(white))
    linear = jnp.clip(images.astype(jnp.float32), 0.0, 1.0) ** _GAMMA
    linear = linear * jnp.exp2(ev)[:, None, None, None]
    linear = jnp.clip(linear * (1.0 + linear / white_sq) / (1.0 + linear), 0.0, 1.0)
    return _encode(linear)


def _encode(linear: jax.Array) -> jax.Array:
  """`linear ** (1 / gamma)` with a finite gradient at 0 (where the power's is infinite)."""
  positive = linear > 1e-12
  return jnp.where(positive, jnp.where(positive, linear, 1.0) ** (1.0 / _GAMMA), 0.0)


def resize_thumbnail(images: jax.Array, size: int) -> jax.Array:
  """`[B, H, W, 3]` -> `[B, size, size, 3]` (antialiased), the in-graph fallback thumbnail."""
  batch, _, _, channels = images.shape
  return jax.image.resize(
    images.astype(jnp.float32), (batch, size, size, channels), 'linear', antialias=True
  )


def photo_coords(rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
  """`[len(rows), len(cols), 2]` float32 (y, x) in [-1, 1] of the pixel centres `rows` x `cols`
  of a `height` x `width` photo: the position channels of `model.coords`. Training crops,
  predict tiles and whole images all take theirs from here, so they agree to the bit."""
  ys = (np.asarray(rows, np.float64) + 0.5) / height * 2.0 - 1.0
  xs = (np.asarray(cols, np.float64) + 0.5) / width * 2.0 - 1.0
  return np.stack(np.meshgrid(ys, xs, indexing='ij'), axis=-1).astype(np.float32)
