"""Converted weights cached as `.npz` in `cache_dir('weights')`, checked on every read.

Each `.npz` is deterministic and sits beside a `.json` manifest holding its sha256. Both are
written to temporary files and renamed into place, so a conversion that fails leaves nothing
behind.
"""

import json
import logging
import os
import pathlib
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from unet_jax import paths
from unet_jax.paths import sha256_file

CACHE_FORMAT_VERSION = 1


def _write_npz(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
  # A fixed timestamp makes the bytes (and so the checksum) the same for the same arrays, so
  # processes converting at once write identical files.
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED, allowZip64=True) as archive:
    for name in sorted(arrays):
      info = zipfile.ZipInfo(f'{name}.npy', date_time=(1980, 1, 1, 0, 0, 0))
      with archive.open(info, 'w', force_zip64=True) as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)


def _read_verified(npz: pathlib.Path, manifest: pathlib.Path) -> dict[str, np.ndarray] | None:
  if not (npz.is_file() and manifest.is_file()):
    return None
  try:
    recorded = json.loads(manifest.read_text())
  except (OSError, ValueError):
    recorded = {}
  if recorded.get('format_version') != CACHE_FORMAT_VERSION:
    return None
  if recorded.get('sha256') != sha256_file(npz):
    logging.warning('Cached weights %s fail their checksum; converting them again.', npz)
    return None
  with np.load(npz, allow_pickle=False) as data:
    arrays = {name: data[name] for name in data.files}
  for array in arrays.values():
    array.flags.writeable = False
  return arrays


def _atomic_write(directory: pathlib.Path, final: pathlib.Path, write: Callable) -> str:
  """Writes via a temporary file in `directory` renamed onto `final`; returns its sha256."""
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{final.name}.', suffix='.tmp')
  os.close(fd)
  try:
    write(pathlib.Path(tmp))
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
    digest = sha256_file(tmp)
    os.replace(tmp, final)
  except BaseException:
    os.unlink(tmp)
    raise
  return digest


def cached_arrays(
  name: str,
  build: Callable[[], Mapping[str, np.ndarray]],
  metadata: Callable[[], Mapping[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
  """`build()`'s arrays, converted once into `cache_dir('weights')/<name>.npz`.

  The cache is used only if its sha256 matches the one in `<name>.json`; otherwise `build()` runs
  again. `metadata()` (provenance, such as the source file's checksum) goes into the manifest.
  Returned arrays are read-only. An exception in `build()` writes nothing.
  """
  directory = paths.cache_dir('weights')
  npz, manifest = directory / f'{name}.npz', directory / f'{name}.json'
  arrays = _read_verified(npz, manifest)
  if arrays is not None:
    return arrays
  arrays = {key: np.asarray(value) for key, value in build().items()}
  digest = _atomic_write(directory, npz, lambda tmp: _write_npz(tmp, arrays))
  record = {
    'format_version': CACHE_FORMAT_VERSION,
    'sha256': digest,
    'bytes': npz.stat().st_size,
    **(metadata() if metadata else {}),
  }
  _atomic_write(directory, manifest, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
  logging.info('Cached converted weights in %s (sha256 %s).', npz, digest)
  for array in arrays.values():
    array.flags.writeable = False
  return arrays
