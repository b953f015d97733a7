"""Grading a whole photo of any size through one compiled tile shape (`grade_image`).

Tile layout and blending weights are in `tiling.py`. Here:
- An image smaller than a tile is one tile, reflect-padded to the tile shape (no new compile).
  Whole-image inference sees zeros past the image instead, so the two differ in the last rows
  and columns of such an image.
- The whole-photo inputs are made once per image: the thumbnail that the colour head and the
  thumbnail global context read (`model.thumbnail_context`; the same `make_thumbnail` as in
  training), the photo's metering figures (`thumbnail_stats`, `exposure`; the same
  `photo_statistics`), and for `model.coords` each tile's pixel coordinates in the whole photo.
- The bottleneck global context (`model.global_context` without `thumbnail_context`) is computed
  once per image and shared by all tiles.
  A first pass sums each tile's bottleneck features over the cells that tile owns (its core,
  split half-way through each overlap) and divides by the image's cell count: the whole image's
  pooled mean, up to the cells near tile borders. The second pass grades every tile with that
  vector (`pooled_context=`), so tiles never disagree about colours.
- The output accumulates in a float32 numpy array on the host; the device only holds a batch of
  `batch_tiles` tiles, so memory is bounded by the tile size, not the photo size.

How close to whole-image inference: a tile's pixels still differ slightly wherever the net's
receptive field reaches past the tile, so the larger the tile compared with that field, the
closer. Batch norm (eval mode), layer norm and no norm are per-pixel. Group norm takes its
statistics over each tile's H and W, so a group-norm model's tiles differ from its whole-image
output by construction (a warning is logged).
"""

import functools
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unet_jax import parallel
from unet_jax.data.transforms import make_thumbnail
from unet_jax.inference import tiling
from unet_jax.models.color_head import photo_coords, photo_statistics
from unet_jax.models.unet import has_global_grade

_BOTTLENECK = 'bottleneck'


# ---------------------------------------------------------------------------------------------
# The two compiled programs. The model is static (hashable linen dataclass), so jax.jit keeps
# one executable per (model, tile batch shape): one compile per tile shape, reused by every image.


@functools.partial(jax.jit, static_argnums=0)
def _grade_tiles(
  model: nn.Module,
  variables: Any,
  tiles: jax.Array,
  pooled_context: jax.Array | None,
  thumbnail: jax.Array | None = None,
  coords: jax.Array | None = None,
  statistics: jax.Array | None = None,
) -> jax.Array:
  return model.apply(
    variables,
    tiles,
    train=False,
    pooled_context=pooled_context,
    thumbnail=thumbnail,
    statistics=statistics,
    coords=coords,
  )


@functools.partial(jax.jit, static_argnums=0)
def _grade_lut_only(
  model: nn.Module,
  variables: Any,
  rows: jax.Array,
  thumbnail: jax.Array | None,
  coords: jax.Array | None = None,
  statistics: jax.Array | None = None,
) -> jax.Array:
  return model.apply(
    variables,
    rows,
    train=False,
    thumbnail=thumbnail,
    statistics=statistics,
    coords=coords,
    lut_only=True,
  )


def _is_bottleneck(module: nn.Module, method_name: str) -> bool:
  return module.name == _BOTTLENECK and method_name == '__call__'


@functools.partial(jax.jit, static_argnums=0)
def _context_sums(
  model: nn.Module, variables: Any, tiles: jax.Array, cell_weights: jax.Array
) -> jax.Array:
  """[B, C] weighted sums of each tile's bottleneck features over its owned cells, in float32
  (the same precision `layers.pool_features` averages in)."""
  _, state = model.apply(
    variables,
    tiles,
    train=False,
    return_pooled_context=True,
    capture_intermediates=_is_bottleneck,
    mutable=['intermediates'],
  )
  features = state['intermediates'][_BOTTLENECK]['__call__'][0].astype(jnp.float32)
  return jnp.einsum('bhwc,bhw->bc', features, cell_weights)


# Bytes per tile by (model, tile size): a model's variables have the shapes the model gives them.
_tile_bytes: dict[tuple[nn.Module, int], int] = {}


