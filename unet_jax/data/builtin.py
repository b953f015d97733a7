"""The built-in default dataset: photos shipped inside installed packages, graded by a look.

Built offline the first time it is asked for, into `cache_dir('data')`:

- Photos: the colour photographs that scikit-image, scikit-learn and matplotlib install (the
  table `PHOTOS`), EXIF applied, shrunk so the longer side is at most 512 px (Lanczos), 8-bit.
- Crops larger than some photos (`configs/res512.py`, `res1024.py`): a second build, in a folder
  of its own, enlarges each photo whose shorter side is below the crop size to that size
  (Lanczos) before its target is made, so input and target stay one exact pair and every crop
  is real photo content (padding would show mirrored or empty borders the model then learns).
  The enlarged photos are softer than a camera's: fine for checking a large-crop setup, not a
  benchmark of detail at that size.
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

import ml_collections
import numpy as np
from PIL import Image

from unet_jax import paths
from unet_jax.data import looks, paired_folders
from unet_jax.data.errors import DataError
from unet_jax.data.images import image_size, load_image, to_uint8

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


def stored_size(height: int, width: int, min_side: int | None = None) -> tuple[int, int]:
  """(height, width) of a photo once built: longer side at most MAX_SIDE, then, with
  `min_side`, the shorter side at least `min_side`."""
  scale = min(1.0, MAX_SIDE / max(height, width))
  if min_side is not None and min(height, width) * scale < min_side:
    scale = min_side / min(height, width)
  if scale == 1.0:
    return height, width
  return max(1, round(height * scale)), max(1, round(width * scale))


def _resize(image: np.ndarray, min_side: int | None) -> np.ndarray:
  height, width = stored_size(*image.shape[:2], min_side)
  pixels = Image.fromarray(to_uint8(image))
  if (height, width) != image.shape[:2]:
    pixels = pixels.resize((width, height), Image.Resampling.LANCZOS)
  return np.asarray(pixels)


def min_side(data: ml_collections.ConfigDict) -> int | None:
  """The shorter side the photos need for `data.crop_size` crops: None when the default build
  has it already (or `data.sampling='resize'` resizes whole photos), else the crop size."""
  if data.sampling == 'resize':
    return None
  for path in photo_files().values():
    height, width = image_size(path.read_bytes(), str(path))
    if min(stored_size(height, width)) < data.crop_size:
      return int(data.crop_size)
  return None


def folder(look: str, min_side: int | None = None) -> pathlib.Path:
  name = look if min_side is None else f'{look}-min{min_side}px'
  return paths.cache_dir('data', 'builtin', f'v{BUILD_VERSION}') / name


def build_folder(look: str = looks.DEFAULT_LOOK, min_side: int | None = None) -> pathlib.Path:
  """Writes the paired folder of `look` once (atomically, one process at a time); its path.

  `min_side`: photos with a shorter side below it are enlarged to it (see the module docstring).
  """
  if look not in looks.LOOKS:
    raise DataError(f'config.data.look={look!r} is not one of {sorted(looks.LOOKS)}.')
  root = folder(look, min_side)
  if (root / _COMPLETE).exists():
    return root
  with paired_folders.file_lock(str(root.parent / f'.{root.name}.lock')):
    if (root / _COMPLETE).exists():
      return root
    photos = photo_files()
    missing = [s for s in SPLITS if not any(split_of(p) == s for p in photos)]
    if missing:
      raise DataError(
        f'The built-in dataset has no {" or ".join(missing)} photos here: it needs '
        'scikit-image, scikit-learn or matplotlib installed (see requirements.txt).'
      )
    staging = root.parent / f'.{root.name}.staging-{os.getpid()}'
    shutil.rmtree(staging, ignore_errors=True)
    for name, path in sorted(photos.items()):
      stored = _resize(load_image(path), min_side)
      target = looks.apply_look(look, stored.astype(np.float32) / 255.0)
      for side, pixels in (('input', stored), ('target', to_uint8(target))):
        out = staging / split_of(name) / side / f'{name}.png'
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out)
    sources = {name: str(path) for name, path in photos.items()}
    (staging / 'photos.json').write_text(json.dumps(sources, indent=2, sort_keys=True))
    (staging / _COMPLETE).write_text(f'look={look} version={BUILD_VERSION} min_side={min_side}\n')
    shutil.rmtree(root, ignore_errors=True)
    os.replace(staging, root)
  return root


def prepare(
  look: str, data_dir: str, min_side: int | None = None
) -> paired_folders.PreparedFolders:
  """The built-in dataset of `look`, built and prepared into `data_dir` if needed."""
  return paired_folders.prepare(str(build_folder(look, min_side)), data_dir, 'error')


def summary(
  prepared: paired_folders.PreparedFolders, look: str, data_dir: str, min_side: int | None = None
) -> dict[str, Any]:
  records = prepared.records
  return {
    'name': 'builtin',
    'look': look,
    'min_side': min_side,
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
  if info.get('min_side'):
    lines.append(
      f'  photos with a shorter side below {info["min_side"]} px (the crop size) are enlarged '
      'to it (Lanczos) before their targets are made: exact pairs, softer detail.'
    )
  for split in SPLITS:
    photos = ', '.join(f'{p} ({info["sizes"][p]})' for p in info['photos'][split])
    lines.append(f'  {split}: {info["splits"][split]} photos: {photos}')
  return '\n'.join(lines)
