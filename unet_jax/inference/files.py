"""Predict on files: which photos an input names, where each graded photo goes, safely.

`predict_paths` grades a file or a folder of photos into another folder; its docstring lists
the rules that protect inputs and earlier outputs.
"""

import logging
import os
import time
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np
from PIL import Image

from unet_jax import data
from unet_jax.data.images import is_image_file, to_uint8
from unet_jax.inference import grading, tiling


def _same_path(a: str, b: str) -> bool:
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def list_inputs(input_path: str) -> list[str]:
  """The photos `input_path` names: the file itself, or the folder's images (not recursive)."""
  if not os.path.exists(input_path):
    raise FileNotFoundError(f'--input {input_path}: no such file or folder.')
  if not os.path.isdir(input_path):
    return [input_path]
  names = sorted(n for n in os.listdir(input_path) if is_image_file(n))
  paths = [os.path.join(input_path, n) for n in names]
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise ValueError(
      f'--input {input_path}: no images in this folder (jpg, jpeg, png, tif, tiff, webp).'
    )
  return paths


def _output_name(input_path: str) -> str:
  return os.path.splitext(os.path.basename(input_path))[0] + '.png'


def check_paths(input_path: str, output_dir: str) -> list[str]:
  """Refuses, before any work, an output folder that could overwrite an input; returns inputs.

  Raises ValueError when `output_dir` is (or resolves to) the input folder, or the folder of a
  single input file, or is not a folder, or when an output name is an input file (a link).
  """
  inputs = list_inputs(input_path)
  input_dir = input_path if os.path.isdir(input_path) else os.path.dirname(input_path) or '.'
  if _same_path(output_dir, input_dir):
    raise ValueError(
      f'--output {output_dir} is the input folder {input_dir}: graded photos must go to another '
      'folder so that no input can be overwritten.'
    )
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f'--output {output_dir} exists and is not a folder.')
  if os.path.isdir(output_dir):
    for path in inputs:
      target = os.path.join(output_dir, _output_name(path))
      if os.path.exists(target) and any(_same_path(target, p) for p in inputs):
        raise ValueError(f'--output {output_dir}: writing {target} would overwrite an input.')
  return inputs


def _write_png(array: np.ndarray, output_dir: str, name: str) -> str:
  """Writes `name`, or `stem-1.png`, `stem-2.png`... if taken; never replaces an existing file
  (exclusive create, so not even a file that appears meanwhile or a link to an input)."""
  stem, ext = os.path.splitext(name)
  for attempt in range(10_000):
    path = os.path.join(output_dir, name if attempt == 0 else f'{stem}-{attempt}{ext}')
    try:
      f = open(path, 'xb')  # noqa: SIM115 - removed below if the encoder fails
    except FileExistsError:
      continue
    try:
      with f:
        Image.fromarray(array).save(f, format='PNG')
    except BaseException:
      os.remove(path)
      raise
    return path
  raise FileExistsError(f'{output_dir}: {stem}.png and 10000 numbered variants all exist.')


def _label_image(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return labels.astype(np.uint8 if num_classes <= 256 else np.uint16)


def predict_paths(
  config: ml_collections.ConfigDict,
  model: nn.Module,
  variables: Any,
  input_path: str,
  output_dir: str,
) -> dict[str, Any]:
  """Grades a photo, or every photo of a folder, into PNGs in `output_dir`.

  - Each `photo.ext` becomes `output_dir/photo.png`: 8-bit RGB clipped to [0, 1], or for a
    segmentation model 8-bit class labels (16-bit above 256 classes). EXIF orientation is
    applied on reading, so outputs are upright as the photo is shown.
  - Inputs are never overwritten: an output folder that is the input folder (or resolves to
    it) is refused before any work (`check_paths`). An existing file is never replaced either:
    when `photo.png` exists (an earlier run, or `photo.jpg` next to `photo.png` in the input),
    the output is `photo-1.png`, `photo-2.png`, ... and the summary says which name was used.
  - A file that cannot be read is reported with the reason and the others are still written.

  Returns:
    `{'output_dir', 'written': [{'input', 'output', 'height', 'width', 'seconds'}],
    'failed': [{'input', 'reason'}]}`.
  """
  inputs = check_paths(input_path, output_dir)
  tile_settings = grading.tile_settings(config)
  # Bad tile settings are refused before any output folder is made.
  tiling.check_tiling(model.levels, config.predict.tile_size, config.predict.tile_overlap)
  os.makedirs(output_dir, exist_ok=True)
  segment = model.head == 'segmentation'
  written, failed = [], []
  for path in inputs:
    start = time.perf_counter()
    try:
      image = data.load_image(path)
    except (ValueError, OSError, Image.DecompressionBombError) as error:
      logging.warning('Skipping %s: %s', path, error)
      failed.append({'input': path, 'reason': str(error)})
      continue
    if segment:
      labels = grading.segment_image(model, variables, image, **tile_settings)
      result = _label_image(labels, model.num_classes)
    else:
      result = to_uint8(grading.grade_image(model, variables, image, **tile_settings))
    del image
    output = _write_png(result, output_dir, _output_name(path))
    seconds = time.perf_counter() - start
    logging.info('%s -> %s (%dx%d, %.1f s)', path, output, *result.shape[1::-1], seconds)
    written.append(
      {
        'input': path,
        'output': output,
        'height': int(result.shape[0]),
        'width': int(result.shape[1]),
        'seconds': round(seconds, 3),
      }
    )
  return {'output_dir': output_dir, 'written': written, 'failed': failed}
