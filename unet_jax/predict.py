"""Full-resolution tiled inference: photos of any size through one compiled tile shape.

How an image is graded (`grade_image`):
- Tiles are `tile_size` squares whose origins are multiples of 2**levels, so every tile sees
  the pooling grid of the whole image. The last tile of a row or column is moved back to end at
  the image size rounded up to 2**levels, where whole-image inference ends too, so only the few
  rows the U-Net would pad itself are reflect-padded. The stride is `tile_size - tile_overlap`
  rounded down to a multiple of 2**levels: the real overlap can be a little larger than asked.
- An image smaller than a tile is one tile, reflect-padded to the tile shape (no new compile).
  Whole-image inference sees zeros past the image instead, so the two differ in the last rows
  and columns of such an image.
- Overlapping tiles are blended with a separable raised-cosine window that ramps across each
  overlap with a neighbour (not at the image borders), normalised by the summed weight.
- Global context (`model.global_context`) is computed once per image and shared by all tiles.
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

`predict_paths` grades a file or a folder of photos into another folder, each written like the
photo it came from; `photo_batch.py` holds the rules that protect inputs and earlier outputs.
"""

import functools
import io
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from unet_jax import data, photo_batch
from unet_jax.data import encode

_BOTTLENECK = 'bottleneck'


# ---------------------------------------------------------------------------------------------
# Tile layout and blending weights (pure numpy, one axis at a time: everything is separable).


