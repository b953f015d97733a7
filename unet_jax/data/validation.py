"""Cheap checks of `config.data` that run before anything is decoded or compiled."""

import math
import os

import ml_collections

from unet_jax.data import builtin, folder_scan, looks, segmentation
from unet_jax.data.errors import DataError
from unet_jax.data.folder_scan import report
from unet_jax.data.sources import PAIR_DATASETS
from unet_jax.options import check_choices

MAX_ROTATION_DEGREES = 45.0


def _choice(option: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
  if value not in choices:
    raise DataError(f'config.{option}={value!r} is not one of {list(choices)}.')


def validate_data_config(config: ml_collections.ConfigDict, *, check_files: bool = True) -> None:
  """Raises DataError naming the option (or file) that cannot work, without decoding images.

  With `check_files=False` only the settings are checked (for commands that read no dataset,
  such as predict on a machine without the training data).
  """
  data = config.data
  try:
    check_choices(data, section='data')
  except ValueError as error:
    raise DataError(str(error)) from None
  for option in ('crop_size',):
    if data[option] <= 0:
      raise DataError(f'config.data.{option} must be > 0; got {data[option]}.')
  for option in ('num_workers', 'prefetch_buffer_size'):
    if data[option] < 0:
      raise DataError(f'config.data.{option} must be >= 0; got {data[option]}.')
  if data.eval_size is not None and data.eval_size <= 0:
    raise DataError(f'config.data.eval_size must be > 0 or None; got {data.eval_size}.')
  if not 0 <= data.max_rotation_degrees <= MAX_ROTATION_DEGREES:
    raise DataError(
      f'config.data.max_rotation_degrees must be in [0, {MAX_ROTATION_DEGREES:g}]; '
      f'got {data.max_rotation_degrees}.'
    )
  if config.task == 'denoise' and not (math.isfinite(data.noise_sigma) and data.noise_sigma > 0):
    raise DataError(f'config.data.noise_sigma must be > 0 for denoising; got {data.noise_sigma}.')
  for option in ('train_split', 'eval_split'):
    if not folder_scan.SPLIT_NAME.match(data[option] or ''):
      raise DataError(f'config.data.{option}={data[option]!r} is not a split name.')
  if config.task == 'segment':
    _validate_segmentation(config)
  elif data.name not in PAIR_DATASETS:
    raise DataError(
      f'config.data.name={data.name!r}: task {config.task!r} reads one of {list(PAIR_DATASETS)};'
      " a tfds dataset name is for config.task='segment'."
    )
  elif data.name == 'builtin':
    _validate_builtin(config)
  elif check_files:
    _validate_paired_folders(config)


def _validate_segmentation(config: ml_collections.ConfigDict) -> None:
  name = config.data.name
  if name in PAIR_DATASETS:
    raise DataError(
      f"config.task='segment' needs a tfds dataset with image and mask in config.data.name "
      f"(e.g. 'oxford_iiit_pet'); {name!r} holds image pairs."
    )
  expected = segmentation.spec_for(name).num_classes
  if expected is not None and config.model.num_classes != expected:
    raise DataError(
      f'config.model.num_classes={config.model.num_classes} but {name!r} has {expected} '
      'classes (see unet_jax/data/segmentation.py).'
    )


def _validate_builtin(config: ml_collections.ConfigDict) -> None:
  data = config.data
  _choice('data.look', data.look, sorted(looks.LOOKS))
  for option in ('train_split', 'eval_split'):
    _choice(f'data.{option}', data[option], builtin.SPLITS)
  photos = builtin.photo_files()
  for option in ('train_split', 'eval_split'):
    if not any(builtin.split_of(name) == data[option] for name in photos):
      raise DataError(
        f'The built-in dataset has no {data[option]!r} photos here (config.data.{option}): it '
        'needs scikit-image, scikit-learn or matplotlib installed.'
      )
  # Crops larger than some photos are no error: builtin.min_side() enlarges those photos.


def _validate_paired_folders(config: ml_collections.ConfigDict) -> None:
  data = config.data
  if not data.dir:
    raise DataError("config.data.name='paired_folders' needs config.data.dir (the pairs root).")
  if not os.path.isdir(data.dir):
    raise DataError(f'config.data.dir={data.dir!r} does not exist or is not a folder.')
  scan = folder_scan.scan_folder(data.dir)
  for option in ('train_split', 'eval_split'):
    if data[option] not in scan.splits:
      raise DataError(
        f'config.data.{option}={data[option]!r} is not a split of {scan.root} '
        f'(found {sorted(scan.splits)}).'
      )
  if scan.problems and data.bad_pair_policy == 'error':
    raise DataError(
      report(
        scan.problems,
        f"{len(scan.problems)} bad pair(s) in {scan.root} (config.data.bad_pair_policy='error'; "
        "fix them, or set it to 'skip' to leave them out):",
      )
    )
  for option in ('train_split', 'eval_split'):
    if not scan.splits[data[option]]:
      raise DataError(f'Split {data[option]!r} of {scan.root} is empty (config.data.{option}).')
