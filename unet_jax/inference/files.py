"""Predict on files: which photos an input names, where each graded photo goes, safely.

`predict_paths` grades each photo and writes it like the one it came from (`photo_writer.py`):
- Inputs are never overwritten: an output folder that is the input folder (or resolves to it)
  is refused before any work, and no output ever replaces an existing file.
- Names are planned from the inputs alone: `photo.jpg` -> `photo.jpg` (or `.png` / `.tif` as
  `config.predict.output_format` says); two inputs that would share a name get `-1`, `-2`...
  in sorted order. An existing file of the planned name is kept and the output gets the next
  free `-k` name, unless `skip_existing`, when that input counts as done and is skipped: an
  interrupted folder is finished without duplicates.
- Each file is written under a hidden temporary name, linked to its real name when complete;
  with `skip_existing` each input is claimed first, so two runs share a folder (`output_files.py`).
- `recursive` grades sub-folders too and mirrors them in the output folder (which may sit
  inside the input folder: it is never read as input).
- A photo that cannot be read, graded or written gets a `failed` entry and the next is graded;
  a full disk (or a folder become read-only) stops the run naming the path, no partial file.
- A progress bar over photos, with ETA, and a JSON summary in the output folder, rewritten
  after every photo (`predict_summary.py`).
"""

import contextlib
import errno
import io
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np
import tqdm
from PIL import Image

from unet_jax import data
from unet_jax.data.images import is_image_file
from unet_jax.inference import grading, photo_writer, preview, tiling
from unet_jax.inference.output_files import claim_output, remove_stale_partials, write_new_file
from unet_jax.inference.predict_summary import summary_path, write_summary

# A disk that cannot take more: every later photo would fail the same way, so the run stops.
_STOPPING_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_WRITTEN_EXTENSIONS = ('', '.jpg', '.png', '.tif', '.webp')  # '': the input's own


def _same_path(a: str, b: str) -> bool:
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def _why_not_a_photo(path: str) -> str | None:
  """Why a photo-named entry cannot be read as a file (None: it can)."""
  if os.path.islink(path) and not os.path.exists(path):
    return 'a link to nothing (dangling)'
  if not os.path.isfile(path):
    return 'not a regular file (a FIFO, socket, device or folder)'
  return None


def list_inputs(
  input_path: str,
  *,
  recursive: bool = False,
  exclude: str | None = None,
  skipped: list[dict[str, str]] | None = None,
) -> list[str]:
  """The photos `input_path` names: the file itself, or the folder's images (sorted; with
  `recursive`, those of its sub-folders too, hidden folders and `exclude` left out).

  Entries named like photos that are not regular files (FIFOs, dangling links) and, with
  `recursive`, links to sub-folders (not followed: they could loop or leave the input folder)
  are left out and appended to `skipped` as `{'input', 'reason'}`.
  """
  if not os.path.exists(input_path):
    raise FileNotFoundError(f'--input {input_path}: no such file or folder.')
  if not os.path.isdir(input_path):
    return [input_path]
  paths, left_out = [], []
  for folder, dirs, files in os.walk(input_path):
    kept = []
    for d in sorted(dirs):
      path = os.path.join(folder, d)
      if not recursive or d.startswith('.') or (exclude and _same_path(path, exclude)):
        continue
      if os.path.islink(path):
        left_out.append({'input': path, 'reason': 'a link to a folder (links are not followed)'})
        continue
      kept.append(d)
    dirs[:] = kept
    for name in sorted(files):
      if not is_image_file(name):
        continue
      path = os.path.join(folder, name)
      reason = _why_not_a_photo(path)
      if reason is None:
        paths.append(path)
      else:
        left_out.append({'input': path, 'reason': reason})
  if skipped is not None:
    skipped.extend(left_out)
  if not paths:
    where = 'this folder or its sub-folders' if recursive else 'this folder'
    raise ValueError(
      f'--input {input_path}: no images in {where} (jpg, jpeg, png, tif, tiff, webp, heic).'
    )
  return paths


def input_root(input_path: str) -> str:
  return input_path if os.path.isdir(input_path) else os.path.dirname(input_path) or '.'


