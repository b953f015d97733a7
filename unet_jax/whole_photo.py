"""What a model reads of the whole photo beside the crop or tile it grades.

A training crop and a predict tile are parts of a photo; the global branch of a model (the
exposure, the adaptive LUT's weights, the thumbnail global context, the frame gain) reads the
photo they were cut from, so that every part of a photo is graded alike:

- a thumbnail: `[T, T, 3]`, the whole frame squeezed to a square (`make_thumbnail`); for models
  with `model.local_grid_extremes`, `[T, T, 9]`: each thumbnail pixel's colour, then the darkest
  and the brightest value of each channel inside it (`cell_extremes`);
- metering statistics: `[8]` figures of the photo's light and colour cast (`photo_statistics`),
  followed, for models with tone curves or auto levels, by `[3 * len(TONE_QUANTILES)]`
  quantiles of each channel (`tone_quantiles`), the 3 channel means (`channel_means`) and the 3
  channel means of the photo's neutral pixels (`neutral_means`); `tone_parts` splits them;
- coordinates: `[H, W, 2]`, each pixel's place in the photo (`photo_coords`).

`WholePhotoInputs.from_model_config(config.model)` decides which of them a model reads and makes
them for a photo. The data pipeline, the train step, predict's grading and export all ask it,
so they agree; `data/` and `models/` both import this module and never each other.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

# The keys under which a batch carries the whole-photo inputs, and the model's keywords for them.
KEYS = ('thumbnail', 'statistics', 'coords')
# Rec. 709 luma weights and the display gamma the metering figures decode with.
_LUMA = (0.2126, 0.7152, 0.0722)
GAMMA = 2.2
# The floor under the log of the luminance, as in Reinhard's log-average key (delta = 1e-4).
_LOG_FLOOR = 1e-4
# Metering is relative to middle grey: a photo whose key is 18 % grey reads 0.
_MIDDLE_GREY = 0.18
_PERCENTILES = (10.0, 50.0, 90.0)
# `cell_extremes` reads each thumbnail pixel's extremes off a view this many times finer per side:
# close to the pixels of a 1 MP photo at a 128 px thumbnail, and a fixed cost at 24 MP.
EXTREMES_SUBCELLS = 4
# The darkest value metered: its decoded light (1e-26) is 0 for every figure, and its log is finite.
_DARKEST = 1e-12
# Where `photo_statistics` puts the key (the mean log luminance) among its figures.
KEY_FIGURE = 0
# How many figures `photo_statistics` gives (the tone figures follow them).
METERING_FIGURES = 8
# The quantiles (%) of each channel's encoded values that the tone curves read: the ends and
# the tails closely (levels, clipping, black and white points set per photo), the middle coarsely.
TONE_QUANTILES = (
  0.0,
  0.1,
  0.5,
  1.0,
  2.0,
  5.0,
  10.0,
  25.0,
  50.0,
  75.0,
  90.0,
  95.0,
  98.0,
  99.0,
  99.5,
  99.9,
  100.0,
)


def photo_statistics(images: Any, xp: Any = jnp) -> Any:
  """`[..., H, W, 3]` photos -> `[..., 8]` metering figures of each, with `xp` numpy or jax.numpy.

  The log of the (approximately linear) luminance relative to middle grey: its mean (the photo's
  key, as Reinhard's operator and camera metering use it), spread and 10th / 50th / 90th
  percentiles, and the log mean of each linear channel (the colour cast). The data pipeline
  meters each whole photo's pixels (numpy; `metering_view` past 2.5 MP) and predict does the
  same, so a crop, a tile and the whole image get the same figures; a thumbnail would not do,
  as its averaged pixels read brighter than the photo (the log of a mean exceeds the mean of
  the logs).
  """
  # The decode as exp(gamma log x): numpy's float32 exp and log are vectorised and its power is
  # not; the two agree to 3e-6, relative.
  linear = xp.exp(GAMMA * xp.log(xp.clip(xp.asarray(images, xp.float32), _DARKEST, 1.0)))
  log_grey = float(np.log(_MIDDLE_GREY))
  log_luma = xp.log(_LOG_FLOOR + linear @ xp.asarray(_LUMA, xp.float32)) - log_grey
  log_luma = log_luma.reshape(*log_luma.shape[:-2], -1)
  percentiles = xp.percentile(log_luma, xp.asarray(_PERCENTILES), axis=-1)
  # numpy's float32 sums over a large photo's pixels drift with its size, so the colour cast
  # would depend on the photo's size: numpy sums in float64.
  sums_dtype = np.float64 if xp is np else None
  figures = [
    xp.mean(log_luma, axis=-1, keepdims=True),  # the key: KEY_FIGURE
    xp.std(log_luma, axis=-1, keepdims=True),
    xp.moveaxis(percentiles, 0, -1),
    xp.log(_LOG_FLOOR + xp.mean(linear, axis=(-3, -2), dtype=sums_dtype)) - log_grey,
  ]
  return xp.concatenate(figures, axis=-1).astype(xp.float32)


def tone_quantiles(images: Any, xp: Any = jnp) -> Any:
  """`[..., H, W, 3]` photos -> `[..., 3 * len(TONE_QUANTILES)]`: each channel's quantiles of
  its encoded values, red's first.

  What an editor's image-adaptive tools read off a photo's histogram: auto levels its black and
  white points, auto gamma or a grey-world balance each channel's middle. Taken of the whole
  photo's pixels, like `photo_statistics`, so crops, tiles and the whole image agree.
  """
  values = xp.asarray(images, xp.float32)
  values = values.reshape(*values.shape[:-3], -1, values.shape[-1])  # [..., N, 3]
  if xp is np:
    flat = values.reshape(-1, *values.shape[-2:])
    quantiles = np.stack([_counted_quantiles(photo) for photo in flat])
    quantiles = quantiles.reshape(*values.shape[:-2], 3, len(TONE_QUANTILES))
  else:
    values = xp.clip(values, 0.0, 1.0)
    quantiles = xp.moveaxis(xp.percentile(values, xp.asarray(TONE_QUANTILES), axis=-2), 0, -1)
  return quantiles.reshape(*quantiles.shape[:-2], -1).astype(xp.float32)


# The tone quantiles in numpy count values on a 16-bit scale: exact for 8- and 16-bit files.
_TONE_LEVELS = 65535
_CHUNK = 1 << 18  # pixels


def _counted_quantiles(values: np.ndarray) -> np.ndarray:
  """`[N, 3]` values (clipped to [0, 1]) -> `[3, Q]` quantiles as `np.percentile` takes them
  (linear between the order statistics), from each channel's counts of 16-bit codes: a fraction
  of a sort's time on a 24 MP photo, and within half a 16-bit step of it for other values."""
  count, channels = values.shape
  counts = np.zeros((channels, _TONE_LEVELS + 1), np.int64)
  # In chunks that stay in cache: a 24 MP photo's codes at once cost five times the time.
  for start in range(0, count, _CHUNK):
    chunk = np.clip(values[start : start + _CHUNK], 0.0, 1.0)
    codes = (chunk * _TONE_LEVELS + 0.5).astype(np.uint16)
    for channel in range(channels):
      counts[channel] += np.bincount(codes[:, channel], minlength=_TONE_LEVELS + 1)
  ranks = np.asarray(TONE_QUANTILES) / 100.0 * (count - 1)
  lower = np.floor(ranks).astype(np.int64)
  upper = np.minimum(lower + 1, count - 1)
  frac = ranks - lower
  out = np.empty((channels, len(TONE_QUANTILES)))
  for channel in range(channels):
    cumulative = np.cumsum(counts[channel])
    # The value of rank r (from 0) is the first code whose cumulative count exceeds r.
    below = np.searchsorted(cumulative, lower, side='right')
    above = np.searchsorted(cumulative, upper, side='right')
    out[channel] = (below + frac * (above - below)) / _TONE_LEVELS
  return out


def channel_means(images: Any, xp: Any = jnp) -> Any:
  """`[..., H, W, 3]` photos -> `[..., 3]`: the mean of each channel's encoded values (clipped
  to [0, 1]; numpy sums in float64, so the figure does not drift with the photo's size)."""
  values = xp.clip(xp.asarray(images, xp.float32), 0.0, 1.0)
  sums_dtype = np.float64 if xp is np else None
  return xp.mean(values, axis=(-3, -2), dtype=sums_dtype).astype(xp.float32)


# A pixel is neutral enough for a grey-world estimate when its saturation, (max - min) / max of
# its channels, is at most this (OpenCV's `xphoto.GrayworldWB` default).
NEUTRAL_SATURATION = 0.9


def neutral_means(images: Any, xp: Any = jnp) -> Any:
  """`[..., H, W, 3]` photos -> `[..., 3]`: each channel's mean over the pixels whose saturation
  is at most `NEUTRAL_SATURATION` (all pixels' means where none is).

  A grey-world white balance that counts every pixel reads a red wall as a cyan cast; the
  balances editors ship (OpenCV's grey world among them) average only the pixels that are not
  strongly coloured. Encoded values, clipped to [0, 1]. numpy works through a large photo in
  chunks, summing in float64."""
  if xp is np:
    values = np.asarray(images, np.float32)
    flat = values.reshape(-1, values.shape[-3] * values.shape[-2], values.shape[-1])
    means = np.stack([_neutral_means_of(photo) for photo in flat])
    return means.reshape(*values.shape[:-3], values.shape[-1]).astype(np.float32)
  values = jnp.clip(jnp.asarray(images, jnp.float32), 0.0, 1.0)
  weights = _neutral(values)[..., None].astype(jnp.float32)
  sums, counts = (values * weights).sum(axis=(-3, -2)), weights.sum(axis=(-3, -2))
  return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), values.mean(axis=(-3, -2)))


