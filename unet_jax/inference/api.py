"""The one-call Python API: `model = unet_jax.load('runs/x'); model.grade('photo.jpg')`.

`load` takes a training workdir (its best checkpoint, else the latest; EMA weights) or a folder
written by `--mode=export` (`model.safetensors` + `config.json`). Grading goes through the same
functions as `--mode=predict`: files are read by `data.load_image`, photos of any size are
graded in `config.predict` tiles, and outputs are clipped to [0, 1] as predict writes them.
"""

import os
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np

from unet_jax import data
from unet_jax.inference import export_files, files, grading, preview, restore
from unet_jax.models import create_model
from unet_jax.training import run_record
from unet_jax.validation import validate_config


class Model:
  """A trained U-Net ready to grade photos.

  Attributes: `config` (the run's resolved config), `module` (the flax `UNet`), `variables`
  (`params` and `batch_stats`), `source` (the checkpoint or weights file they came from).
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    module: nn.Module,
    variables: dict[str, Any],
    source: str,
  ):
    self.config, self.module, self.variables, self.source = config, module, variables, source

  def __repr__(self) -> str:
    return f'unet_jax.Model({self.config.task}, {self.module.levels} levels, from {self.source})'

  def grade(self, image: np.ndarray | str | os.PathLike) -> np.ndarray:
    """Grades one photo: a file path, or an array `[H, W, C]` (float in [0, 1], or uint8).

    Returns float32 `[H, W, out_channels]` clipped to [0, 1] (the photo predict would write,
    before 8-bit rounding); for a segmentation model, int32 class labels `[H, W]`.
    """
    if isinstance(image, str | os.PathLike):
      image = data.load_image(image, self.config.data.working_space)
    image = _as_float_image(image)
    tiles = grading.tile_settings(self.config)
    if self.module.head == 'segmentation':
      return grading.segment_image(self.module, self.variables, image, **tiles)
    if self.config.predict.lut_only:
      graded = preview.grade_lut_only(self.module, self.variables, image)
    else:
      graded = grading.grade_image(self.module, self.variables, image, **tiles)
    return np.clip(graded, 0.0, 1.0)

  def grade_folder(
    self, input_path: str, output_dir: str, *, skip_existing: bool = False, recursive: bool = False
  ) -> dict[str, Any]:
    """Grades a photo or a folder of photos into `output_dir`, as `--mode=predict` does: each
    file written like its input (container, bits, profile, EXIF).

    Never overwrites an input or an earlier output; returns predict's summary
    (`{'output_dir', 'written': [...], 'skipped': [...], 'failed': [...]}`).
    """
    return files.predict_paths(
      self.config,
      self.module,
      self.variables,
      input_path,
      output_dir,
      skip_existing=skip_existing,
      recursive=recursive,
    )


def _as_float_image(image: np.ndarray) -> np.ndarray:
  array = np.asarray(image)
  if array.dtype == np.uint8:
    return array.astype(np.float32) / 255.0
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(
      f'grade() takes a float image in [0, 1] or a uint8 image; got dtype {array.dtype}.'
    )
  return array.astype(np.float32)


def load(path: str | os.PathLike) -> Model:
  """The model of a training workdir or of an export folder (see the module doc)."""
  path = os.fspath(path)
  weights = os.path.join(path, export_files.WEIGHTS_FILE)
  if export_files.check_export_folder(path):  # ValueError naming what an incomplete one lacks
    config = run_record.load_config(path)
    validate_config(config, training=False, check_data_files=False)
    return Model(
      config,
      create_model(config.model, task=config.task),
      export_files.load_weights(weights),
      weights,
    )
  if not os.path.isdir(path):
    raise FileNotFoundError(f'unet_jax.load({path!r}): no such folder.')
  config, module, variables, checkpoint = restore.load_trained_model(path)
  return Model(config, module, variables, checkpoint)
