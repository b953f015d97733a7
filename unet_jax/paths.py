"""Where unet_jax keeps files it builds once (converted weights, the built-in dataset), and the
checksum that names a file's content (weights caches, exports, the training-data fingerprint).

It imports nothing from the package, so `data/`, `pretrained/` and `inference/` all may use it.
"""

import hashlib
import os
import pathlib


def cache_dir(*parts: str) -> pathlib.Path:
  """`$UNET_JAX_CACHE/<parts>` (default `~/.cache/unet_jax/<parts>`), created if missing."""
  root = os.environ.get('UNET_JAX_CACHE') or os.path.join(
    os.path.expanduser('~'), '.cache', 'unet_jax'
  )
  path = pathlib.Path(root, *parts)
  path.mkdir(parents=True, exist_ok=True)
  return path


def sha256_file(path: str | os.PathLike) -> str:
  """The hex SHA-256 of the file's bytes, read in 4 MiB chunks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()
