"""Paired datasets graded by real editing software on real photographs (issue 31's benchmark).

Every built-in look was written here; a photographer's pairs come from editors. This script
grades photos from Debian's wallpaper packages with ImageMagick, G'MIC and OpenCV's `xphoto`
(nobody here wrote them) and writes one paired-folder dataset per look:

  runs/editor_looks/<look>/train/{input,target}/<stem>.png     128 pairs from 16 photos
  runs/editor_looks/<look>/test/{input,target}/<stem>.png      6 held-out photos, whole
  runs/editor_looks/<look>/manifest.json                       command line, tool versions, pairs

Inputs: each photo decoded, converted to sRGB, downscaled (Lanczos) to a long side of at most
1024 px (0.6-0.8 megapixels) and saved as 8-bit PNG. A training photo gives its whole frame plus
7 sub-frames (random crops of the original covering 50-85 % of each side, then downscaled the same
way): each sub-frame is edited as a photo of its own, as a photographer who crops before editing
would, so an image-adaptive look sets itself afresh from that frame's histogram. Targets: the
editor's command run on the input file itself, so every pair is exact. Photos, sub-frames and
split are fixed (`PHOTOS`, `SEED`): a rebuild gives the same pairs.

Looks (`LOOKS`), two per family:
- image-adaptive global (settings chosen per photo): ImageMagick's `-auto-level -auto-gamma`;
  OpenCV xphoto's grey-world white balance;
- large-radius local: ImageMagick's `-local-contrast` over a 48 px radius (5 % of the long
  side); G'MIC's `normalize_local` over a 40 px neighbourhood;
- full presets: ImageMagick auto-level + sigmoidal contrast + saturation + local contrast;
  G'MIC colour mix + contrast + local normalisation over 64 px + vignette. (G'MIC's Poisson
  tone mapping, `map_tones`, costs 2.7 s of CPU per photo: too slow for the shared machine.)

Tools missing -> `Error:` naming the package to install, exit status 2, before any work. The
photos are in the Debian packages plasma-workspace-wallpapers and lomiri-wallpapers (the
photographs among them; gnome-backgrounds and ukui-wallpapers hold drawings only): `apt-get
install gmic imagemagick plasma-workspace-wallpapers lomiri-wallpapers`; `pip install
opencv-contrib-python-headless`. The editors take 0.3 to 1.5 s of CPU per pair (804 pairs in
all); on the shared 2-core machine, loaded 25 deep, one look took 1 to 19 minutes. A look whose
manifest exists is kept (`--force` rebuilds it).

  python -m experiments.editor_looks [--looks=im_auto_level,...] [--out_dir=runs/editor_looks]
"""

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image, ImageCms

from unet_jax.paths import sha256_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(ROOT, 'runs', 'editor_looks')
SEED = 31
LONG_SIDE = 1024
SUB_FRAMES = 7  # per training photo, beside its whole frame: 16 x 8 = 128 training pairs
SUB_FRAME_SIDE = (0.5, 0.85)  # each side of a sub-frame, as a fraction of the photo's
# Where the photos of the wallpaper packages lie.
_LOMIRI = '/usr/share/backgrounds'
_KDE = '/usr/share/wallpapers/{}/contents/images/2560x1600.jpg'
# The Debian packages (lomiri-wallpapers depends on both).
_L16 = 'lomiri-wallpapers-16.04'
_L20 = 'lomiri-wallpapers-20.04'


@dataclasses.dataclass(frozen=True)
class Photo:
  stem: str
  path: str
  package: str
  split: str  # 'train' or 'test'


