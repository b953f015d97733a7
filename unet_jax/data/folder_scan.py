"""Lists a folder of (input, target) pairs and checks each pair; no tfds here.

Two layouts, pairs matched by file stem (`a.jpg` goes with `a.tif`), extensions jpg, jpeg, png,
tif, tiff, webp, heic, heif, avif in any case; hidden files and other extensions are ignored
(and counted):

  ROOT/train/input/*  ROOT/train/target/*  ROOT/val/...  ROOT/test/...   one folder per split
  ROOT/input/*  ROOT/target/*  ROOT/splits/train.txt  ROOT/splits/test.txt   flat, split by lists

A list file `ROOT/splits/<split>.txt` holds one stem (or file name) per line, `#` starts a
comment; with the flat layout it defines the split (e.g. FiveK's 4500/500 protocol), next to a
split folder it restricts that folder to the listed stems. A stem may appear in one list only.

`scan_folder` does the cheap checks (a partner for every file, no empty file, one file per
stem) and fingerprints the listing; `check_pair` decodes a pair and compares the sizes.
"""

import dataclasses
import hashlib
import json
import os
import re

from unet_jax.data.errors import DataError
from unet_jax.data.images import DEFAULT_WORKING_SPACE, is_image_file, read_bytes, verify_image

# Bump when what is stored per pair changes: a new fingerprint prepares the folders afresh.
FORMAT_VERSION = 2
SPLIT_NAME = re.compile(r'^[A-Za-z0-9_]+$')
LISTS_DIR = 'splits'
_SIDES = ('input', 'target')
_MAX_LISTED = 20


@dataclasses.dataclass(frozen=True)
class Pair:
  name: str
  input: str
  target: str


@dataclasses.dataclass
class FolderScan:
  """The listing of a pairs folder: good-looking pairs per split, and what is already wrong."""

  root: str
  splits: dict[str, list[Pair]]
  problems: list[dict[str, str]]  # {'split', 'name', 'message'}; messages name the files
  ignored_files: int
  fingerprint: str


def report(problems: list[dict[str, str]], header: str) -> str:
  """A readable list of problems, capped so a broken export does not flood the terminal."""
  lines = [header] + [f'  - {p["message"]}' for p in problems[:_MAX_LISTED]]
  if len(problems) > _MAX_LISTED:
    lines.append(f'  ... and {len(problems) - _MAX_LISTED} more.')
  return '\n'.join(lines)


def _read_list(path: str) -> list[str]:
  stems = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      entry = line.split('#', 1)[0].strip()
      if not entry:
        continue
      base = os.path.basename(entry)
      stems.append(os.path.splitext(base)[0] if is_image_file(base) else base)
  return list(dict.fromkeys(stems))


def _index(folder: str) -> tuple[dict[str, list[str]], int]:
  files: dict[str, list[str]] = {}
  ignored = 0
  with os.scandir(folder) as entries:
    for entry in entries:
      if not entry.is_file():
        continue
      if not is_image_file(entry.name):
        ignored += 1
        continue
      files.setdefault(os.path.splitext(entry.name)[0], []).append(entry.path)
  return {stem: sorted(paths) for stem, paths in files.items()}, ignored


def _find_splits(root: str) -> tuple[dict[str, str], dict[str, str]]:
  """(split -> folder holding input/ and target/, split -> list file)."""
  folders, lists = {}, {}
  with os.scandir(root) as entries:
    for entry in entries:
      is_split = (
        entry.is_dir()
        and entry.name not in (*_SIDES, LISTS_DIR)
        and SPLIT_NAME.match(entry.name)
        and any(os.path.isdir(os.path.join(entry.path, side)) for side in _SIDES)
      )
      if is_split:
        folders[entry.name] = entry.path
  lists_dir = os.path.join(root, LISTS_DIR)
  if os.path.isdir(lists_dir):
    for name in os.listdir(lists_dir):
      split = name.removesuffix('.txt')
      if name.endswith('.txt') and SPLIT_NAME.match(split):
        lists[split] = os.path.join(lists_dir, name)
  return folders, lists


