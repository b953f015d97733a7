"""The built-in default dataset: photos shipped inside installed packages, graded by a look.

Built offline the first time it is asked for, into `cache_dir('data')`:

- Photos: the colour photographs that scikit-image, scikit-learn and matplotlib install (the
  table `PHOTOS`), EXIF applied, shrunk so the longer side is at most 512 px (Lanczos), 8-bit.
- Split BY PHOTO, fixed: `TEST_PHOTOS` (chelsea, coffee, china: an animal close-up, a still life
  and a landscape) are held out as 'test'; every other photo is 'train'. The two motorcycle
  photos are a stereo pair of one scene and both stay in 'train', so no scene is on both sides.
- Targets: `target = looks.LOOKS[look](input)` on the stored 8-bit input, saved as 8-bit PNG.
  See `unet_jax/data/looks.py` for what each look does.

The folder `builtin/v<BUILD_VERSION>/<look>/{train,test}/{input,target}/<photo>.png` is then
prepared like any paired folder, its tfds files kept under `cache_dir('data', 'tfds')`.
A photo whose package is not installed is left out and the summary says which are present.
"""

import importlib.util
import json
import os
import pathlib
import shutil
from typing import Any

import numpy as np
from PIL import Image

from unet_jax import paths
from unet_jax.data import looks, paired_folders
from unet_jax.data.errors import DataError
from unet_jax.data.images import load_image, to_uint8

# name -> (package, path inside the package).
PHOTOS: dict[str, tuple[str, str]] = {
  'astronaut': ('skimage', 'data/astronaut.png'),
  'chelsea': ('skimage', 'data/chelsea.png'),
  'coffee': ('skimage', 'data/coffee.png'),
  'rocket': ('skimage', 'data/rocket.jpg'),
  'motorcycle_left': ('skimage', 'data/motorcycle_left.png'),
  'motorcycle_right': ('skimage', 'data/motorcycle_right.png'),
  'hubble_deep_field': ('skimage', 'data/hubble_deep_field.jpg'),
  'retina': ('skimage', 'data/retina.jpg'),
  'ihc': ('skimage', 'data/ihc.png'),
  'china': ('sklearn', 'datasets/images/china.jpg'),
  'flower': ('sklearn', 'datasets/images/flower.jpg'),
  'grace_hopper': ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
}
TEST_PHOTOS = ('chelsea', 'coffee', 'china')
SPLITS = ('train', 'test')
MAX_SIDE = 512
# Bump when photos, sizes or looks change: a new version builds a new folder.
BUILD_VERSION = 1
_COMPLETE = 'COMPLETE'


def split_of(photo: str) -> str:
  return 'test' if photo in TEST_PHOTOS else 'train'


def photo_files() -> dict[str, pathlib.Path]:
  """The photos of `PHOTOS` that are installed here (find_spec does not import the packages)."""
  found = {}
  for name, (package, relative) in PHOTOS.items():
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      continue
    path = pathlib.Path(next(iter(spec.submodule_search_locations)), relative)
    if path.is_file():
      found[name] = path
  return found


def _shrink(image: np.ndarray) -> np.ndarray:
  height, width = image.shape[:2]
  scale = MAX_SIDE / max(height, width)
  pixels = Image.fromarray(to_uint8(image))
  if scale < 1:
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = pixels.resize(size, Image.Resampling.LANCZOS)
  return np.asarray(pixels)


def folder(look: str) -> pathlib.Path:
  return paths.cache_dir('data', 'builtin', f'v{BUILD_VERSION}') / look


def build_folder(look: str = looks.DEFAULT_LOOK) -> pathlib.Path:
  """Writes the paired folder of `look` once (atomically, one process at a time); its path."""
  if look not in looks.LOOKS:
    raise DataError(f'config.data.look={look!r} is not one of {sorted(looks.LOOKS)}.')
  root = folder(look)
  if (root / _COMPLETE).exists():
    return root
  with paired_folders.file_lock(str(root.parent / f'.{look}.lock')):
    if (root / _COMPLETE).exists():
      return root
    photos = photo_files()
    missing = [s for s in SPLITS if not any(split_of(p) == s for p in photos)]
    if missing:
      raise DataError(
        f'The built-in dataset has no {" or ".join(missing)} photos here: it needs '
        'scikit-image, scikit-learn or matplotlib installed (see requirements.txt).'
      )
    staging = root.parent / f'.{look}.staging-{os.getpid()}'
    shutil.rmtree(staging, ignore_errors=True)
    for name, path in sorted(photos.items()):
      stored = _shrink(load_image(path))
      target = looks.apply_look(look, stored.astype(np.float32) / 255.0)
      for side, pixels in (('input', stored), ('target', to_uint8(target))):
        out = staging / split_of(name) / side / f'{name}.png'
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out)
    sources = {name: str(path) for name, path in photos.items()}
    (staging / 'photos.json').write_text(json.dumps(sources, indent=2, sort_keys=True))
    (staging / _COMPLETE).write_text(f'look={look} version={BUILD_VERSION}\n')
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
  return root


def prepare(look: str, data_dir: str) -> paired_folders.PreparedFolders:
  """The built-in dataset of `look`, built and prepared into `data_dir` if needed."""
  return paired_folders.prepare(str(build_folder(look)), data_dir, 'error')


def summary(prepared: paired_folders.PreparedFolders, look: str, data_dir: str) -> dict[str, Any]:
  records = prepared.records
  return {
    'name': 'builtin',
    'look': look,
    'look_doc': (looks.LOOKS[look].__doc__ or '').strip(),
    'splits': {split: len(records.get(split, [])) for split in SPLITS},
    'photos': {split: [row[0] for row in records.get(split, [])] for split in SPLITS},
    'sizes': {row[0]: f'{row[2]}x{row[1]}' for rows in records.values() for row in rows},
    'folder': prepared.root,
    'tfds_data_dir': data_dir,
  }


def format_summary(info: dict[str, Any]) -> str:
  lines = [
    f'Built-in dataset, look {info["look"]!r}: {info["look_doc"]}',
    f'  folder: {info["folder"]}',
  ]
  for split in SPLITS:
    photos = ', '.join(f'{p} ({info["sizes"][p]})' for p in info['photos'][split])
    lines.append(f'  {split}: {info["splits"][split]} photos: {photos}')
  return '\n'.join(lines)