# Chosen by eye from every wallpaper of the four packages: photographs only (no drawings,
# renders, gradients; no black-and-white photo, whose colour a look barely changes).
# gnome-backgrounds (bookworm) holds drawings only. Held-out: six photos of other subjects and
# light (sunset over water, forest, red fruit, dogs indoors, mountains, saturated cups).
PHOTOS = (
  Photo('bythewater', _KDE.format('BytheWater'), 'plasma-workspace-wallpapers', 'train'),
  Photo('darkesthour', _KDE.format('DarkestHour'), 'plasma-workspace-wallpapers', 'train'),
  Photo('fallenleaf', _KDE.format('FallenLeaf'), 'plasma-workspace-wallpapers', 'train'),
  Photo('kite', _KDE.format('Kite'), 'plasma-workspace-wallpapers', 'train'),
  Photo('onestandsout', _KDE.format('OneStandsOut'), 'plasma-workspace-wallpapers', 'train'),
  Photo('summer_1am', _KDE.format('summer_1am'), 'plasma-workspace-wallpapers', 'train'),
  Photo('bridge', f'{_LOMIRI}/Bridge_by_Sander_Klootwijk.jpg', _L16, 'train'),
  Photo('dragonfly', f'{_LOMIRI}/Dragonfly_by_Bolly.jpg', _L16, 'train'),
  Photo('kleiber', f'{_LOMIRI}/Kleiber_by_Lukas_Baubkus.jpg', _L20, 'train'),
  Photo('picture_1a', f'{_LOMIRI}/Picture_1A_by_freespace.jpg', _L16, 'train'),
  Photo('wine', f'{_LOMIRI}/Wine_by_Jakkub_Mede.jpg', _L16, 'train'),
  Photo('aitzgorri', f'{_LOMIRI}/aitzgorri_by_Aitzol_Berasategi.jpg', _L16, 'train'),
  Photo('life', f'{_LOMIRI}/life_by_Aitzol_Berasategi.jpg', _L16, 'train'),
  Photo('seeding', f'{_LOMIRI}/seeding_by_Clements_Engelhardt.jpg', _L16, 'train'),
  Photo('sunset', f'{_LOMIRI}/sunset_by_Aitzol_Berasategi.jpg', _L16, 'train'),
  Photo('free', f'{_LOMIRI}/free_by_Peter_Nerlich.jpg', _L16, 'train'),
  Photo('eveningglow', _KDE.format('EveningGlow'), 'plasma-workspace-wallpapers', 'test'),
  Photo('path', _KDE.format('Path'), 'plasma-workspace-wallpapers', 'test'),
  Photo('colorfulcups', _KDE.format('ColorfulCups'), 'plasma-workspace-wallpapers', 'test'),
  Photo('picture_0b', f'{_LOMIRI}/Picture_0B_by_freespace.jpg', _L16, 'test'),
  Photo('friends', f'{_LOMIRI}/friends_by_Aitzol_Berasategi.jpg', _L16, 'test'),
  Photo('picosdeeuropa', f'{_LOMIRI}/picosdeeuropa_by_Aitzol_Berasategi.jpg', _L16, 'test'),
)


@dataclasses.dataclass(frozen=True)
class Tool:
  """An editor: the executables that may run it (first found wins) and where it comes from."""

  name: str
  executables: tuple[str, ...]
  install: str  # what the error tells the user to run
  version_args: tuple[str, ...]


# `convert` itself is not looked for: on Debian it may be GraphicsMagick's, and some machines
# put a stand-in of that name first on the PATH. IM7 is `magick`, Debian's IM6 `convert-im6.q16`.
IMAGEMAGICK = Tool(
  'imagemagick', ('magick', 'convert-im6.q16'), 'apt-get install imagemagick', ('-version',)
)
GMIC = Tool('gmic', ('gmic',), 'apt-get install gmic', ('-version',))
# The OpenCV looks run a few lines of Python in a process of their own, like any editor.
PYTHON_OPENCV = Tool(
  'opencv-xphoto', (sys.executable,), 'pip install opencv-contrib-python-headless', ()
)

_GREYWORLD = (
  'import sys, cv2; image = cv2.imread(sys.argv[1], cv2.IMREAD_COLOR); '
  'cv2.imwrite(sys.argv[2], cv2.xphoto.createGrayworldWB().balanceWhite(image))'
)


@dataclasses.dataclass(frozen=True)
class Look:
  family: str  # 'adaptive global' | 'large-radius local' | 'preset'
  description: str
  tool: Tool
  # argv; '{tool}' is the tool's executable, '{input}' and '{output}' the pair's files.
  argv: tuple[str, ...]