def check_paths(input_path: str, output_dir: str, *, recursive: bool = False) -> list[str]:
  """Refuses, before any work, an output folder that could overwrite an input; returns inputs.

  Raises ValueError when `output_dir` is (or resolves to) the input folder, or the folder of a
  single input file, or is not a folder, or when a name we could write there is an input (a
  link).
  """
  root = input_root(input_path)
  if _same_path(output_dir, root):
    raise ValueError(
      f'--output {output_dir} is the input folder {root}: graded photos must go to another '
      'folder so that no input can be overwritten.'
    )
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'--output {output_dir} exists and is not a folder.')
  _check_writable(output_dir)
  inputs = list_inputs(input_path, recursive=recursive, exclude=output_dir)
  if os.path.isdir(output_dir):
    for ext in _WRITTEN_EXTENSIONS:
      plan_outputs(inputs, root, output_dir, lambda p, ext=ext: ext or os.path.splitext(p)[1])
  return inputs


def _check_writable(output_dir: str) -> None:
  """ValueError (exit status 2) when no file could be made in `output_dir`: the folder, or
  the nearest existing folder above it (where it would be made), is not writable."""
  folder = os.path.abspath(output_dir)
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise ValueError(f'--output {output_dir}: {folder} is not a folder.')
  if not os.access(folder, os.W_OK | os.X_OK):
    where = (
      'is' if folder == os.path.abspath(output_dir) else f'would be made in {folder}, which is'
    )
    raise ValueError(f'--output {output_dir} {where} not writable (read-only or permissions).')


def plan_outputs(
  inputs: list[str], root: str, output_dir: str, extension: Callable[[str], str]
) -> list[str]:
  """The output path of each input: mirrored sub-folder, stem + `extension(input)`, `-k` for
  inputs that would share a name. Raises ValueError if an output would be an input (a link)."""
  taken: set[str] = set()
  planned = []
  for path in inputs:
    relative = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(root))
    stem = os.path.splitext(os.path.basename(path))[0]
    ext = extension(path)
    folder = os.path.normpath(os.path.join(output_dir, relative))
    candidate = os.path.join(folder, stem + ext)
    suffix = 0
    while candidate in taken:
      suffix += 1
      candidate = os.path.join(folder, f'{stem}-{suffix}{ext}')
    taken.add(candidate)
    if os.path.exists(candidate) and any(_same_path(candidate, p) for p in inputs):
      raise ValueError(f'--output {output_dir}: writing {candidate} would overwrite an input.')
    planned.append(candidate)
  return planned