def _neutral(values: Any, xp: Any = jnp) -> Any:
  """`[..., 3]` -> `[...]`: which pixels are neutral enough for a grey-world estimate (channel
  by channel: numpy's max over a last axis of 3 takes several times as long)."""
  red, green, blue = values[..., 0], values[..., 1], values[..., 2]
  high = xp.maximum(xp.maximum(red, green), blue)
  low = xp.minimum(xp.minimum(red, green), blue)
  return high - low <= NEUTRAL_SATURATION * high


def _neutral_means_of(photo: np.ndarray) -> np.ndarray:
  """`[N, 3]` -> `[3]`: `neutral_means` of one photo's pixels (every pixel's means, a second
  pass, only for a photo with no neutral pixel)."""
  sums, count = np.zeros(photo.shape[-1]), 0
  for start in range(0, len(photo), _CHUNK):
    chunk = np.clip(photo[start : start + _CHUNK], 0.0, 1.0)
    neutral = _neutral(chunk, np)
    # A product with the 0/1 mask rather than a copy of the neutral pixels: a few times faster.
    sums += neutral.astype(np.float64) @ chunk.astype(np.float64)
    count += int(np.count_nonzero(neutral))
  return sums / count if count else channel_means(photo[None], np)


def photo_figures(images: Any, tones: bool, xp: Any = jnp) -> Any:
  """The whole-photo figures a model reads: `photo_statistics`, then with `tones` the
  `tone_quantiles`, the `channel_means` and the `neutral_means`."""
  figures = photo_statistics(images, xp)
  if tones:
    tone = [tone_quantiles(images, xp), channel_means(images, xp), neutral_means(images, xp)]
    figures = xp.concatenate([figures, *tone], axis=-1)
  return figures