def auto_batch_tiles(model: nn.Module, variables: Any, tile: int) -> int:
  """`batch_tiles=0`: as many tiles per call as fill the device (`parallel.batch_that_fits`).

  1 on CPU, without compiling anything. Elsewhere one extra compile per model and tile size
  reads from XLA's plan what a tile costs: its input, output and temporaries.
  """
  if jax.default_backend() == 'cpu':
    return 1
  if (model, tile) not in _tile_bytes:
    tiles = jax.ShapeDtypeStruct((1, tile, tile, model.in_channels), jnp.float32)
    context = None
    if getattr(model, 'global_context', False):
      context = jax.ShapeDtypeStruct((1, model.channels(model.levels)), jnp.float32)
    memory = _grade_tiles.lower(model, variables, tiles, context).compile().memory_analysis()
    _tile_bytes[model, tile] = (
      memory.temp_size_in_bytes + memory.output_size_in_bytes + tiles.size * 4
    )
  return parallel.batch_that_fits(_tile_bytes[model, tile])


# ---------------------------------------------------------------------------------------------
# Grading one image.


class _TileBatches:
  """Feeds tiles to a compiled function `batch_tiles` at a time (the last batch padded), and
  hands back results one batch behind so the host works while the device computes."""

  def __init__(self, image: np.ndarray, tile: int, batch_tiles: int):
    self.image, self.tile, self.batch_tiles = image, tile, batch_tiles

  def run(self, positions, compute, extra=None):
    """Yields (position, result) for each (top, left) in positions; `extra(batch_positions)`
    builds an optional second argument for `compute`."""
    pending = None
    batch = self.batch_tiles
    for start in range(0, len(positions), batch):
      chunk = positions[start : start + batch]
      # A fresh buffer per batch: on CPU the device array may alias this memory, and the
      # previous batch can still be running when the next one is filled.
      tiles = np.zeros((batch, self.tile, self.tile, self.image.shape[-1]), np.float32)
      for k, (top, left) in enumerate(chunk):
        tiling.extract_tile(self.image, top, left, self.tile, tiles[k])
      args = (jnp.asarray(tiles),)
      if extra is not None:
        args += (extra(chunk),)
      result = compute(*args)
      if pending is not None:
        yield from _unbatch(*pending)
      pending = (chunk, result)
    if pending is not None:
      yield from _unbatch(*pending)


def _unbatch(chunk, result):
  result = np.asarray(result)
  for k, position in enumerate(chunk):
    yield position, result[k]