LOOKS = {
  'im_auto_level': Look(
    'adaptive global',
    "ImageMagick's auto levels then auto gamma: black and white points and a gamma chosen from "
    "each photo's histogram",
    IMAGEMAGICK,
    ('{tool}', '{input}', '-auto-level', '-auto-gamma', 'PNG24:{output}'),
  ),
  'cv_grey_world': Look(
    'adaptive global',
    "OpenCV xphoto's grey-world white balance: per-channel gains chosen from each photo",
    PYTHON_OPENCV,
    ('{tool}', '-c', _GREYWORLD, '{input}', '{output}'),
  ),
  'im_local_contrast': Look(
    'large-radius local',
    "ImageMagick's local contrast, radius 48 px (about 5 % of the long side), strength 80 %",
    IMAGEMAGICK,
    ('{tool}', '{input}', '-local-contrast', '48x80', 'PNG24:{output}'),
  ),
  'gmic_normalize_local': Look(
    'large-radius local',
    "G'MIC's local normalisation: contrast stretched over a 40 px neighbourhood",
    GMIC,
    (
      '{tool}',
      '-v',
      '-1',
      '{input}',
      'normalize_local',
      '2,40,5%,20%,1,0,255',
      'cut',
      '0,255',
      'round',
      '-o',
      '{output}',
    ),
  ),
  'im_pop_preset': Look(
    'preset',
    'ImageMagick preset: auto levels, sigmoidal contrast, +25 % saturation, then local '
    'contrast over 64 px',
    IMAGEMAGICK,
    (
      '{tool}',
      '{input}',
      '-auto-level',
      '-sigmoidal-contrast',
      '3x45%',
      '-modulate',
      '100,125,100',
      '-local-contrast',
      '64x50',
      'PNG24:{output}',
    ),
  ),
  'gmic_film_preset': Look(
    'preset',
    "G'MIC preset: warm channel mix, contrast and desaturation, local normalisation over 64 px, "
    'dark vignette',
    GMIC,
    (
      '{tool}',
      '-v',
      '-1',
      '{input}',
      'mix_rgb',
      '1.06,0.04,0,0.02,1,0,0,0.06,0.88',
      'adjust_colors',
      '0,18,0,0,-20,0,255',
      'normalize_local',
      '1.2,64,5%,20%,1,0,255',
      'fx_vignette',
      '70,60,95,0,0,0,255',
      'remove_opacity',
      'cut',
      '0,255',
      'round',
      '-o',
      '{output}',
    ),
  ),
}


class EditorLooksError(Exception):
  """A problem the user fixes (a missing tool or photo, an editor that failed)."""


def find_tool(tool: Tool) -> str:
  """The executable of `tool`; raises naming the package to install when none is found."""
  for name in tool.executables:
    found = shutil.which(name)
    if found:
      if tool is PYTHON_OPENCV and not _has_xphoto(found):
        break
      return found
  raise EditorLooksError(
    f'{tool.name} not found (looked for {", ".join(tool.executables)}); install it with '
    f'`{tool.install}`.'
  )


def _has_xphoto(python: str) -> bool:
  probe = subprocess.run(
    [python, '-c', 'import cv2; cv2.xphoto.createGrayworldWB()'], capture_output=True
  )
  return probe.returncode == 0


def tool_version(tool: Tool, executable: str) -> str:
  if tool is PYTHON_OPENCV:
    args = [executable, '-c', 'import cv2; print("opencv", cv2.__version__)']
  else:
    args = [executable, *tool.version_args]
  done = subprocess.run(args, capture_output=True, text=True)
  text = re.sub(r'\x1b\[[0-9;]*m', '', done.stdout + done.stderr)
  lines = [line.strip() for line in text.splitlines() if 'ersion' in line or 'opencv' in line]
  return lines[0] if lines else text.strip().splitlines()[0]


def package_version(package: str) -> str | None:
  """The installed Debian package's version, or None (no dpkg, or not installed)."""
  if not shutil.which('dpkg-query'):
    return None
  done = subprocess.run(
    ['dpkg-query', '-W', '-f', '${Version}', package], capture_output=True, text=True
  )
  return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def sub_frames(stem: str, width: int, height: int, count: int) -> list[tuple[int, int, int, int]]:
  """`count` crop boxes (left, top, right, bottom) of a `width` x `height` photo, fixed by stem."""
  rng = np.random.default_rng([SEED, zlib.crc32(stem.encode())])
  boxes = []
  for _ in range(count):
    w = int(round(width * rng.uniform(*SUB_FRAME_SIDE)))
    h = int(round(height * rng.uniform(*SUB_FRAME_SIDE)))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    boxes.append((left, top, left + w, top + h))
  return boxes


