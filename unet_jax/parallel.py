"""Data parallelism with `jax.jit` and a 1-D device mesh named `data`.

The batch is split along its first axis over every device of every host; the train state is
replicated. XLA inserts the gradient all-reduce, and BatchNorm statistics are global.
"""

import logging

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins a multi-process run when `config.distributed` names one; no-op otherwise."""
  dist = config.distributed
  if dist.num_processes is None or dist.num_processes <= 1:
    return
  if dist.coordinator_address is None or dist.process_id is None:
    raise ValueError(
      'config.distributed.num_processes > 1 needs config.distributed.coordinator_address '
      "(e.g. 'localhost:12345') and config.distributed.process_id."
    )
  jax.distributed.initialize(
    coordinator_address=dist.coordinator_address,
    num_processes=dist.num_processes,
    process_id=dist.process_id,
  )
  logging.info('Process %d of %d joined.', jax.process_index(), jax.process_count())


# XLA:CPU hands convolutions to YNNPACK by default. For a U-Net's 3x3 convolutions, above all
# their weight gradients, its own Eigen kernels are faster: with YNNPACK off the train step ran
# 1.3x faster at 128 px and 1.5x at 256 px on a 2-core AMD EPYC (BENCHMARKS.md). Inference (no
# weight gradients) was 7 % slower that way, so it keeps the default.
_CPU_TRAIN_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


def train_compiler_options(platform: str | None = None) -> dict[str, str]:
  """XLA options for compiling the train step on `platform` (default: the default backend).

  None off CPU: the option is XLA:CPU's, and GPU and TPU compilers reject options they lack.
  """
  return dict(_CPU_TRAIN_COMPILER_OPTIONS) if (platform or jax.default_backend()) == 'cpu' else {}


# Predict's tile batch on an accelerator: this share of the free device memory, at most this many.
_TILE_MEMORY_FRACTION = 0.5
_MAX_BATCH_TILES = 32


def batch_that_fits(
  bytes_per_item: int, *, limit: int = _MAX_BATCH_TILES, device: jax.Device | None = None
) -> int:
  """How many items (tiles) one device call should take, from the device and its free memory.

  1 on CPU: XLA:CPU already spreads one tile's convolutions over every core, and a bigger batch
  only grows the host's memory. On a GPU or TPU: as many as fill half of the memory free now
  (the rest stays for the compiler's workspace and fragmentation), between 1 and `limit`.
  A device that reports no memory figures gets 1.
  """
  device = device or jax.local_devices()[0]
  if device.platform == 'cpu':
    return 1
  stats = device.memory_stats() or {}
  if not stats.get('bytes_limit'):
    return 1
  free = stats['bytes_limit'] - stats.get('bytes_in_use', 0)
  return int(max(1, min(limit, free * _TILE_MEMORY_FRACTION // max(bytes_per_item, 1))))


def create_mesh() -> Mesh:
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this host's slice of the global batch into global arrays split over `data`."""
  sharding = batch_sharding(mesh)
  return {
    key: jax.make_array_from_process_local_data(sharding, value)
    for key, value in batch.items()
    if isinstance(value, np.ndarray) and value.dtype != object
  }
