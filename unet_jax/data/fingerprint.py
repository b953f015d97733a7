"""A fingerprint of the data a run trains on, so a resume on other photos is refused.

For pairs (the built-in dataset and paired folders) it lists every file of the training split
with its size and SHA-256, relative to the root: moving or copying the folder (a new
`config.data.dir`) keeps it, while other photos, another grade or fewer pairs change it. Eval
photos are not part of it, so the eval split may change. Hashes of the previous fingerprint are
reused for files of the same root whose size and modification time are unchanged, so a resume
reads nothing twice. For a tfds segmentation dataset it is the dataset, split and record count.
"""

import os
from typing import Any

import ml_collections

from unet_jax.data import builtin, folder_scan, segmentation
from unet_jax.paths import sha256_file

_MAX_LISTED = 5


def _pairs_root(config: ml_collections.ConfigDict) -> str:
  if config.data.name == 'builtin':
    return str(builtin.build_folder(config.data.look, builtin.min_side(config.data)))
  return config.data.dir


def train_fingerprint(
  config: ml_collections.ConfigDict, data_dir: str | None, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
  """The fingerprint of `config`'s training split (see the module docstring)."""
  data = config.data
  if config.task == 'segment':
    source = segmentation.open_split(data.name, data.train_split, data_dir)
    return {'kind': 'tfds', 'name': data.name, 'split': data.train_split, 'records': len(source)}
  scan = folder_scan.scan_folder(_pairs_root(config))
  known = {}
  if previous and previous.get('kind') == 'pairs' and previous.get('root') == scan.root:
    known = previous.get('files', {})
  files = {}
  for pair in scan.splits.get(data.train_split, []):
    for path in (pair.input, pair.target):
      relative = os.path.relpath(path, scan.root)
      info = os.stat(path)
      entry = known.get(relative, {})
      if entry.get('bytes') == info.st_size and entry.get('mtime_ns') == info.st_mtime_ns:
        sha = entry['sha256']
      else:
        sha = sha256_file(path)
      files[relative] = {'bytes': info.st_size, 'mtime_ns': info.st_mtime_ns, 'sha256': sha}
  return {'kind': 'pairs', 'split': data.train_split, 'root': scan.root, 'files': files}


def _listed(names: list[str]) -> str:
  shown = ', '.join(names[:_MAX_LISTED])
  return shown + (f', ... ({len(names) - _MAX_LISTED} more)' if len(names) > _MAX_LISTED else '')


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
  """What changed between two fingerprints, one phrase each; [] when the data is the same."""
  if before.get('kind') != now.get('kind'):
    return [f'the data kind changed from {before.get("kind")} to {now.get("kind")}']
  if now['kind'] == 'tfds':
    return [
      f'{key} {before.get(key)!r} -> {now.get(key)!r}'
      for key in ('name', 'split', 'records')
      if before.get(key) != now.get(key)
    ]
  old, new = before.get('files', {}), now.get('files', {})
  removed = sorted(set(old) - set(new))
  added = sorted(set(new) - set(old))
  changed = sorted(
    name
    for name in set(old) & set(new)
    if (old[name]['bytes'], old[name]['sha256']) != (new[name]['bytes'], new[name]['sha256'])
  )
  found = []
  if changed:
    found.append(f'{len(changed)} training file(s) have other contents ({_listed(changed)})')
  if removed:
    found.append(f'{len(removed)} training file(s) are gone ({_listed(removed)})')
  if added:
    found.append(f'{len(added)} training file(s) are new ({_listed(added)})')
  return found