def tone_parts(figures: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`[B, F]` figures with tones -> each channel's quantiles `[B, 3, Q]`, means `[B, 3]` and
  neutral pixels' means `[B, 3]`."""
  start = METERING_FIGURES
  count = 3 * len(TONE_QUANTILES)
  quantiles = figures[:, start : start + count].reshape(-1, 3, len(TONE_QUANTILES))
  means = figures[:, start + count : start + count + 3]
  return quantiles, means, figures[:, start + count + 3 : start + count + 6]


# The most pixels the thumbnail and the figures are read off (`metering_view`): a photographer's
# pairs (0.5 to 2 MP) are read whole, a larger photo through an even stride.
METERING_PIXELS = 2_500_000


def metering_view(image: np.ndarray) -> np.ndarray:
  """`[H, W, C]` photo -> what its thumbnail and figures are read off: the photo itself up to
  `METERING_PIXELS`, past that every k-th row and column (k the smallest stride that fits).

  A stride keeps every sampled pixel as it is (no averaging), so the figures (key, quantiles,
  means) are estimates of the whole photo's from a million or more of its pixels, and the
  thumbnail is still antialiased over hundreds of pixels each. A 24 MP photo's whole-photo
  inputs then cost what a 1.5 MP one's do, in predict as in training, so both read the same.
  """
  height, width = image.shape[:2]
  stride = max(1, math.ceil(math.sqrt(height * width / METERING_PIXELS)))
  return image[::stride, ::stride] if stride > 1 else image


def photo_coords(rows: Any, cols: Any, height: int, width: int) -> np.ndarray:
  """`[len(rows), len(cols), 2]` float32 (y, x) in [-1, 1] of the pixel centres `rows` x `cols`
  of a `height` x `width` photo. Training crops, predict tiles and whole images all take theirs
  from here, so they agree to the bit."""
  ys = (np.asarray(rows, np.float64) + 0.5) / height * 2.0 - 1.0
  xs = (np.asarray(cols, np.float64) + 0.5) / width * 2.0 - 1.0
  return np.stack(np.meshgrid(ys, xs, indexing='ij'), axis=-1).astype(np.float32)


def _traced_photo_coords(height: Any, width: Any) -> jax.Array:
  """`photo_coords` of a whole `height` x `width` photo whose sizes are symbolic (an exported
  program's), in float32 arithmetic."""
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height * 2.0 - 1.0
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width * 2.0 - 1.0
  return jnp.stack(jnp.meshgrid(ys, xs, indexing='ij'), axis=-1)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """float32 `[H, W, C]` -> `[height, width, C]`, bilinear with antialiasing when shrinking.

  The one resize of the data pipeline (crops, eval sizes) and of thumbnails."""
  if image.shape[:2] == (height, width):
    return image
  channels = [
    np.asarray(
      Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
      )
    )
    for c in range(image.shape[-1])
  ]
  return np.stack(channels, axis=-1)


