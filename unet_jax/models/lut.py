"""3D colour look-up tables: the identity table and trilinear application, in pure `jnp`.

A table `[S, S, S, 3]` holds the output colour at the lattice point `(r, g, b) = (i, j, k) /
(S - 1)`; a colour between lattice points is the trilinear blend of its cell's 8 corners, so the
output is continuous in the input and differentiable in both the colour and the table.

Two ways to read the table, with the same result and gradients:
- `gather`: the 8 corners are looked up by index (`jnp.take`). Few FLOPs; fast where gathers are
  (CPU, GPU).
- `matmul`: the blend is written as products with one-hot interpolation weights (red x green
  weights `[N, S*S]` times the table `[S*S, S*3]`, then a contraction with the blue weights), so
  it runs on matrix units without any gather (TPU), at about `2 * S**3 * 3` FLOPs a pixel.
`method='auto'` picks matmul on TPU and gather elsewhere (see `experiments/lut_speed.py`).
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp

from unet_jax.options import LUT_METHODS


def identity_lut(size: int) -> jax.Array:
  """`[size, size, size, 3]` float32 table that maps every colour to itself."""
  axis = jnp.linspace(0.0, 1.0, size, dtype=jnp.float32)
  r, g, b = jnp.meshgrid(axis, axis, axis, indexing='ij')
  return jnp.stack([r, g, b], axis=-1)


def resolve_method(method: str) -> str:
  if method not in LUT_METHODS:
    raise ValueError(f'LUT method {method!r} is not one of {list(LUT_METHODS)}.')
  if method == 'auto':
    return 'matmul' if jax.default_backend() == 'tpu' else 'gather'
  return method


def lattice_cell(colour: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """Lower lattice index (int32, in [0, size - 2]) and the fraction in [0, 1] for each value."""
  scaled = jnp.clip(colour, 0.0, 1.0) * (size - 1)
  lower = jnp.clip(jnp.floor(scaled), 0, size - 2)
  return lower.astype(jnp.int32), scaled - lower


def trilinear_corners(pixels: jax.Array, size: int) -> Iterator[tuple[jax.Array, jax.Array]]:
  """`[N, 3]` colours -> the 8 corners of each one's cell in a `size`^3 table: (index `[N]`
  into the table flattened to `[size**3, ...]`, trilinear weight `[N]`) per corner."""
  index, frac = lattice_cell(pixels, size)
  for dr in (0, 1):
    wr = frac[:, 0] if dr else 1.0 - frac[:, 0]
    for dg in (0, 1):
      wg = frac[:, 1] if dg else 1.0 - frac[:, 1]
      for db in (0, 1):
        wb = frac[:, 2] if db else 1.0 - frac[:, 2]
        corner = ((index[:, 0] + dr) * size + index[:, 1] + dg) * size + index[:, 2] + db
        yield corner, wr * wg * wb


def _apply_gather(lut: jax.Array, pixels: jax.Array) -> jax.Array:
  """`lut [S, S, S, 3]`, `pixels [N, 3]` -> `[N, 3]`."""
  size = lut.shape[0]
  flat = lut.reshape(size**3, 3)
  out = jnp.zeros_like(pixels)
  for corner, weight in trilinear_corners(pixels, size):
    out = out + weight[:, None] * jnp.take(flat, corner, axis=0)
  return out


def _hat_weights(channel: jax.Array, size: int) -> jax.Array:
  """`[N]` values -> `[N, size]` linear interpolation weights (two non-zero per row)."""
  position = jnp.clip(channel, 0.0, 1.0)[:, None] * (size - 1)
  return jnp.maximum(0.0, 1.0 - jnp.abs(position - jnp.arange(size, dtype=channel.dtype)))


def _apply_matmul(lut: jax.Array, pixels: jax.Array) -> jax.Array:
  size = lut.shape[0]
  wr, wg, wb = (_hat_weights(pixels[:, c], size) for c in range(3))
  rg = (wr[:, :, None] * wg[:, None, :]).reshape(-1, size * size)
  by_blue = rg @ lut.reshape(size * size, size * 3)  # [N, S * 3]
  return jnp.einsum('nk,nkc->nc', wb, by_blue.reshape(-1, size, 3))


def apply_lut(lut: jax.Array, images: jax.Array, method: str = 'auto') -> jax.Array:
  """Trilinear look-up of every pixel.

  Args:
    lut: `[S, S, S, 3]` one table for all images, or `[B, S, S, S, 3]` one per image.
    images: `[B, H, W, 3]` colours in [0, 1] (values outside are clamped to the table's range).
    method: `gather`, `matmul` or `auto` (see the module docstring).

  Returns:
    `[B, H, W, 3]` float32.
  """
  method = resolve_method(method)
  apply_one = _apply_gather if method == 'gather' else _apply_matmul
  images = images.astype(jnp.float32)
  lut = lut.astype(jnp.float32)
  batch, height, width, _ = images.shape
  pixels = images.reshape(batch, height * width, 3)
  shared = lut.ndim == 4
  out = apply_one(lut, pixels.reshape(-1, 3)) if shared else jax.vmap(apply_one)(lut, pixels)
  return out.reshape(batch, height, width, 3)


def smoothness(lut: jax.Array) -> jax.Array:
  """Mean squared difference between neighbouring entries along r, g and b (Zeng et al.'s
  total-variation term), of the table's departure from the identity: a smooth table does not
  posterise or band, and the identity itself costs nothing (the plain term would pull every
  table towards a flat, grey one)."""
  offset = lut - identity_lut(lut.shape[-2])
  axes = range(lut.ndim - 4, lut.ndim - 1)
  return sum(jnp.mean(jnp.square(jnp.diff(offset, axis=a))) for a in axes)


def curvature(lut: jax.Array) -> jax.Array:
  """Mean squared second difference between neighbouring entries along r, g and b: how far
  each entry sits from the straight line through its two neighbours. Any affine grade (a white
  balance, an exposure gain, a linear contrast) costs nothing, so the term does not flatten the
  grade as `smoothness` does; it fills the cells the training photos never reach by continuing
  the grade of the cells around them."""
  return mean_squared_bend(lut, range(lut.ndim - 4, lut.ndim - 1))


def mean_squared_bend(array: jax.Array, axes) -> jax.Array:
  """Sum over `axes` of the mean squared second difference along each: 0 for any array affine
  along them. The curvature of a LUT here, of the frame gain's lattice in `global_grade`."""
  return sum(jnp.mean(jnp.square(jnp.diff(array, n=2, axis=a))) for a in axes)


def monotonicity(lut: jax.Array) -> jax.Array:
  """Mean of how much each output channel falls as its own input channel rises: a brighter red
  in should never give a darker red out (no tone inversions)."""
  first = lut.ndim - 4
  return sum(jnp.mean(jax.nn.relu(-jnp.diff(lut[..., c], axis=first + c))) for c in range(3))