def _check_tiling(model: nn.Module, tile_size: int, tile_overlap: int) -> int:
  """Returns 2**levels after checking the tile settings against the model."""
  multiple = 2**model.levels
  if tile_size <= 0 or tile_size % multiple:
    raise ValueError(
      f'config.predict.tile_size={tile_size} must be a positive multiple of 2**model.levels '
      f'= {multiple} (model.levels={model.levels}), so that every tile sees the same pooling '
      'grid as the whole image.'
    )
  if not 0 <= 2 * tile_overlap < tile_size:
    raise ValueError(
      f'config.predict.tile_overlap={tile_overlap} must be >= 0 and less than half of '
      f'config.predict.tile_size={tile_size}.'
    )
  return multiple


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _tile_offsets(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
  """Tile origins along one axis of `size` pixels; all are multiples of `multiple`."""
  extent = _round_up(size, multiple)
  if extent <= tile:
    return [0]
  stride = max(multiple, (tile - overlap) // multiple * multiple)
  count = -(-(extent - tile) // stride) + 1
  return [min(i * stride, extent - tile) for i in range(count)]


def _ramp(length: int) -> np.ndarray:
  """Raised-cosine rise over `length` pixels; strictly positive, and ramp + reversed ramp = 1."""
  position = (np.arange(length, dtype=np.float64) + 0.5) / length
  return np.sin(0.5 * np.pi * position) ** 2


def _axis_weights(offsets: list[int], tile: int, size: int) -> list[np.ndarray]:
  """Per tile, its blending weight over `[offset, min(offset + tile, size))`, normalised so
  that the weights of all tiles covering a pixel sum to one."""
  windows = []
  for i, offset in enumerate(offsets):
    window = np.ones(tile, np.float64)
    if i > 0:
      rise = offsets[i - 1] + tile - offset
      if rise > 0:
        window[:rise] *= _ramp(rise)
    if i + 1 < len(offsets):
      fall = offset + tile - offsets[i + 1]
      if fall > 0:
        window[tile - fall :] *= _ramp(fall)[::-1]
    windows.append(window)
  total = np.zeros(max(offsets) + tile, np.float64)
  for offset, window in zip(offsets, windows, strict=True):
    total[offset : offset + tile] += window
  return [
    (window / total[offset : offset + tile])[: max(0, min(tile, size - offset))].astype(np.float32)
    for offset, window in zip(offsets, windows, strict=True)
  ]


def _axis_cores(offsets: list[int], tile: int, size: int, multiple: int) -> list[tuple[int, int]]:
  """Per tile, the pixels it owns for global context: `[start, stop)` in tile coordinates,
  split half-way through each overlap (on the 2**levels grid) and ending at the size rounded up
  to 2**levels, the extent the whole-image bottleneck pools over."""
  extent = _round_up(size, multiple)
  bounds = [0]
  for i in range(1, len(offsets)):
    middle = (offsets[i] + offsets[i - 1] + tile) // 2
    bounds.append(middle // multiple * multiple)
  bounds.append(extent)
  return [(bounds[i] - o, bounds[i + 1] - o) for i, o in enumerate(offsets)]


def _reflect_indices(start: int, length: int, size: int) -> np.ndarray:
  """Indices of `[start, start + length)` into an axis of `size`, reflected past its end as
  `np.pad(mode='reflect')` (and the U-Net's own padding) does."""
  index = np.arange(start, start + length)
  if size == 1:
    return np.zeros_like(index)
  period = 2 * (size - 1)
  index = index % period
  return np.where(index < size, index, period - index)


def _extract_tile(image: np.ndarray, top: int, left: int, tile: int, out: np.ndarray) -> None:
  height, width = image.shape[:2]
  if top + tile <= height and left + tile <= width:
    out[...] = image[top : top + tile, left : left + tile]
  else:
    rows = _reflect_indices(top, tile, height)
    cols = _reflect_indices(left, tile, width)
    out[...] = image[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------------------------
# The two compiled programs. The model is static (hashable linen dataclass), so jax.jit keeps
# one executable per (model, tile batch shape): one compile per tile shape, reused by every image.


@functools.partial(jax.jit, static_argnums=0)
def _grade_tiles(
  model: nn.Module, variables: Any, tiles: jax.Array, pooled_context: jax.Array | None
) -> jax.Array:
  return model.apply(variables, tiles, train=False, pooled_context=pooled_context)


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
        _extract_tile(self.image, top, left, self.tile, tiles[k])
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


def grade_image(
  model: nn.Module,
  variables: Any,
  image: np.ndarray,
  *,
  tile_size: int,
  tile_overlap: int,
  batch_tiles: int = 1,
) -> np.ndarray:
  """Runs the model over `image` tile by tile and blends the tiles.

  Args:
    model: a `UNet` (inference mode: `train=False`).
    variables: its variables (`params`, and `batch_stats` for batch norm).
    image: `[H, W, in_channels]` float32 in [0, 1], any H and W.
    tile_size: tile side in pixels (`config.predict.tile_size`), a multiple of 2**model.levels.
    tile_overlap: pixels shared by neighbouring tiles and blended (`config.predict.tile_overlap`).
    batch_tiles: tiles per device call (`config.predict.batch_tiles`).

  Returns:
    `[H, W, C]` float32 on the host: the graded image (image head, not clipped) or the logits
    (segmentation head, C = num_classes).
  """
  multiple = _check_tiling(model, tile_size, tile_overlap)
  if batch_tiles < 1:
    raise ValueError(f'config.predict.batch_tiles={batch_tiles} must be >= 1.')
  image = _check_image(model, image)
  _warn_if_tile_dependent(model)
  height, width = image.shape[:2]
  tile = tile_size
  rows = _tile_offsets(height, tile, tile_overlap, multiple)
  cols = _tile_offsets(width, tile, tile_overlap, multiple)
  positions = [(top, left) for top in rows for left in cols]
  batches = _TileBatches(image, tile, batch_tiles)

  pooled_context = None
  if getattr(model, 'global_context', False):
    pooled_context = _global_context(
      model, variables, batches, positions, rows, cols, height, width, multiple
    )

  out_channels = model.num_classes if model.head == 'segmentation' else model.out_channels
  output = np.zeros((height, width, out_channels), np.float32)
  row_weights = dict(zip(rows, _axis_weights(rows, tile, height), strict=True))
  col_weights = dict(zip(cols, _axis_weights(cols, tile, width), strict=True))

  def compute(tiles):
    context = None
    if pooled_context is not None:
      context = jnp.broadcast_to(pooled_context, (tiles.shape[0], pooled_context.shape[-1]))
    return _grade_tiles(model, variables, tiles, context)

  for (top, left), graded in batches.run(positions, compute):
    wy, wx = row_weights[top], col_weights[left]
    bottom, right = top + wy.shape[0], left + wx.shape[0]
    output[top:bottom, left:right] += (
      graded[: wy.shape[0], : wx.shape[0]] * wy[:, None, None] * wx[None, :, None]
    )
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
  row_cores = dict(zip(rows, _axis_cores(rows, tile, height, multiple), strict=True))
  col_cores = dict(zip(cols, _axis_cores(cols, tile, width, multiple), strict=True))
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
  count = (_round_up(height, multiple) // multiple) * (_round_up(width, multiple) // multiple)
  return jnp.asarray((total / count)[None], jnp.float32)


def segment_image(
  model: nn.Module,
  variables: Any,
  image: np.ndarray,
  *,
  tile_size: int,
  tile_overlap: int,
  batch_tiles: int = 1,
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


# ---------------------------------------------------------------------------------------------
# Files.


def list_inputs(input_path: str, *, recursive: bool = False) -> list[str]:
  """The photos `input_path` names (see `photo_batch.list_inputs`)."""
  return photo_batch.list_inputs(input_path, recursive=recursive)


def check_paths(input_path: str, output_dir: str, *, recursive: bool = False) -> list[str]:
  """Refuses an output folder that could overwrite an input, before any work; returns inputs."""
  return photo_batch.check_paths(input_path, output_dir, recursive=recursive)


def _label_png(labels: np.ndarray, num_classes: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(labels.astype(np.uint8 if num_classes <= 256 else np.uint16)).save(buffer, 'PNG')
  return buffer.getvalue()


def predict_paths(
  config: ml_collections.ConfigDict,
  model: nn.Module,
  variables: Any,
  input_path: str,
  output_dir: str,
  *,
  skip_existing: bool = False,
  recursive: bool = False,
) -> dict[str, Any]:
  """Grades a photo, or every photo of a folder, into `output_dir`.

  - Each photo is read into the run's working space (`config.data.working_space`), graded,
    and written like it came (`data/encode.py`): same container, bit depth and ICC profile,
    EXIF with orientation 1, unless `config.predict.output_*` say otherwise. A segmentation
    model writes 8-bit class labels as PNG (16-bit above 256 classes).
  - File rules (never overwrite, planned names, `skip_existing`, `recursive`, temporary names,
    the JSON summary): see `photo_batch.py`.
  - A file that cannot be read is reported with the reason and the others are still written.

  Returns the summary: `{'output_dir', 'written': [{'input', 'output', 'height', 'width',
  'seconds', ...}], 'skipped': [...], 'failed': [{'input', 'reason'}], ...}`.
  """
  inputs = check_paths(input_path, output_dir, recursive=recursive)
  tiling = dict(
    tile_size=config.predict.tile_size,
    tile_overlap=config.predict.tile_overlap,
    batch_tiles=config.predict.batch_tiles,
  )
  _check_tiling(model, tiling['tile_size'], tiling['tile_overlap'])
  options = config.predict
  encode.check_output_options(options)
  space = config.data.working_space
  segment = model.head == 'segmentation'
  root = photo_batch.input_root(input_path)
  extension = (lambda _: '.png') if segment else (lambda p: encode.planned_extension(p, options))
  outputs = photo_batch.plan_outputs(inputs, root, output_dir, extension)

  def grade(path: str) -> tuple[bytes, dict[str, Any]]:
    try:
      photo = data.load_photo(path, space)
    except Image.DecompressionBombError as error:
      raise ValueError(f'{path}: {error}') from None
    height, width = photo.pixels.shape[:2]
    if segment:
      labels = segment_image(model, variables, photo.pixels, **tiling)
      return _label_png(labels, model.num_classes), {'height': height, 'width': width}
    graded = grade_image(model, variables, photo.pixels, **tiling)
    spec = encode.output_spec(photo, path, options)
    encoded, clipped = encode.encode_photo(graded, photo, spec, options.jpeg_quality)
    return encoded, {
      'height': height,
      'width': width,
      'format': spec.container,
      'bits': spec.bits,
      'profile': spec.profile_name,
      'exif': photo.exif is not None,
      'clipped_pixels': photo.clipped_pixels + clipped,
    }

  header = {
    'input': input_path,
    'working_space': space,
    'options': {k: options[k] for k in ('output_format', 'output_bits', 'output_profile')},
  }
  return photo_batch.run_batch(
    inputs, outputs, output_dir, grade, skip_existing=skip_existing, header=header
  )
