"""Checks a whole config before anything compiles, naming the option that is wrong."""

import math
import os

import jax
import ml_collections

from unet_jax import data, losses, option_ranges, options
from unet_jax.inference import photo_writer, tiling
from unet_jax.models import thumbnail
from unet_jax.models.global_grade import has_global_grade
from unet_jax.training.train_state import LR_FACTOR_MODULES
from unet_jax.whole_photo import WholePhotoInputs

EVAL_METRICS = {
  'segment': ('miou', 'pixel_accuracy'),
  'image': ('psnr', 'ssim', 'lpips', 'delta_e2000'),
}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the option."""


class DataConfigError(data.DataError, ConfigError):
  """Data files or a data setting found bad while checking the config: a data error (exit
  status 4) that is also a ConfigError for callers of validate_config."""


def validate_config(
  config: ml_collections.ConfigDict, *, training: bool = True, check_data_files: bool = True
) -> None:
  """Raises ConfigError naming the first option that cannot work with the others.

  `training=False` skips what only training needs (batch, crop, schedule); with
  `check_data_files=False` the data folders are not looked at (predict on another machine).
  """
  _validate_numbers(config)
  try:
    options.check_choices(config)
    option_ranges.check_ranges(config, training=training)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  _refuse_derived_keys(config)
  validate_model_config(config.model, task=config.task)
  _validate_loss(config)
  _validate_predict(config)
  if training:
    _validate_training(config)
  try:
    data.validate_data_config(config, check_files=check_data_files)
  except data.DataError as error:
    raise DataConfigError(str(error)) from None
  except ValueError as error:
    raise ConfigError(str(error)) from None


def _numbers(tree: ml_collections.ConfigDict, prefix: str = 'config'):
  for key, value in tree.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _numbers(value, f'{prefix}.{key}')
    elif isinstance(value, (list, tuple)):
      for index, item in enumerate(value):
        if isinstance(item, float):
          yield f'{prefix}.{key}[{index}]', item
    elif isinstance(value, float):
      yield f'{prefix}.{key}', value


def _validate_numbers(config: ml_collections.ConfigDict) -> None:
  """No option may be NaN or infinite: every comparison with NaN is False, so a NaN passes
  range checks and trains garbage (a NaN learning rate gives NaN weights at step 1)."""
  for name, value in _numbers(config):
    if not math.isfinite(value):
      raise ConfigError(f'{name}={value} is not a finite number.')


def _validate_loss(config: ml_collections.ConfigDict) -> None:
  terms = losses.SEGMENTATION_TERMS if config.task == 'segment' else losses.IMAGE_TERMS
  try:
    losses.active_weights(config.loss, terms)
  except ValueError as error:
    raise ConfigError(f'{error} (task {config.task!r})') from None
  for term in (*losses.SOWN_REGULARISERS, 'global_grade', 'auto_levels', 'whole_photo_grade'):
    if config.loss.get(term, 0.0) < 0:
      raise ConfigError(f'config.loss.{term} must be >= 0; got {config.loss[term]}.')
  if config.loss.get('auto_levels', 0.0) > 0 and not config.model.get('auto_levels', False):
    raise ConfigError(
      f'config.loss.auto_levels={config.loss.auto_levels} fits the auto levels to the target, '
      'and this model has none: set config.model.auto_levels=True, or the loss to 0.'
    )
  if config.optimizer.get('auto_levels_prefit', False):
    if not config.model.get('auto_levels', False):
      raise ConfigError(
        'config.optimizer.auto_levels_prefit=True fits the auto levels before training, and this '
        'model has none: set config.model.auto_levels=True or leave the prefit off.'
      )
    if config.loss.get('auto_levels', 0.0) > 0:
      raise ConfigError(
        f'config.loss.auto_levels={config.loss.auto_levels} fits the auto levels during training, '
        'and config.optimizer.auto_levels_prefit=True holds them still after fitting them first: '
        'set one of the two.'
      )
  if config.optimizer.get('local_grid_prefit', False):
    if not config.model.get('local_grid', 0):
      raise ConfigError(
        'config.optimizer.local_grid_prefit=True fits the local grid before training, and this '
        'model has none: set config.model.local_grid (e.g. 32) or leave the prefit off.'
      )
    if config.optimizer.get('auto_levels_prefit', False):
      raise ConfigError(
        'config.optimizer.local_grid_prefit=True fits the local grid to the input photos, and '
        'config.optimizer.auto_levels_prefit=True changes them before the grid reads them: set '
        'one of the two.'
      )
  whole = config.loss.get('whole_photo_grade', 0.0)
  inputs = WholePhotoInputs.from_model_config(config.model)
  if whole > 0 and not (
    has_global_grade(config.model) and inputs.of_whole_photo and inputs.thumbnail_size
  ):
    raise ConfigError(
      f'config.loss.whole_photo_grade={whole} fits the grade under the U-Net to the whole photo '
      'at thumbnail size, and this model has no grade that reads a whole-photo thumbnail: set '
      "config.model.thumbnail='photo' and a grade that reads it (config.model.local_grid, "
      'exposure, ...), or the loss to 0.'
    )
  path = config.loss.vgg_weights_path
  if config.task != 'segment' and config.loss.perceptual > 0 and path and not os.path.isfile(path):
    raise ConfigError(f'config.loss.vgg_weights_path={path!r} is not a file.')


def _validate_predict(config: ml_collections.ConfigDict) -> None:
  try:
    photo_writer.check_output_options(config.predict)
    tiling.check_tiling(config.model.levels, config.predict.tile_size, config.predict.tile_overlap)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  if config.predict.batch_tiles < 0:
    raise ConfigError(
      f'config.predict.batch_tiles={config.predict.batch_tiles} must be >= 0 (0: automatic).'
    )
  if config.predict.get('lut_only') and not has_global_grade(config.model):
    raise ConfigError(
      'config.predict.lut_only=True grades with the grade under the U-Net alone (auto levels, '
      'exposure, tone curves, colour head, local grid, frame gain), and this model has none: set '
      "config.model.color_head to 'lut' or 'adaptive_lut'."
    )


def _validate_training(config: ml_collections.ConfigDict) -> None:
  devices = jax.device_count()
  if config.batch_size <= 0 or config.batch_size % devices:
    raise ConfigError(
      f'config.batch_size={config.batch_size} is the global batch and must be a positive '
      f'multiple of the {devices} devices in this run.'
    )
  multiple = 2**config.model.levels
  if config.data.crop_size <= 0 or config.data.crop_size % multiple:
    raise ConfigError(
      f'config.data.crop_size={config.data.crop_size} must be a positive multiple of '
      f'2**model.levels = {multiple}, so that training never pads.'
    )
  for option in (
    'num_train_steps',
    'log_every_steps',
    'eval_every_steps',
    'checkpoint_every_steps',
  ):
    if config[option] <= 0:
      raise ConfigError(f'config.{option} must be > 0; got {config[option]}.')
  opt = config.optimizer
  if opt.learning_rate <= 0:
    raise ConfigError(f'config.optimizer.learning_rate must be > 0; got {opt.learning_rate}.')
  if not 0 <= opt.ema_decay < 1:
    raise ConfigError(f'config.optimizer.ema_decay must be in [0, 1); got {opt.ema_decay}.')
  if opt.warmup_steps < 0:
    raise ConfigError(f'config.optimizer.warmup_steps must be >= 0; got {opt.warmup_steps}.')
  if opt.get('grade_first_steps', 0) < 0:
    raise ConfigError(
      f'config.optimizer.grade_first_steps must be >= 0; got {opt.grade_first_steps}.'
    )
  for factor in LR_FACTOR_MODULES:
    if opt.get(factor, 1.0) <= 0:
      raise ConfigError(f'config.optimizer.{factor} must be > 0; got {opt[factor]}.')
  metrics = EVAL_METRICS['segment' if config.task == 'segment' else 'image']
  if config.best_metric not in metrics:
    raise ConfigError(
      f'config.best_metric={config.best_metric!r} is not an eval metric of task '
      f'{config.task!r}; choose one of {list(metrics)}.'
    )
  if config.keep_checkpoints < 1:
    raise ConfigError(f'config.keep_checkpoints must be >= 1; got {config.keep_checkpoints}.')
  if config.best_metric == 'lpips' and not config.eval_lpips:
    raise ConfigError(
      "config.best_metric='lpips' picks the best checkpoint by a score this run does not take: "
      'set config.eval_lpips=True or another best_metric.'
    )
  _validate_divergence(config.divergence)


def _validate_divergence(div: ml_collections.ConfigDict) -> None:
  if div.loss_factor <= 1:
    raise ConfigError(f'config.divergence.loss_factor must be > 1; got {div.loss_factor}.')
  if div.patience < 1:
    raise ConfigError(f'config.divergence.patience must be >= 1; got {div.patience}.')
  if div.eval_margin_db < 0:
    raise ConfigError(f'config.divergence.eval_margin_db must be >= 0; got {div.eval_margin_db}.')


# ---------------------------------------------------------------------------------------------
# config.model: the options one by one, then how the global grade's options fit together.


def _refuse_derived_keys(config: ml_collections.ConfigDict) -> None:
  """A config file that still sets a key now derived from another (options.DERIVED) is
  refused, naming the key, rather than silently overridden."""
  for key, (source, _) in options.DERIVED.items():
    section, _, name = key.rpartition('.')
    if name in (config[section] if section else config):
      raise ConfigError(
        f'config.{key} is no longer set: it {options.derivation(key)}. Remove it from the '
        f'config file and set config.{source}.'
      )


def validate_model_config(model_config: ml_collections.ConfigDict, *, task: str) -> None:
  """Raises ConfigError naming the `config.model` option that cannot build a U-Net for
  `config.task` (which picks the output head)."""
  try:
    options.check_choices(model_config, section='model')
  except ValueError as error:
    raise ConfigError(str(error)) from None
  head = options.output_head(task)
  _validate_color_head(model_config, head)
  for option in ('levels', 'base_channels', 'max_channels', 'in_channels', 'group_norm_groups'):
    if int(model_config[option]) < 1:
      raise ConfigError(f'config.model.{option} must be >= 1; got {model_config[option]}.')
  if head == 'image' and model_config.out_channels < 1:
    raise ConfigError(f'config.model.out_channels must be >= 1; got {model_config.out_channels}.')
  # The segmentation head's logits have nothing to add the input to: it ignores `residual`.
  if head == 'segmentation':
    if model_config.num_classes < 2:
      raise ConfigError(
        f'config.model.num_classes must be >= 2 for segmentation; got {model_config.num_classes}.'
      )
  elif model_config.residual and model_config.out_channels != model_config.in_channels:
    raise ConfigError(
      f'config.model.residual=True adds the input to the output, so out_channels '
      f'({model_config.out_channels}) must equal in_channels ({model_config.in_channels}).'
    )


def _validate_whole_photo_grades(model_config: ml_collections.ConfigDict) -> None:
  """The auto levels, the exposure, the tone curves and the local grid read the whole photo: in
  training too."""
  for key in ('auto_levels', 'exposure', 'curves', 'local_grid'):
    if model_config.get(key, 0) and model_config.thumbnail != 'photo':
      raise ConfigError(
        f'config.model.{key}={model_config[key]} reads the whole photo, in training too: it '
        "needs config.model.thumbnail='photo'."
      )
  if model_config.get('auto_levels_offset', False) and not model_config.get('auto_levels', False):
    raise ConfigError(
      'config.model.auto_levels_offset=True shifts the auto levels, and this model has none: '
      'set config.model.auto_levels=True or leave the offset off.'
    )
  grid = int(model_config.get('local_grid', 0))
  for key in ('local_grid_statistics', 'local_grid_extremes', 'local_grid_detail'):
    if model_config.get(key, False) and not grid:
      raise ConfigError(
        f'config.model.{key}=True feeds the local grid, and this model has none: '
        'set config.model.local_grid (e.g. 32) or leave it off.'
      )
  if grid:
    ratio = model_config.thumbnail_size / grid
    if ratio < 1 or ratio != int(ratio) or int(ratio) & (int(ratio) - 1):
      raise ConfigError(
        f'config.model.local_grid={grid} is read off the thumbnail by halving it: '
        f'config.model.thumbnail_size ({model_config.thumbnail_size}) must be local_grid times '
        'a power of two (1, 2, 4, ...).'
      )


def _validate_color_head(model_config: ml_collections.ConfigDict, head: str) -> None:
  if model_config.thumbnail == 'photo' and not (
    model_config.color_head == 'adaptive_lut'
    or model_config.global_context == 'thumbnail'
    or model_config.get('exposure', False)
    or model_config.get('auto_levels', False)
    or model_config.get('curves', 0)
    or model_config.get('local_grid', 0)
  ):
    raise ConfigError(
      "config.model.thumbnail='photo' feeds the global branch, and this model has none: "
      "set config.model.color_head='adaptive_lut', config.model.global_context='thumbnail', "
      'config.model.exposure=True, config.model.auto_levels=True, config.model.curves or '
      'config.model.local_grid.'
    )
  _validate_whole_photo_grades(model_config)
  stages = len(thumbnail.ENCODER_CHANNELS)
  if model_config.thumbnail_size < 2**stages:
    raise ConfigError(
      f'config.model.thumbnail_size must be >= {2**stages} (the thumbnail encoder halves it '
      f'{stages} times); got {model_config.thumbnail_size}.'
    )
  if model_config.get('thumbnail_stats', False) and not (
    model_config.color_head == 'adaptive_lut' or model_config.global_context == 'thumbnail'
  ):
    raise ConfigError(
      "config.model.thumbnail_stats=True adds the thumbnail's figures to the context, and "
      "this model encodes no thumbnail: set config.model.color_head='adaptive_lut' or "
      "config.model.global_context='thumbnail'."
    )
  frame_gain = int(model_config.get('frame_gain', 0))
  if frame_gain == 1 or frame_gain < 0:
    raise ConfigError(
      f'config.model.frame_gain must be 0 (off) or >= 2 lattice points a side; got {frame_gain}.'
    )
  if model_config.get('exposure', False) and not model_config.get('exposure_range_ev', 2.0) > 0:
    raise ConfigError(
      f'config.model.exposure_range_ev must be > 0; got {model_config.exposure_range_ev}.'
    )
  if not has_global_grade(model_config):
    if model_config.unet_input != 'input':
      raise ConfigError(
        f'config.model.unet_input={model_config.unet_input!r} needs a colour head; set '
        "config.model.color_head to 'lut' or 'adaptive_lut'."
      )
    return
  # The global grade sits under the U-Net's residual edit.
  grade = (
    f'color_head={model_config.color_head!r}'
    if model_config.color_head != 'none'
    else ('frame_gain' if model_config.get('frame_gain', 0) else 'exposure')
  )
  if head != 'image' or not model_config.residual:
    raise ConfigError(
      f"config.model.{grade} grades colours under the U-Net's residual edit: it needs "
      "an image task (config.task='enhance' or 'denoise') and config.model.residual=True."
    )
  if model_config.in_channels != 3 or model_config.out_channels != 3:
    raise ConfigError(
      f'config.model.{grade} maps RGB to RGB: it needs in_channels=3 and out_channels=3; '
      f'got {model_config.in_channels} and {model_config.out_channels}.'
    )
  if model_config.color_head == 'none':
    return
  if model_config.lut_size < 2:
    raise ConfigError(f'config.model.lut_size must be >= 2; got {model_config.lut_size}.')
  if model_config.lut_bases < 1:
    raise ConfigError(f'config.model.lut_bases must be >= 1; got {model_config.lut_bases}.')
