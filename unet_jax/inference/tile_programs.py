"""The compiled programs of tiled grading, and the loop that feeds them tiles.

The model is static (a hashable linen dataclass), so `jax.jit` keeps one executable per (model,
tile batch shape): one compile per tile shape, reused by every image.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import parallel
from unet_jax.inference import tiling

_BOTTLENECK = 'bottleneck'


@functools.partial(jax.jit, static_argnums=0)
def grade_tiles(
  model: nn.Module,
  variables: Any,
  tiles: jax.Array,
  pooled_context: jax.Array | None,
  thumbnail: jax.Array | None = None,
  coords: jax.Array | None = None,
  statistics: jax.Array | None = None,
) -> jax.Array:
  """`[B, T, T, C]` tiles -> the model's output for them; the whole-photo inputs broadcast to
  the batch (`thumbnail`, `statistics`; `coords` each tile's own), `pooled_context` the whole
  image's (bottleneck global context)."""
  return model.apply(
    variables,
    tiles,
    train=False,
    pooled_context=pooled_context,
    thumbnail=thumbnail,
    statistics=statistics,
    coords=coords,
  )


def _is_bottleneck(module: nn.Module, method_name: str) -> bool:
  return module.name == _BOTTLENECK and method_name == '__call__'


@functools.partial(jax.jit, static_argnums=0)
def context_sums(
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
    memory = grade_tiles.lower(model, variables, tiles, context).compile().memory_analysis()
    _tile_bytes[model, tile] = (
      memory.temp_size_in_bytes + memory.output_size_in_bytes + tiles.size * 4
    )
  return parallel.batch_that_fits(_tile_bytes[model, tile])


class TileBatches:
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