def make_thumbnail(image: np.ndarray, size: int) -> np.ndarray:
  """`[H, W, 3]` photo -> `[size, size, 3]` float32 thumbnail of the whole frame (squeezed,
  aspect not kept), what the model's global branch sees, at training and predict."""
  return resize_image(np.asarray(image, np.float32), size, size)


def cell_extremes(fine: Any, size: int, xp: Any = jnp) -> Any:
  """`[..., k size, k size, C]` -> `[..., size, size, 2 C]`: the darkest, then the brightest,
  value of each channel inside each of `size^2` cells of `k^2` pixels, with `xp` numpy or
  jax.numpy. A thumbnail averages a cell's pixels, so the range of its values (what a local
  normalisation divides by) shrinks to nothing over fine texture; the cell's extremes keep it."""
  sub = fine.shape[-2] // size
  cells = fine.reshape(*fine.shape[:-3], size, sub, size, sub, fine.shape[-1])
  return xp.concatenate([cells.min(axis=(-4, -2)), cells.max(axis=(-4, -2))], axis=-1)


def resize_thumbnail(images: jax.Array, size: int) -> jax.Array:
  """`[B, H, W, 3]` -> `[B, size, size, 3]` (antialiased): the in-graph thumbnail of the input
  itself, for calls that pass none (a model reading the crop, an exported tile program)."""
  batch, _, _, channels = images.shape
  return jax.image.resize(
    images.astype(jnp.float32), (batch, size, size, channels), 'linear', antialias=True
  )


