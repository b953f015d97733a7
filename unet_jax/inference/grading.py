"""Grading a whole photo of any size through one compiled tile shape (`grade_image`).

Tile layout and blending weights are in `tiling.py`. Here:
- An image smaller than a tile is one tile, reflect-padded to the tile shape (no new compile).
  Whole-image inference sees zeros past the image instead, so the two differ in the last rows
  and columns of such an image.
- The whole-photo inputs the model reads (`whole_photo.WholePhotoInputs`, as in training) are
  made once per image: its thumbnail and its metering figures; and each tile's pixel
  coordinates in the whole photo.
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

from unet_jax.inference import tile_programs, tiling
from unet_jax.whole_photo import WholePhotoInputs, photo_coords


def check_image(model: nn.Module, image: np.ndarray) -> np.ndarray:
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
  image = check_image(model, image)
  _warn_if_tile_dependent(model)
  height, width = image.shape[:2]
  tile = tile_size
  rows = tiling.tile_offsets(height, tile, tile_overlap, multiple)
  cols = tiling.tile_offsets(width, tile, tile_overlap, multiple)
  positions = [(top, left) for top in rows for left in cols]
  if batch_tiles == 0:
    batch_tiles = min(tile_programs.auto_batch_tiles(model, variables, tile), len(positions))
  batches = tile_programs.TileBatches(image, tile, batch_tiles)

  inputs = WholePhotoInputs.from_model_config(model)
  photo = photo_inputs(model, image)
  pooled_context = None
  if model.pools_bottleneck:
    pooled_context = _global_context(
      model, variables, batches, positions, rows, cols, height, width, multiple
    )

  out_channels = model.num_classes if model.head == 'segmentation' else model.out_channels
  output = np.zeros((height, width, out_channels), np.float32)
  row_weights = dict(zip(rows, tiling.axis_weights(rows, tile, height), strict=True))
  col_weights = dict(zip(cols, tiling.axis_weights(cols, tile, width), strict=True))

  def compute(tiles, coords=None):
    batch = lambda value: jnp.broadcast_to(value, (tiles.shape[0], *value.shape[1:]))
    context = None if pooled_context is None else batch(pooled_context)
    tiled = {key: batch(value) for key, value in photo.items()}
    return tile_programs.grade_tiles(
      model, variables, tiles, context, tiled.get('thumbnail'), coords, tiled.get('statistics')
    )

  def tile_coords(chunk):
    coords = np.zeros((batch_tiles, tile, tile, 2), np.float32)
    for k, (top, left) in enumerate(chunk):
      # Reflected past the border exactly as the tile's pixels (and the U-Net's padding) are.
      ys = tiling.reflect_indices(top, tile, height)
      xs = tiling.reflect_indices(left, tile, width)
      coords[k] = photo_coords(ys, xs, height, width)
    return jnp.asarray(coords)

  extra = tile_coords if inputs.coords else None
  for (top, left), graded in batches.run(positions, compute, extra=extra):
    wy, wx = row_weights[top], col_weights[left]
    bottom, right = top + wy.shape[0], left + wx.shape[0]
    output[top:bottom, left:right] += (
      graded[: wy.shape[0], : wx.shape[0]] * wy[:, None, None] * wx[None, :, None]
    )
  return output


def photo_inputs(model: nn.Module, image: np.ndarray) -> dict[str, jax.Array]:
  """The whole-photo inputs `model` reads of `image` `[H, W, 3]`, batched as one photo:
  `'thumbnail'` `[1, T, T, 3]`, `'statistics'` `[1, 8]` (`WholePhotoInputs`, as the training
  pipeline makes them). Coordinates are left out: each tile or band gets its own."""
  inputs = WholePhotoInputs.from_model_config(model).of_photo(image, coords=False)
  return {key: jnp.asarray(value[None]) for key, value in inputs.items()}


def _global_context(
  model: nn.Module,
  variables: Any,
  batches: tile_programs.TileBatches,
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

  compute = functools.partial(tile_programs.context_sums, model, variables)
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
