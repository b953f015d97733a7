"""Where unet_jax keeps files it builds once: converted weights and the built-in dataset."""

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
