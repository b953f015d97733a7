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
- The whole-photo inputs are made once per image: the thumbnail that the colour head and the
  thumbnail global context read (`model.thumbnail_context`; the same `make_thumbnail` as in
  training), and for `model.coords` each tile's pixel coordinates in the whole photo.
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

`predict_paths` grades a file or a folder of photos into PNGs in another folder; its docstring
lists the rules that protect inputs and earlier outputs.
"""

import functools
import logging
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from unet_jax import data
from unet_jax.data.images import is_image_file, to_uint8
from unet_jax.data.transforms import make_thumbnail
from unet_jax.models.color_head import photo_coords

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
  model: nn.Module,
  variables: Any,
  tiles: jax.Array,
  pooled_context: jax.Array | None,
  thumbnail: jax.Array | None = None,
  coords: jax.Array | None = None,
) -> jax.Array:
  return model.apply(
    variables,
    tiles,
    train=False,
    pooled_context=pooled_context,
    thumbnail=thumbnail,
    coords=coords,
  )


@functools.partial(jax.jit, static_argnums=0)
def _grade_lut_only(
  model: nn.Module, variables: Any, rows: jax.Array, thumbnail: jax.Array | None
) -> jax.Array:
  return model.apply(variables, rows, train=False, thumbnail=thumbnail, lut_only=True)


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

  thumbnail = photo_thumbnail(model, image)
  pooled_context = None
  if getattr(model, 'pools_bottleneck', getattr(model, 'global_context', False)):
    pooled_context = _global_context(
      model, variables, batches, positions, rows, cols, height, width, multiple
    )

  out_channels = model.num_classes if model.head == 'segmentation' else model.out_channels
  output = np.zeros((height, width, out_channels), np.float32)
  row_weights = dict(zip(rows, _axis_weights(rows, tile, height), strict=True))
  col_weights = dict(zip(cols, _axis_weights(cols, tile, width), strict=True))

  def compute(tiles, coords=None):
    context, thumbnails = None, None
    if pooled_context is not None:
      context = jnp.broadcast_to(pooled_context, (tiles.shape[0], pooled_context.shape[-1]))
    if thumbnail is not None:
      thumbnails = jnp.broadcast_to(thumbnail, (tiles.shape[0], *thumbnail.shape[1:]))
    return _grade_tiles(model, variables, tiles, context, thumbnails, coords)

  def tile_coords(chunk):
    coords = np.zeros((batch_tiles, tile, tile, 2), np.float32)
    for k, (top, left) in enumerate(chunk):
      # Reflected past the border exactly as the tile's pixels (and the U-Net's padding) are.
      ys, xs = _reflect_indices(top, tile, height), _reflect_indices(left, tile, width)
      coords[k] = photo_coords(ys, xs, height, width)
    return jnp.asarray(coords)

  extra = tile_coords if getattr(model, 'coords', False) else None
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


def grade_lut_only(
  model: nn.Module, variables: Any, image: np.ndarray, *, rows_per_call: int = 256
) -> np.ndarray:
  """`[H, W, 3]` float32: the colour head's grade alone (`config.predict.lut_only`), no U-Net.

  The head is per pixel, so the photo goes through in bands of `rows_per_call` rows (the last
  one padded: one compile per photo width) and the result equals the full model's colour head.
  """
  if getattr(model, 'color_head', 'none') == 'none':
    raise ValueError(
      'config.predict.lut_only=True needs a colour head; this model has '
      "config.model.color_head='none'."
    )
  image = _check_image(model, image)
  height, width = image.shape[:2]
  thumbnail = photo_thumbnail(model, image)
  band = min(rows_per_call, height)
  output = np.empty((height, width, 3), np.float32)
  pending = None
  for top in range(0, height, band):
    rows = np.zeros((1, band, width, 3), np.float32)
    stop = min(top + band, height)
    rows[0, : stop - top] = image[top:stop]
    result = _grade_lut_only(model, variables, jnp.asarray(rows), thumbnail)
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


def _same_path(a: str, b: str) -> bool:
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def list_inputs(input_path: str) -> list[str]:
  """The photos `input_path` names: the file itself, or the folder's images (not recursive)."""
  if not os.path.exists(input_path):
    raise FileNotFoundError(f'--input {input_path}: no such file or folder.')
  if not os.path.isdir(input_path):
    return [input_path]
  names = sorted(n for n in os.listdir(input_path) if is_image_file(n))
  paths = [os.path.join(input_path, n) for n in names]
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise ValueError(
      f'--input {input_path}: no images in this folder (jpg, jpeg, png, tif, tiff, webp).'
    )
  return paths