def _srgb(image: Image.Image) -> Image.Image:
  """The photo as 8-bit sRGB (an embedded profile is honoured; untagged is read as sRGB)."""
  profile = image.info.get('icc_profile')
  if profile:
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    image = ImageCms.profileToProfile(
      image, source, ImageCms.createProfile('sRGB'), outputMode='RGB'
    )
  return image.convert('RGB')


def _downscaled(image: Image.Image, long_side: int) -> Image.Image:
  scale = long_side / max(image.size)
  if scale >= 1.0:
    return image
  size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
  return image.resize(size, Image.Resampling.LANCZOS)


def frames(photo: Photo, sub_frame_count: int) -> list[dict]:
  """Name and crop box of each pair a photo gives: its whole frame, then its sub-frames."""
  with Image.open(photo.path) as image:
    width, height = image.size
  listed = [{'name': photo.stem, 'box': [0, 0, width, height]}]
  if photo.split == 'train':
    for i, box in enumerate(sub_frames(photo.stem, width, height, sub_frame_count)):
      listed.append({'name': f'{photo.stem}_sub{i + 1}', 'box': list(box)})
  return listed


def write_inputs(
  photos: Sequence[Photo], inputs_dir: str, long_side: int, sub_frame_count: int
) -> list[dict]:
  """Writes every input PNG once into `inputs_dir/<split>/`; returns one record per pair."""
  records = []
  for photo in photos:
    if not os.path.exists(photo.path):
      raise EditorLooksError(f'Photo {photo.path} not found; install the {photo.package} package.')
    listed = frames(photo, sub_frame_count)
    folder = os.path.join(inputs_dir, photo.split)
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f'{f["name"]}.png') for f in listed]
    if not all(os.path.exists(p) for p in paths):
      with Image.open(photo.path) as opened:
        image = _srgb(opened)
      for frame, path in zip(listed, paths, strict=True):
        cropped = image.crop(tuple(frame['box']))
        _downscaled(cropped, long_side).save(path + '.tmp.png')
        os.replace(path + '.tmp.png', path)
    for frame, path in zip(listed, paths, strict=True):
      with Image.open(path) as written:
        size = list(written.size)
      records.append(
        {
          'name': frame['name'],
          'split': photo.split,
          'photo': photo.stem,
          'source': photo.path,
          'box': frame['box'],
          'size': size,
          'input': path,
        }
      )
  return records


def _link(source: str, destination: str) -> None:
  if os.path.exists(destination):
    os.remove(destination)
  try:
    os.link(source, destination)
  except OSError:
    shutil.copyfile(source, destination)


def build_look(
  name: str, look: Look, executable: str, records: list[dict], look_dir: str, versions: dict
) -> dict:
  """Grades every input of `records` with `look` into `look_dir`; returns its manifest."""
  started = time.perf_counter()
  pairs = []
  for record in records:
    split_dir = os.path.join(look_dir, record['split'])
    for side in ('input', 'target'):
      os.makedirs(os.path.join(split_dir, side), exist_ok=True)
    input_path = os.path.join(split_dir, 'input', f'{record["name"]}.png')
    target_path = os.path.join(split_dir, 'target', f'{record["name"]}.png')
    _link(record['input'], input_path)
    argv = [
      part.format(tool=executable, input=input_path, output=target_path) for part in look.argv
    ]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.exists(target_path):
      raise EditorLooksError(
        f'{name}: the editor failed on {input_path} (exit {done.returncode}): '
        f'{done.stderr.strip()[-500:]}'
      )
    with Image.open(target_path) as target:
      if list(target.size) != record['size'] or target.mode != 'RGB':
        raise EditorLooksError(
          f'{name}: {target_path} is {target.mode} {target.size}; expected RGB {record["size"]}.'
        )
    pairs.append({k: record[k] for k in ('name', 'split', 'photo', 'box', 'size')})
  manifest = {
    'look': name,
    'family': look.family,
    'description': look.description,
    'command': [part.replace('{tool}', os.path.basename(executable)) for part in look.argv],
    'tool': look.tool.name,
    'tool_version': versions[look.tool.name],
    'seconds': round(time.perf_counter() - started, 1),
    'pairs': pairs,
    'splits': {s: sum(p['split'] == s for p in pairs) for s in ('train', 'test')},
  }
  return manifest


