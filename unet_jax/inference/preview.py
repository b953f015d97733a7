"""The grade under the U-Net alone (`predict.lut_only`), fast enough to page through full-size
photos.

The grade has two kinds of part (`UNet._global_grade`):
- Colour parts (auto levels, exposure, tone curves, colour head) map a colour the same wherever
  it sits in the photo, once the photo's figures and thumbnail are read. Run once on the
  lattice of a `[S, S, S, 3]` table, they become one table per photo (sown as
  `intermediates/colour_grade`), applied with the trilinear look-up: 8 reads a pixel, however
  many parts there are. Exact for a colour head's LUT alone when `S - 1` is a multiple of its
  size minus 1 (a trilinear map stays trilinear on finer cells); otherwise the table's
  interpolation is the only difference from the parts themselves (BENCHMARKS.md).
- Frame parts (the local affine grid, the frame gain) are coarse lattices over the frame,
  sliced at every pixel. A band of whole rows slices them separably
  (`global_grade.frame_field_planes`), as exact as the pointwise slice. A grid that weighs each
  pixel's detail (`model.local_grid_detail`) also reads the photo's own pixels and its guide
  fields: it is sliced pointwise, by the model's own `local_affine.slice_affine`.

Training never takes this path: the parts' own code grades there, so their gradients are exact.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.inference import grading
from unet_jax.models import global_grade, has_global_grade, local_affine
from unet_jax.models import lut as lut_lib
from unet_jax.whole_photo import photo_coords

# Lattice points per axis of the per-photo table: 65 holds the colour head's 9-, 17- and 33-point
# LUTs exactly (64 cells split each of theirs), and one pass of its 65^3 colours through the
# colour parts costs milliseconds a photo.
TABLE_SIZE = 65


def grade_lut_only(
  model: nn.Module,
  variables: Any,
  image: np.ndarray,
  *,
  rows_per_call: int = 256,
  table_size: int = TABLE_SIZE,
) -> np.ndarray:
  """`[H, W, 3]` float32: the grade under the U-Net of `image` (`config.predict.lut_only`), no
  U-Net pass. Not clipped, as `grading.grade_image`'s output is not.

  The photo goes through in bands of `rows_per_call` rows (the last one padded: one compile
  per photo width), each band handed back while the next is graded.
  """
  if not has_global_grade(model):
    raise ValueError(
      'config.predict.lut_only=True needs a grade under the U-Net (config.model.color_head, '
      'frame_gain, auto_levels, exposure, curves or local_grid); this model has none.'
    )
  image = grading.check_image(model, image)
  height, width = image.shape[:2]
  inputs = grading.photo_inputs(model, image)
  table, grid, gain, guides = photo_parts(model, variables, inputs, table_size)
  band = min(rows_per_call, height)
  # Rows past the photo's last (the last band's padding) take its coordinates.
  padded_rows = np.minimum(np.arange(height + band), height - 1)
  row_coords = photo_coords(padded_rows, [0], height, width)[:, 0, 0]
  col_coords = jnp.asarray(photo_coords([0], np.arange(width), height, width)[0, :, 1])
  output = np.empty((height, width, 3), np.float32)
  pending = None
  for top in range(0, height, band):
    rows = np.zeros((band, width, 3), np.float32)
    stop = min(top + band, height)
    rows[: stop - top] = image[top:stop]
    ys = jnp.asarray(row_coords[top : top + band])
    result = _grade_band(table, grid, gain, guides, jnp.asarray(rows), ys, col_coords)
    if pending is not None:
      output[pending[0] : pending[1]] = np.asarray(pending[2])[: pending[1] - pending[0]]
    pending = (top, stop, result)
  output[pending[0] : pending[1]] = np.asarray(pending[2])[: pending[1] - pending[0]]
  return output


@functools.partial(jax.jit, static_argnums=(0, 3))
def photo_parts(
  model: nn.Module, variables: Any, photo: dict[str, jax.Array], table_size: int
) -> tuple[jax.Array, jax.Array | None, jax.Array | None, jax.Array | None]:
  """The grade of one photo (`photo`: its `grading.photo_inputs`) as its parts: the colour
  parts baked into a `[S, S, S, 3]` table, the local affine grid `[G, G, 12 (+ 9 K)]`, the frame
  gain's lattice `[F, F, 3]` and the grid's guide fields `[T, T, 5 K]` (None for a part the
  model lacks)."""
  lattice = lut_lib.identity_lut(table_size).reshape(1, table_size**2, table_size, 3)
  _, state = model.apply(
    variables,
    lattice,
    train=False,
    thumbnail=photo.get('thumbnail'),
    statistics=photo.get('statistics'),
    coords=jnp.zeros((*lattice.shape[:3], 2), jnp.float32),
    lut_only=True,
    mutable=['intermediates'],
  )
  sown = state['intermediates']
  table = sown['colour_grade'][0].reshape(table_size, table_size, table_size, 3)
  grid = sown['local_affine']['local_affine'][0][0] if model.local_grid else None
  gain = sown['frame_gain']['frame_gain'][0] if model.frame_gain else None
  detail = model.local_grid and model.local_grid_detail
  guides = sown['local_affine']['local_guides'][0][0] if detail else None
  return table, grid, gain, guides


@jax.jit
def _grade_band(
  table: jax.Array,
  grid: jax.Array | None,
  gain: jax.Array | None,
  guides: jax.Array | None,
  rows: jax.Array,
  ys: jax.Array,
  xs: jax.Array,
) -> jax.Array:
  """`[R, W, 3]` whole rows of a photo at frame coordinates `ys [R]`, `xs [W]` -> their grade.

  In channel planes: the table's output is computed once (every output channel reads all
  three), each frame field's planes are fused into the one sum that reads them. Interleaved
  channels, or the table fused into three readers, take two to four times as long on a CPU."""
  colours = jax.lax.optimization_barrier(_look_up_planes(table, rows))
  if guides is not None:
    coords = jnp.stack(jnp.meshgrid(ys, xs, indexing='ij'), axis=-1)[None]
    graded = jnp.moveaxis(colours, 0, -1)[None]
    sliced = local_affine.slice_affine(grid[None], graded, coords, guides[None], rows[None])
    colours = jnp.moveaxis(sliced[0], -1, 0)
  elif grid is not None:
    cells = grid.shape[0]
    field = global_grade.frame_field_planes(
      grid, local_affine.cell_lattice(ys, cells), local_affine.cell_lattice(xs, cells)
    )
    # local_affine.apply_affine, plane by plane: the 3 x 3 matrix, then the offset.
    colours = [
      colours[i] + sum(field[3 * i + j] * colours[j] for j in range(3)) + field[9 + i]
      for i in range(3)
    ]
  if gain is not None:
    field = global_grade.frame_field_planes(gain, ys, xs)
    colours = [colours[i] * (1.0 + field[i]) for i in range(3)]
  return jnp.stack(list(colours), axis=-1)


def _look_up_planes(table: jax.Array, rows: jax.Array) -> jax.Array:
  """`[R, W, 3]` colours -> `[3, R, W]`: `lut.apply_lut`'s trilinear look-up, one channel plane
  at a time (a scalar read per corner and channel)."""
  size = table.shape[0]
  channels = [table[..., c].reshape(-1) for c in range(3)]
  out = [0.0, 0.0, 0.0]
  for corner, weight in lut_lib.trilinear_corners(rows.reshape(-1, 3), size):
    out = [out[c] + weight * channels[c][corner] for c in range(3)]
  return jnp.stack(out).reshape(3, *rows.shape[:2])