def _output_name(input_path: str) -> str:
  return os.path.splitext(os.path.basename(input_path))[0] + '.png'


def check_paths(input_path: str, output_dir: str) -> list[str]:
  """Refuses, before any work, an output folder that could overwrite an input; returns inputs.

  Raises ValueError when `output_dir` is (or resolves to) the input folder, or the folder of a
  single input file, or is not a folder, or when an output name is an input file (a link).
  """
  inputs = list_inputs(input_path)
  input_dir = input_path if os.path.isdir(input_path) else os.path.dirname(input_path) or '.'
  if _same_path(output_dir, input_dir):
    raise ValueError(
      f'--output {output_dir} is the input folder {input_dir}: graded photos must go to another '
      'folder so that no input can be overwritten.'
    )
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'--output {output_dir} exists and is not a folder.')
  if os.path.isdir(output_dir):
    for path in inputs:
      target = os.path.join(output_dir, _output_name(path))
      if os.path.exists(target) and any(_same_path(target, p) for p in inputs):
        raise ValueError(f'--output {output_dir}: writing {target} would overwrite an input.')
  return inputs


def _write_png(array: np.ndarray, output_dir: str, name: str) -> str:
  """Writes `name`, or `stem-1.png`, `stem-2.png`... if taken; never replaces an existing file
  (exclusive create, so not even a file that appears meanwhile or a link to an input)."""
  stem, ext = os.path.splitext(name)
  for attempt in range(10_000):
    path = os.path.join(output_dir, name if attempt == 0 else f'{stem}-{attempt}{ext}')
    try:
      f = open(path, 'xb')  # noqa: SIM115 - removed below if the encoder fails
    except FileExistsError:
      continue
    try:
      with f:
        Image.fromarray(array).save(f, format='PNG')
    except BaseException:
      os.remove(path)
      raise
    return path
  raise FileExistsError(f'{output_dir}: {stem}.png and 10000 numbered variants all exist.')


def _label_image(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return labels.astype(np.uint8 if num_classes <= 256 else np.uint16)


def predict_paths(
  config: ml_collections.ConfigDict,
  model: nn.Module,
  variables: Any,
  input_path: str,
  output_dir: str,
) -> dict[str, Any]:
  """Grades a photo, or every photo of a folder, into PNGs in `output_dir`.

  - Each `photo.ext` becomes `output_dir/photo.png`: 8-bit RGB clipped to [0, 1], or for a
    segmentation model 8-bit class labels (16-bit above 256 classes). EXIF orientation is
    applied on reading, so outputs are upright as the photo is shown.
  - Inputs are never overwritten: an output folder that is the input folder (or resolves to
    it) is refused before any work (`check_paths`). An existing file is never replaced either:
    when `photo.png` exists (an earlier run, or `photo.jpg` next to `photo.png` in the input),
    the output is `photo-1.png`, `photo-2.png`, ... and the summary says which name was used.
  - A file that cannot be read is reported with the reason and the others are still written.

  Returns:
    `{'output_dir', 'written': [{'input', 'output', 'height', 'width', 'seconds'}],
    'failed': [{'input', 'reason'}]}`.
  """
  inputs = check_paths(input_path, output_dir)
  tiling = dict(
    tile_size=config.predict.tile_size,
    tile_overlap=config.predict.tile_overlap,
    batch_tiles=config.predict.batch_tiles,
  )
  _check_tiling(model, tiling['tile_size'], tiling['tile_overlap'])
  os.makedirs(output_dir, exist_ok=True)
  segment = model.head == 'segmentation'
  written, failed = [], []
  for path in inputs:
    start = time.perf_counter()
    try:
      image = data.load_image(path)
    except (ValueError, OSError, Image.DecompressionBombError) as error:
      logging.warning('Skipping %s: %s', path, error)
      failed.append({'input': path, 'reason': str(error)})
      continue
    if segment:
      labels = segment_image(model, variables, image, **tiling)
      result = _label_image(labels, model.num_classes)
    elif config.predict.get('lut_only', False):
      result = to_uint8(grade_lut_only(model, variables, image))
    else:
      result = to_uint8(grade_image(model, variables, image, **tiling))
    del image
    output = _write_png(result, output_dir, _output_name(path))
    seconds = time.perf_counter() - start
    logging.info('%s -> %s (%dx%d, %.1f s)', path, output, *result.shape[1::-1], seconds)
    written.append(
      {
        'input': path,
        'output': output,
        'height': int(result.shape[0]),
        'width': int(result.shape[1]),
        'seconds': round(seconds, 3),
      }
    )
  return {'output_dir': output_dir, 'written': written, 'failed': failed}