def photo_table(photos: Sequence[Photo]) -> list[dict]:
  return [
    {
      'stem': p.stem,
      'split': p.split,
      'path': p.path,
      'package': p.package,
      'package_version': package_version(p.package),
      'sha256': sha256_file(p.path),
    }
    for p in photos
  ]


def build(
  looks: dict[str, Look],
  photos: Sequence[Photo],
  out_dir: str,
  *,
  long_side: int = LONG_SIDE,
  sub_frame_count: int = SUB_FRAMES,
  force: bool = False,
) -> dict[str, str]:
  """Builds each look's paired folder under `out_dir`; returns look -> manifest path.

  Every tool is found (and every photo checked) before any work, so a missing one stops the
  build at once with the package to install.
  """
  executables = {}
  for look in looks.values():
    if look.tool.name not in executables:
      executables[look.tool.name] = find_tool(look.tool)
  missing = [p.path for p in photos if not os.path.exists(p.path)]
  if missing:
    packages = sorted({p.package for p in photos if p.path in missing})
    raise EditorLooksError(
      f'{len(missing)} photo(s) missing, e.g. {missing[0]}; install {", ".join(packages)} '
      '(apt-get).'
    )
  split_of = {p.split for p in photos}
  if not {'train', 'test'} <= split_of:
    raise EditorLooksError('The photo list needs train and test photos.')
  versions = {
    t: tool_version(next(lk.tool for lk in looks.values() if lk.tool.name == t), e)
    for t, e in executables.items()
  }
  records = write_inputs(photos, os.path.join(out_dir, '_inputs'), long_side, sub_frame_count)
  table = photo_table(photos)
  written = {}
  for name, look in looks.items():
    look_dir = os.path.join(out_dir, name)
    manifest_path = os.path.join(look_dir, 'manifest.json')
    if os.path.exists(manifest_path) and not force:
      written[name] = manifest_path
      continue
    shutil.rmtree(look_dir, ignore_errors=True)
    manifest = build_look(name, look, executables[look.tool.name], records, look_dir, versions)
    manifest.update(
      {
        'seed': SEED,
        'long_side': long_side,
        'sub_frames_per_training_photo': sub_frame_count,
        'photos': table,
        'tool_package_versions': {
          'imagemagick': package_version('imagemagick'),
          'gmic': package_version('gmic'),
        },
      }
    )
    # Written last: a look without its manifest is unfinished and is built again.
    with open(manifest_path + '.tmp', 'w') as f:
      json.dump(manifest, f, indent=1)
    os.replace(manifest_path + '.tmp', manifest_path)
    print(f'{name}: {len(manifest["pairs"])} pairs in {manifest["seconds"]} s -> {look_dir}')
    written[name] = manifest_path
  return written


FLAGS = flags.FLAGS


def main(argv):
  del argv
  unknown = [name for name in FLAGS.looks if name not in LOOKS]
  if unknown:
    print(f'Error: --looks: unknown {unknown}; known: {list(LOOKS)}', file=sys.stderr)
    sys.exit(2)
  try:
    build({n: LOOKS[n] for n in FLAGS.looks}, PHOTOS, FLAGS.out_dir, force=FLAGS.force)
  except EditorLooksError as error:
    print(f'Error: {error}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  # Defined here, not on import: the module's functions serve tests and notebooks too.
  flags.DEFINE_list('looks', list(LOOKS), 'Looks to build.')
  flags.DEFINE_string('out_dir', DEFAULT_OUT_DIR, "Where the looks' paired folders go.")
  flags.DEFINE_bool('force', False, 'Rebuild looks that are already built.')
  app.run(main)
