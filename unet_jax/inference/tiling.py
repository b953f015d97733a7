"""Tile geometry for full-resolution inference, in numpy, one axis at a time (it is separable).

- Tiles are `tile_size` squares whose origins are multiples of 2**levels, so every tile sees
  the pooling grid of the whole image. The last tile of a row or column is moved back to end at
  the image size rounded up to 2**levels, where whole-image inference ends too, so only the few
  rows the U-Net would pad itself are reflect-padded. The stride is `tile_size - tile_overlap`
  rounded down to a multiple of 2**levels: the real overlap can be a little larger than asked.
- Overlapping tiles are blended with a separable raised-cosine window that ramps across each
  overlap with a neighbour (not at the image borders), normalised by the summed weight.
- For global context each tile owns a core: its cells up to half-way through each overlap.
"""

import numpy as np


def check_tiling(levels: int, tile_size: int, tile_overlap: int) -> int:
  """Returns 2**levels after checking the tile settings against a model of `levels` levels."""
  multiple = 2**levels
  if tile_size <= 0 or tile_size % multiple:
    raise ValueError(
      f'config.predict.tile_size={tile_size} must be a positive multiple of 2**model.levels '
      f'= {multiple} (model.levels={levels}), so that every tile sees the same pooling '
      'grid as the whole image.'
    )
  if not 0 <= 2 * tile_overlap < tile_size:
    raise ValueError(
      f'config.predict.tile_overlap={tile_overlap} must be >= 0 and less than half of '
      f'config.predict.tile_size={tile_size}.'
    )
  return multiple


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def tile_offsets(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
  """Tile origins along one axis of `size` pixels; all are multiples of `multiple`."""
  extent = round_up(size, multiple)
  if extent <= tile:
    return [0]
  stride = max(multiple, (tile - overlap) // multiple * multiple)
  count = -(-(extent - tile) // stride) + 1
  return [min(i * stride, extent - tile) for i in range(count)]


def ramp(length: int) -> np.ndarray:
  """Raised-cosine rise over `length` pixels; strictly positive, and ramp + reversed ramp = 1."""
  position = (np.arange(length, dtype=np.float64) + 0.5) / length
  return np.sin(0.5 * np.pi * position) ** 2


def axis_weights(offsets: list[int], tile: int, size: int) -> list[np.ndarray]:
  """Per tile, its blending weight over `[offset, min(offset + tile, size))`, normalised so
  that the weights of all tiles covering a pixel sum to one."""
  windows = []
  for i, offset in enumerate(offsets):
    window = np.ones(tile, np.float64)
    if i > 0:
      rise = offsets[i - 1] + tile - offset
      if rise > 0:
        window[:rise] *= ramp(rise)
    if i + 1 < len(offsets):
      fall = offset + tile - offsets[i + 1]
      if fall > 0:
        window[tile - fall :] *= ramp(fall)[::-1]
    windows.append(window)
  total = np.zeros(max(offsets) + tile, np.float64)
  for offset, window in zip(offsets, windows, strict=True):
    total[offset : offset + tile] += window
  return [
    (window / total[offset : offset + tile])[: max(0, min(tile, size - offset))].astype(np.float32)
    for offset, window in zip(offsets, windows, strict=True)
  ]


def axis_cores(offsets: list[int], tile: int, size: int, multiple: int) -> list[tuple[int, int]]:
  """Per tile, the pixels it owns for global context: `[start, stop)` in tile coordinates,
  split half-way through each overlap (on the 2**levels grid) and ending at the size rounded up
  to 2**levels, the extent the whole-image bottleneck pools over."""
  extent = round_up(size, multiple)
  bounds = [0]
  for i in range(1, len(offsets)):
    middle = (offsets[i] + offsets[i - 1] + tile) // 2
    bounds.append(middle // multiple * multiple)
  bounds.append(extent)
  return [(bounds[i] - o, bounds[i + 1] - o) for i, o in enumerate(offsets)]


def reflect_indices(start: int, length: int, size: int) -> np.ndarray:
  """Indices of `[start, start + length)` into an axis of `size`, reflected past its end as
  `np.pad(mode='reflect')` (and the U-Net's own padding) does."""
  index = np.arange(start, start + length)
  if size == 1:
    return np.zeros_like(index)
  period = 2 * (size - 1)
  index = index % period
  return np.where(index < size, index, period - index)


def extract_tile(image: np.ndarray, top: int, left: int, tile: int, out: np.ndarray) -> None:
  height, width = image.shape[:2]
  if top + tile <= height and left + tile <= width:
    out[...] = image[top : top + tile, left : left + tile]
  else:
    rows = reflect_indices(top, tile, height)
    cols = reflect_indices(left, tile, width)
    out[...] = image[rows[:, None], cols[None, :]]