def _check_image(model: nn.Module, image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != model.in_channels:
    raise ValueError(
      f'grade_image expects one image [H, W, {model.in_channels}] (model.in_channels); got '
      f'shape {image.shape}.'
    )
  if min(image.shape[:2]) < 1:
    raise ValueError(f'grade_image got an empty image of shape {image.shape}.')
  return np.ascontiguousarray(image, dtype=np.float32)


_warned: set[nn.Module] = set()


def _warn_if_tile_dependent(model: nn.Module) -> None:
  # Once per model, not once per image of an eval loop.
  if getattr(model, 'norm', None) == 'group' and model not in _warned:
    _warned.add(model)
    logging.warning(
      'model.norm=group normalises over each tile, so tiled output differs from whole-image '
      'output near tile seams; batch, layer or no norm are tile-exact.'
    )


def tile_settings(config: ml_collections.ConfigDict) -> dict[str, int]:
  """The keyword arguments of `grade_image` / `segment_image` that `config.predict` sets."""
  return {
    'tile_size': config.predict.tile_size,
    'tile_overlap': config.predict.tile_overlap,
    'batch_tiles': config.predict.batch_tiles,
  }


def grade_image(
  model: nn.Module,
  variables: Any,
  image: np.ndarray,
  *,
  tile_size: int,
  tile_overlap: int,
  batch_tiles: int = 0,
) -> np.ndarray:
  """Runs the model over `image` tile by tile and blends the tiles.

  Args:
    model: a `UNet` (inference mode: `train=False`).
    variables: its variables (`params`, and `batch_stats` for batch norm).
    image: `[H, W, in_channels]` float32 in [0, 1], any H and W.
    tile_size: tile side in pixels (`config.predict.tile_size`), a multiple of 2**model.levels.
    tile_overlap: pixels shared by neighbouring tiles and blended (`config.predict.tile_overlap`).
    batch_tiles: tiles per device call (`config.predict.batch_tiles`); 0 chooses from the
      device and its free memory (1 on CPU).

  Returns:
    `[H, W, C]` float32 on the host: the graded image (image head, not clipped) or the logits
    (segmentation head, C = num_classes).
  """
  multiple = tiling.check_tiling(model.levels, tile_size, tile_overlap)
  if batch_tiles < 0:
    raise ValueError(f'config.predict.batch_tiles={batch_tiles} must be >= 0 (0: automatic).')
  image = _check_image(model, image)
  _warn_if_tile_dependent(model)
  height, width = image.shape[:2]
  tile = tile_size
  rows = tiling.tile_offsets(height, tile, tile_overlap, multiple)
  cols = tiling.tile_offsets(width, tile, tile_overlap, multiple)
  positions = [(top, left) for top in rows for left in cols]
  if batch_tiles == 0:
    batch_tiles = min(auto_batch_tiles(model, variables, tile), len(positions))
  batches = _TileBatches(image, tile, batch_tiles)

  thumbnail = photo_thumbnail(model, image)
  statistics = photo_metering(model, image)
  pooled_context = None
  if getattr(model, 'pools_bottleneck', getattr(model, 'global_context', False)):
    pooled_context = _global_context(
      model, variables, batches, positions, rows, cols, height, width, multiple
    )

  out_channels = model.num_classes if model.head == 'segmentation' else model.out_channels
  output = np.zeros((height, width, out_channels), np.float32)
  row_weights = dict(zip(rows, tiling.axis_weights(rows, tile, height), strict=True))
  col_weights = dict(zip(cols, tiling.axis_weights(cols, tile, width), strict=True))

  def compute(tiles, coords=None):
    context, thumbnails, figures = None, None, None
    if pooled_context is not None:
      context = jnp.broadcast_to(pooled_context, (tiles.shape[0], pooled_context.shape[-1]))
    if thumbnail is not None:
      thumbnails = jnp.broadcast_to(thumbnail, (tiles.shape[0], *thumbnail.shape[1:]))
    if statistics is not None:
      figures = jnp.broadcast_to(statistics, (tiles.shape[0], statistics.shape[-1]))
    return _grade_tiles(model, variables, tiles, context, thumbnails, coords, figures)

  def tile_coords(chunk):
    coords = np.zeros((batch_tiles, tile, tile, 2), np.float32)
    for k, (top, left) in enumerate(chunk):
      # Reflected past the border exactly as the tile's pixels (and the U-Net's padding) are.
      ys = tiling.reflect_indices(top, tile, height)
      xs = tiling.reflect_indices(left, tile, width)
      coords[k] = photo_coords(ys, xs, height, width)
    return jnp.asarray(coords)

  extra = tile_coords if getattr(model, 'reads_coords', False) else None
  for (top, left), graded in batches.run(positions, compute, extra=extra):
    wy, wx = row_weights[top], col_weights[left]
    bottom, right = top + wy.shape[0], left + wx.shape[0]
    output[top:bottom, left:right] += (
      graded[: wy.shape[0], : wx.shape[0]] * wy[:, None, None] * wx[None, :, None]
    )
  return output


def photo_thumbnail(model: nn.Module, image: np.ndarray) -> jax.Array | None:
  """`[1, T, T, 3]` thumbnail of the whole photo for a model whose global branch reads one
  (the same `make_thumbnail` the training pipeline uses), else None."""
  if not getattr(model, 'reads_thumbnail', False):
    return None
  return jnp.asarray(make_thumbnail(image, model.thumbnail_size)[None])


def photo_metering(model: nn.Module, image: np.ndarray) -> jax.Array | None:
  """`[1, 8]` metering figures of the whole photo for a model that reads them (the same
  `photo_statistics` the training pipeline takes of each photo), else None."""
  if not getattr(model, 'reads_statistics', False):
    return None
  return jnp.asarray(photo_statistics(image, np)[None])


def grade_lut_only(
  model: nn.Module, variables: Any, image: np.ndarray, *, rows_per_call: int = 256
) -> np.ndarray:
  """`[H, W, 3]` float32: the global grade alone (`config.predict.lut_only`: the exposure,
  colour head and frame gain, those the model has), no U-Net.

  The head is per pixel, so the photo goes through in bands of `rows_per_call` rows (the last
  one padded: one compile per photo width) and the result equals the full model's colour head.
  """
  if not has_global_grade(model):
    raise ValueError(
      'config.predict.lut_only=True needs a global grade (config.model.color_head, '
      'frame_gain or exposure); this model has none.'
    )
  image = _check_image(model, image)
  height, width = image.shape[:2]
  thumbnail = photo_thumbnail(model, image)
  statistics = photo_metering(model, image)
  band = min(rows_per_call, height)
  output = np.empty((height, width, 3), np.float32)
  pending = None
  for top in range(0, height, band):
    rows = np.zeros((1, band, width, 3), np.float32)
    stop = min(top + band, height)
    rows[0, : stop - top] = image[top:stop]
    coords = None
    if getattr(model, 'frame_gain', 0):
      # The band's pixels at their place in the whole photo (padding rows repeat the last).
      ys = np.minimum(np.arange(top, top + band), height - 1)
      coords = jnp.asarray(photo_coords(ys, np.arange(width), height, width)[None])
    result = _grade_lut_only(model, variables, jnp.asarray(rows), thumbnail, coords, statistics)
    if pending is not None:
      output[pending[0] : pending[1]] = np.asarray(pending[2])[0, : pending[1] - pending[0]]
    pending = (top, stop, result)
  output[pending[0] : pending[1]] = np.asarray(pending[2])[0, : pending[1] - pending[0]]
  return output


def _global_context(
  model: nn.Module,
  variables: Any,
  batches: _TileBatches,
  positions: list[tuple[int, int]],
  rows: list[int],
  cols: list[int],
  height: int,
  width: int,
  multiple: int,
) -> jax.Array:
  """The whole image's pooled bottleneck features `[1, C]`, assembled from the tiles' cores."""
  tile = batches.tile
  cells = tile // multiple
  row_cores = dict(zip(rows, tiling.axis_cores(rows, tile, height, multiple), strict=True))
  col_cores = dict(zip(cols, tiling.axis_cores(cols, tile, width, multiple), strict=True))
  batch = batches.batch_tiles

  def cell_weights(chunk):
    weights = np.zeros((batch, cells, cells), np.float32)
    for k, (top, left) in enumerate(chunk):
      (y0, y1), (x0, x1) = row_cores[top], col_cores[left]
      weights[k, y0 // multiple : y1 // multiple, x0 // multiple : x1 // multiple] = 1.0
    return jnp.asarray(weights)

  compute = functools.partial(_context_sums, model, variables)
  total = None
  for _, sums in batches.run(positions, compute, extra=cell_weights):
    total = sums.astype(np.float64) if total is None else total + sums
  count = (tiling.round_up(height, multiple) // multiple) * (
    tiling.round_up(width, multiple) // multiple
  )
  return jnp.asarray((total / count)[None], jnp.float32)


def segment_image(
  model: nn.Module,
  variables: Any,
  image: np.ndarray,
  *,
  tile_size: int,
  tile_overlap: int,
  batch_tiles: int = 0,
) -> np.ndarray:
  """`[H, W]` int32 class labels: argmax of the blended logits of `grade_image`."""
  logits = grade_image(
    model,
    variables,
    image,
    tile_size=tile_size,
    tile_overlap=tile_overlap,
    batch_tiles=batch_tiles,
  )
  return np.argmax(logits, axis=-1).astype(np.int32)