def scan_folder(root: str) -> FolderScan:
  """Lists `root` and checks what needs no decoding: partners, empty files, duplicates."""
  root = os.path.abspath(os.fspath(root))
  if not os.path.isdir(root):
    raise DataError(f'config.data.dir={root!r} is not a folder.')
  folders, lists = _find_splits(root)
  if not folders and not lists:
    raise DataError(
      f'No splits found in {root}: expected {root}/train/input/ and {root}/train/target/ '
      f'(one folder per split), or {root}/input/, {root}/target/ and a list of stems per split '
      f'such as {root}/{LISTS_DIR}/train.txt.'
    )
  _check_lists_disjoint(lists)
  splits, problems, ignored, stats = {}, [], 0, []
  for split in sorted(set(folders) | set(lists)):
    folder = folders.get(split, root)
    dirs = {side: os.path.join(folder, side) for side in _SIDES}
    for path in dirs.values():
      if not os.path.isdir(path):
        raise DataError(f'Split {split!r}: the folder {path} is missing.')
    (inputs, ignored_in), (targets, ignored_tg) = _index(dirs['input']), _index(dirs['target'])
    ignored += ignored_in + ignored_tg
    listed = _read_list(lists[split]) if split in lists else sorted(set(inputs) | set(targets))
    pairs = []
    for stem in sorted(listed):
      readable = _readable(stem)
      if readable != stem:
        problems.append(
          {
            'split': split,
            'name': readable,
            'message': f'{os.path.join(folder, "*", readable)}.*: the file name is not valid '
            'UTF-8 (shown with \ufffd), so it cannot be stored in the dataset; rename it.',
          }
        )
        continue
      pair, problem = _match(stem, inputs.get(stem, []), targets.get(stem, []), dirs)
      if problem is not None and split in lists and not inputs.get(stem) and not targets.get(stem):
        problem = f'{lists[split]} lists {stem!r} but no file in {folder} has that stem.'
      if problem is None:
        pairs.append(pair)
        stats.append((split, stem, _stat(pair.input, root), _stat(pair.target, root)))
      else:
        problems.append({'split': split, 'name': stem, 'message': problem})
    splits[split] = pairs
  blob = json.dumps([FORMAT_VERSION, root, stats, problems], sort_keys=True)
  fingerprint = hashlib.sha256(blob.encode('utf-8')).hexdigest()[:12]
  return FolderScan(root, splits, problems, ignored, fingerprint)


def _readable(name: str) -> str:
  """`name` as valid text: bytes that are not UTF-8 (held as surrogates by os.listdir) become
  U+FFFD; a valid name comes back unchanged."""
  return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')


def _check_lists_disjoint(lists: dict[str, str]) -> None:
  seen: dict[str, str] = {}
  for path in sorted(lists.values()):
    for stem in _read_list(path):
      if stem in seen:
        raise DataError(
          f'{stem!r} is listed in both {seen[stem]} and {path}: a photo must be in one split only.'
        )
      seen[stem] = path


def _stat(path: str, root: str) -> tuple[str, int, int]:
  info = os.stat(path)
  return os.path.relpath(path, root), info.st_size, info.st_mtime_ns


def _match(
  stem: str, inputs: list[str], targets: list[str], dirs: dict[str, str]
) -> tuple[Pair | None, str | None]:
  for side, paths in (('input', inputs), ('target', targets)):
    if len(paths) > 1:
      return None, f'{paths[0]} and {paths[1]} are two {side}s with the stem {stem!r}; keep one.'
  if not targets:
    path = inputs[0] if inputs else os.path.join(dirs['input'], stem)
    return None, f'{path}: input without a target (no {stem}.* in {dirs["target"]}).'
  if not inputs:
    return None, f'{targets[0]}: target without an input (no {stem}.* in {dirs["input"]}).'
  for path in (inputs[0], targets[0]):
    if os.path.getsize(path) == 0:
      return None, f'{path}: empty file (0 bytes).'
  return Pair(stem, inputs[0], targets[0]), None


@dataclasses.dataclass(frozen=True)
class CheckedPair:
  """A pair that decodes: its bytes, size, and what its colours were (for the summary)."""

  input_bytes: bytes
  target_bytes: bytes
  height: int
  width: int
  colour: list  # [input profile, target profile, input clipped pixels, target clipped pixels]


def check_pair(
  pair: Pair, working_space: str = DEFAULT_WORKING_SPACE, max_pixels: int | None = None
) -> CheckedPair:
  """Reads and decodes both files into `working_space`; a CheckedPair or DataError (also for
  a file whose header claims more than `max_pixels`, checked before decoding)."""
  input_bytes, target_bytes = read_bytes(pair.input), read_bytes(pair.target)
  input_size, input_photo = verify_image(input_bytes, pair.input, working_space, max_pixels)
  target_size, target_photo = verify_image(target_bytes, pair.target, working_space, max_pixels)
  if input_size != target_size:
    (ih, iw), (th, tw) = input_size, target_size
    raise DataError(
      f'{pair.input} is {iw}x{ih} but {pair.target} is {tw}x{th} (after EXIF orientation): '
      'a pair must have the same size.'
    )
  colour = [
    input_photo.profile_name if input_photo.profile else None,
    target_photo.profile_name if target_photo.profile else None,
    input_photo.clipped_pixels,
    target_photo.clipped_pixels,
  ]
  return CheckedPair(input_bytes, target_bytes, *input_size, colour)
