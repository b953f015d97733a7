"""The `.cube` LUT of a trained model: its best global colour mapping, and how much it keeps.

The model grades photos (the run's eval photos, or `--input`) as predict does; every pixel
gives an (input colour, output colour) pair, and `lut.fit_lut` finds the table that maps one to
the other best. A U-Net also makes local edits (contrast that depends on the neighbourhood,
vignettes), which no LUT can hold, so the fit reports the PSNR of the LUT's output against the
model's: the higher, the more of the look the LUT keeps.
"""

import logging
import os
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np

from unet_jax import data, option_ranges
from unet_jax.inference import files, grading, lut, restore

DEFAULT_SIZE = lut.DEFAULT_SIZE
# Enough pixels to pin down every populated cell of a 33^3 grid many times over; more only
# makes the fit slower (it is linear in the pixel count before the solve).
MAX_PIXELS = 2_000_000


def lut_blocker(model: nn.Module) -> str | None:
  """Why this model has no LUT, or None."""
  if model.head == 'segmentation':
    return "a segmentation model (config.task='segment') maps colours to classes, not to colours"
  if model.in_channels != 3 or model.out_channels != 3:
    return (
      f'a colour LUT maps RGB to RGB; this model has in_channels={model.in_channels}, '
      f'out_channels={model.out_channels}'
    )
  return None


def lut_photos(
  config: ml_collections.ConfigDict, workdir: str, input_path: str | None
) -> list[tuple[str, np.ndarray]]:
  """(name, `[H, W, 3]` image) of the photos to fit on: `input_path`'s, else the eval split's.

  Each `--input` photo is converted from its own ICC profile (sRGB when untagged) into the run's
  working space (`config.data.working_space`), as predict reads it: the model was trained on
  colours of that space, and the table maps them. Raises FileNotFoundError or ValueError
  (DataError) naming the path when they cannot be read.
  """
  if input_path is not None:
    limit = config.data.get('max_pixels')
    return [
      (path, data.load_image(path, config.data.working_space, max_pixels=limit))
      for path in files.list_inputs(input_path)
    ]
  examples = data.create_eval_iterator(config, data_dir=data.tfds_dir(config, workdir))
  photos = [(str(example['name']), example['input']) for example in examples]
  if not photos:
    raise ValueError(
      f"the eval split '{config.data.eval_split}' of the run is empty; pass --input=PHOTOS"
    )
  return photos


def fit_model_lut(
  config: ml_collections.ConfigDict,
  model: nn.Module,
  variables: dict[str, Any],
  photos: list[tuple[str, np.ndarray]],
  *,
  size: int = DEFAULT_SIZE,
) -> tuple[np.ndarray, dict[str, Any]]:
  """The fitted `[size, size, size, 3]` table and its fidelity to the model on `photos`.

  The model's output is clipped to [0, 1], as predict writes it. Fidelity:
  `{'psnr_lut_vs_model', 'psnr_input_vs_model', 'images', 'pixels', 'size'}`, over every pixel
  of the photos (the fit itself uses at most `MAX_PIXELS` of them, drawn evenly).
  """
  inputs, outputs = [], []
  for name, image in photos:
    graded = grading.grade_image(model, variables, image, **grading.tile_settings(config))
    inputs.append(np.asarray(image, np.float32).reshape(-1, 3))
    outputs.append(np.clip(graded, 0.0, 1.0).reshape(-1, 3))
    logging.info('LUT: graded %s (%dx%d).', name, image.shape[1], image.shape[0])
  inputs, outputs = np.concatenate(inputs), np.concatenate(outputs)
  sample = slice(None)
  if len(inputs) > MAX_PIXELS:
    sample = np.random.default_rng(0).choice(len(inputs), MAX_PIXELS, replace=False)
  table = lut.fit_lut(inputs[sample], outputs[sample], size=size)
  fidelity = {
    'psnr_lut_vs_model': lut.psnr(lut.apply_lut(table, inputs), outputs),
    'psnr_input_vs_model': lut.psnr(inputs, outputs),
    'images': len(photos),
    'pixels': int(len(inputs)),
    'size': size,
  }
  return table, fidelity


def write_model_lut(path: str, table: np.ndarray, config: ml_collections.ConfigDict) -> str:
  title = f'unet_jax {config.task} ({config.data.name})'
  return lut.write_cube(path, table, title=title)


def fidelity_line(fidelity: dict[str, Any]) -> str:
  return (
    f'LUT fidelity: {fidelity["psnr_lut_vs_model"]:.2f} dB PSNR of the LUT vs the model on '
    f'{fidelity["images"]} photos ({fidelity["pixels"]:,} pixels); the input itself is '
    f'{fidelity["psnr_input_vs_model"]:.2f} dB from the model. What the LUT misses are local edits.'
  )


def export_lut(
  workdir: str,
  output_path: str,
  *,
  input_path: str | None = None,
  size: int = DEFAULT_SIZE,
  predict_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Fits the LUT of the run in `workdir` and writes it to `output_path` (a new `.cube` file)."""
  if not output_path.lower().endswith('.cube'):
    raise ValueError(f'--output {output_path}: a LUT is written as a .cube file.')
  if os.path.exists(output_path):
    raise ValueError(f'--output {output_path} exists; export_lut never replaces a file.')
  option_ranges.check_flag('lut_size', size, option_ranges.LUT_SIZE)
  folder = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(folder):
    raise ValueError(f'--output {output_path}: the folder {folder} does not exist.')
  if not os.access(folder, os.W_OK):
    raise ValueError(f'--output {output_path}: the folder {folder} is not writable.')
  if input_path is not None:
    files.list_inputs(input_path)  # a bad --input fails before the model is restored
  config, model, variables, _ = restore.load_trained_model(
    workdir, predict_overrides=predict_overrides
  )
  problem = lut_blocker(model)
  if problem:
    raise ValueError(f'No LUT for {workdir}: {problem}.')
  photos = lut_photos(config, workdir, input_path)
  table, fidelity = fit_model_lut(config, model, variables, photos, size=size)
  fidelity['output'] = write_model_lut(output_path, table, config)
  return fidelity