def run_batch(
  inputs: list[str],
  outputs: list[str],
  output_dir: str,
  grade: Callable[[str], tuple[bytes, dict[str, Any]]],
  *,
  skip_existing: bool = False,
  header: dict[str, Any] | None = None,
  not_read: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
  """Grades `inputs` into the planned `outputs` with `grade(path) -> (file bytes, details)`.

  `grade` raises ValueError or OSError for a file it cannot read; that file is reported and
  the others are still written. Returns (and writes as JSON) the summary:
  `{'output_dir', ..., 'written': [{'input', 'output', 'seconds', **details}],
  'skipped': [{'input', 'output'}], 'failed': [{'input', 'reason'}], 'complete'}`.
  """
  os.makedirs(output_dir, exist_ok=True)
  remove_stale_partials(output_dir)
  where = summary_path(output_dir)
  summary = {
    'output_dir': output_dir,
    **(header or {}),
    'written': [],
    'skipped': list(not_read or []),  # entries that are not photos: {'input', 'reason'}
    'failed': [],
    'complete': False,
  }
  jobs = list(zip(inputs, outputs, strict=True))
  for path, planned in tqdm.tqdm(jobs, unit='photo', desc='Grading', dynamic_ncols=True):
    if skip_existing and os.path.exists(planned):
      summary['skipped'].append({'input': path, 'output': planned})
      continue
    claim = claim_output(planned) if skip_existing else None
    if skip_existing and claim is None:
      summary['skipped'].append({'input': path, 'output': planned, 'reason': 'another run'})
      continue
    try:
      _grade_one(path, planned, grade, summary, numbered=not skip_existing)
    finally:
      if claim is not None:
        with contextlib.suppress(FileNotFoundError):
          os.remove(claim)
    write_summary(output_dir, summary, where)
  summary['complete'] = True
  write_summary(output_dir, summary, where)
  return summary


def _grade_one(path, planned, grade, summary, *, numbered: bool) -> None:
  start = time.perf_counter()
  try:
    data, details = grade(path)
  except OSError as error:
    if error.errno in _STOPPING_ERRNOS:
      raise
    logging.warning('Skipping %s: %s', path, error)
    summary['failed'].append({'input': path, 'reason': str(error)})
    return
  except Exception as error:  # noqa: BLE001 - one photo never stops the folder
    if not isinstance(error, ValueError):
      logging.exception('Grading %s failed:', path)
    reason = str(error) if isinstance(error, ValueError) else f'{type(error).__name__}: {error}'
    logging.warning('Skipping %s: %s', path, reason)
    summary['failed'].append({'input': path, 'reason': reason})
    return
  output = write_new_file(planned, data, numbered=numbered)
  seconds = time.perf_counter() - start
  if output is None:  # another run wrote it meanwhile (skip_existing)
    summary['skipped'].append({'input': path, 'output': planned})
    return
  logging.info('%s -> %s (%.1f s)', path, output, seconds)
  summary['written'].append(
    {'input': path, 'output': output, 'seconds': round(seconds, 3), **details}
  )


def _label_png(labels: np.ndarray, num_classes: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(labels.astype(np.uint8 if num_classes <= 256 else np.uint16)).save(buffer, 'PNG')
  return buffer.getvalue()


def predict_paths(
  config: ml_collections.ConfigDict,
  model: nn.Module,
  variables: Any,
  input_path: str,
  output_dir: str,
  *,
  skip_existing: bool = False,
  recursive: bool = False,
  overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Grades a photo, or every photo of a folder, into `output_dir`.

  `overrides`: the command line's `config.predict.*` values (in `config`), for the summary.

  - Each photo is read into the run's working space (`config.data.working_space`), graded,
    and written like it came (`photo_writer.py`): same container, bit depth and ICC profile,
    EXIF with orientation 1, unless `config.predict.output_*` say otherwise. A segmentation
    model writes 8-bit class labels as PNG (16-bit above 256 classes).
  - File rules (never overwrite, planned names, `skip_existing`, `recursive`, temporary names,
    the JSON summary, a file that cannot be read): see the module doc.

  Returns the summary: `{'output_dir', 'written': [{'input', 'output', 'height', 'width',
  'seconds', ...}], 'skipped': [...], 'failed': [{'input', 'reason'}], ...}`.
  """
  inputs = check_paths(input_path, output_dir, recursive=recursive)
  not_photos: list[dict[str, str]] = []
  list_inputs(input_path, recursive=recursive, exclude=output_dir, skipped=not_photos)
  for entry in not_photos:
    logging.warning('Skipping %s: %s.', entry['input'], entry['reason'])
  tile_settings = grading.tile_settings(config)
  # Bad settings are refused before any output folder is made.
  tiling.check_tiling(model.levels, config.predict.tile_size, config.predict.tile_overlap)
  options = config.predict
  photo_writer.check_output_options(options)
  space = config.data.working_space
  segment = model.head == 'segmentation'
  root = input_root(input_path)
  if segment:
    extension = lambda _: '.png'
  else:
    extension = lambda p: photo_writer.planned_extension(p, options)
  outputs = plan_outputs(inputs, root, output_dir, extension)

  def grade(path: str) -> tuple[bytes, dict[str, Any]]:
    photo = data.load_photo(path, space, config.data.get('max_pixels'))
    height, width = photo.pixels.shape[:2]
    if segment:
      labels = grading.segment_image(model, variables, photo.pixels, **tile_settings)
      return _label_png(labels, model.num_classes), {'height': height, 'width': width}
    if options.get('lut_only', False):
      graded = preview.grade_lut_only(model, variables, photo.pixels)
    else:
      graded = grading.grade_image(model, variables, photo.pixels, **tile_settings)
    if not np.all(np.isfinite(graded)):
      # Finite but huge weights (a diverged run) can still give NaN or Inf pixels: no file.
      raise ValueError(
        f'{path}: the model graded it to NaN or Inf pixels (its weights have diverged); '
        'nothing was written for it.'
      )
    spec = photo_writer.output_spec(photo, path, options)
    encoded, clipped = photo_writer.encode_photo(graded, photo, spec, options.jpeg_quality)
    return encoded, {
      'height': height,
      'width': width,
      'format': spec.container,
      'bits': spec.bits,
      'profile': spec.profile_name,
      **({'profile_note': spec.note} if spec.note else {}),
      'exif': photo.exif is not None,
      'clipped_pixels': photo.clipped_pixels + clipped,
    }

  header = {
    'input': input_path,
    'working_space': space,
    'options': {k: options[k] for k in ('output_format', 'output_bits', 'output_profile')},
    'overrides': {f'config.{k}': v for k, v in (overrides or {}).items()},
  }
  return run_batch(
    inputs,
    outputs,
    output_dir,
    grade,
    skip_existing=skip_existing,
    header=header,
    not_read=not_photos,
  )