@dataclasses.dataclass(frozen=True)
class WholePhotoInputs:
  """Which whole-photo inputs a model reads, and where they come from.

  `thumbnail_size`: the side of the thumbnail it reads (0: none); `extremes`: with each
  thumbnail pixel's darkest and brightest values after its colour. `statistics`: it reads the
  metering figures; `tones`: with each channel's quantiles after them. `coords`: it reads pixel
  coordinates. `of_whole_photo`
  (`model.thumbnail='photo'`): training gives the thumbnail and figures of the whole photo;
  without it the model takes them of its crop, in the graph. Coordinates are always the
  photo's. Predict always gives the whole photo's: the crop stood in for it in training.
  """

  thumbnail_size: int = 0
  extremes: bool = False
  statistics: bool = False
  tones: bool = False
  coords: bool = False
  of_whole_photo: bool = False

  @classmethod
  def from_model_config(cls, model: Any) -> 'WholePhotoInputs':
    """From `config.model` or a `UNet` (same option names). The thumbnail feeds the global
    branch: the adaptive LUT's weights, the exposure, the thumbnail global context."""
    context = model.global_context
    if not isinstance(context, str):  # a UNet's fields: two booleans
      context = ('thumbnail' if model.thumbnail_context else 'pooled') if context else 'none'
    exposure = bool(model.exposure)
    tones = int(model.curves) > 0 or bool(model.auto_levels)
    local = int(model.local_grid) > 0
    reads_thumbnail = (
      model.color_head == 'adaptive_lut' or exposure or context == 'thumbnail' or local
    )
    return cls(
      thumbnail_size=int(model.thumbnail_size) if reads_thumbnail else 0,
      extremes=local and bool(getattr(model, 'local_grid_extremes', False)),
      statistics=bool(model.thumbnail_stats) or exposure or tones,
      tones=tones,
      coords=bool(model.coords) or int(model.frame_gain) > 0 or local,
      of_whole_photo=model.thumbnail == 'photo',
    )

  def in_training_batches(self) -> 'WholePhotoInputs':
    """The inputs the data pipeline adds to each example (the rest the model makes itself)."""
    if self.of_whole_photo:
      return self
    return dataclasses.replace(self, thumbnail_size=0, statistics=False)

  def of_photo(self, image: np.ndarray, *, coords: bool = True) -> dict[str, np.ndarray]:
    """The inputs of one `[H, W, 3]` photo, unbatched: `'thumbnail'` `[T, T, 3]`,
    `'statistics'` `[8]` (and the tone figures) and `'coords'` `[H, W, 2]`, those this model
    reads; the first two read off `metering_view(image)`. `coords=False` leaves the coordinates
    out (predict makes each tile's own)."""
    out = {}
    height, width = image.shape[:2]
    metered = metering_view(image)
    if self.thumbnail_size:
      out['thumbnail'] = self.thumbnail_of(image)
    if self.statistics:
      out['statistics'] = photo_figures(metered, self.tones, np)
    if self.coords and coords:
      out['coords'] = photo_coords(np.arange(height), np.arange(width), height, width)
    return out

  def thumbnail_of(self, image: np.ndarray) -> np.ndarray:
    """`[T, T, 3]` (`[T, T, 9]` with `extremes`): the thumbnail this model reads of a
    `[H, W, 3]` photo, through `metering_view`."""
    view = metering_view(image)
    thumbnail = make_thumbnail(view, self.thumbnail_size)
    if not self.extremes:
      return thumbnail
    fine = make_thumbnail(view, EXTREMES_SUBCELLS * self.thumbnail_size)
    return np.concatenate([thumbnail, cell_extremes(fine, self.thumbnail_size, np)], axis=-1)

  def colour_thumbnail_of(self, image: np.ndarray) -> np.ndarray:
    """`[T, T, 3]`: the thumbnail's colours alone (the target's, for `loss.whole_photo_grade`)."""
    return make_thumbnail(metering_view(image), self.thumbnail_size)

  def fill_in(
    self,
    images: jax.Array,
    thumbnail: jax.Array | None,
    statistics: jax.Array | None,
    coords: jax.Array | None,
  ) -> tuple[jax.Array | None, jax.Array | None, jax.Array | None]:
    """In the graph: the inputs a call did not pass, taken of `[B, H, W, 3]` `images` as whole
    photos; those the model does not read stay None."""
    if self.thumbnail_size and thumbnail is None:
      thumbnail = resize_thumbnail(images, self.thumbnail_size)
      if self.extremes:
        fine = resize_thumbnail(images, EXTREMES_SUBCELLS * self.thumbnail_size)
        thumbnail = jnp.concatenate([thumbnail, cell_extremes(fine, self.thumbnail_size)], -1)
    if self.statistics and statistics is None:
      statistics = photo_figures(images, self.tones)
    if self.coords and coords is None:
      batch, height, width = images.shape[:3]
      if isinstance(height, int) and isinstance(width, int):
        grid = jnp.asarray(photo_coords(range(height), range(width), height, width))
      else:  # symbolic sizes (`jax.export`): the same centres, computed in the program
        grid = _traced_photo_coords(height, width)
      coords = jnp.broadcast_to(grid, (batch, height, width, 2))
    return thumbnail, statistics, coords
