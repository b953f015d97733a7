"""The valid range of every numeric option, in one table (docs/options.md lists it for users).

`check_ranges(config)` refuses the first value outside its range, naming the key, before
anything is built. Sizes have upper bounds as well as lower ones: a typo such as
`model.frame_gain=100000` would otherwise ask for terabytes, or overflow, long after the run
started. Relations between options (crop size a multiple of 2**levels, tile overlap under half
the tile) are checked in validation.py; this table holds what each value must be on its own.
"""

import dataclasses
import math
from typing import Any

import ml_collections

_STEPS = 10**9  # a billion steps: far past any run, small enough for int32 step counters


@dataclasses.dataclass(frozen=True)
class Range:
  """`low` <= value <= `high` (`low_open` / `high_open`: strict), or exactly `off`."""

  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  off: float | None = None  # a value outside the range that switches the option off
  none_ok: bool = False  # None is allowed (the option's default placeholder)
  training_only: bool = False  # only training reads it: eval and predict do not check it

  def contains(self, value: float) -> bool:
    if self.off is not None and value == self.off:
      return True
    if not math.isfinite(value):
      return False
    if self.low is not None and (value <= self.low if self.low_open else value < self.low):
      return False
    return self.high is None or (value < self.high if self.high_open else value <= self.high)

  def text(self) -> str:
    """'[0, 1)', '> 0', '[11, 16384] or None', '0 (off) or [2, 64]'."""
    if self.low is not None and self.high is not None:
      left, right = '(' if self.low_open else '[', ')' if self.high_open else ']'
      text = f'{left}{_number(self.low)}, {_number(self.high)}{right}'
    elif self.low is not None:
      text = f'{">" if self.low_open else ">="} {_number(self.low)}'
    elif self.high is not None:
      text = f'{"<" if self.high_open else "<="} {_number(self.high)}'
    else:
      text = 'any finite number'
    if self.off is not None:
      text = f'{_number(self.off)} (off) or {text}'
    if self.none_ok:
      text += ' or None'
    return text


def _number(value: float) -> str:
  """1e9 for powers of ten from a million up, other whole numbers in full, else as `%g`."""
  if not float(value).is_integer():
    return f'{value:g}'
  digits = str(int(value))
  if int(value) >= 10**6 and digits.rstrip('0') == '1':
    return f'1e{len(digits) - 1}'
  return digits


_WEIGHT = Range(0, 1e6, training_only=True)  # a loss weight: 0 switches the term off
_COUNT = Range(1, _STEPS, training_only=True)

RANGES: dict[str, Range] = {
  'seed': Range(0, 2**31 - 1),
  'batch_size': Range(1, 65536, training_only=True),
  'num_train_steps': _COUNT,
  'log_every_steps': _COUNT,
  'eval_every_steps': _COUNT,
  'checkpoint_every_steps': _COUNT,
  'keep_checkpoints': Range(1, 1000, training_only=True),
  'num_image_summaries': Range(0, 1000, training_only=True),
  # model
  'model.levels': Range(1, 10),
  'model.base_channels': Range(1, 4096),
  'model.max_channels': Range(1, 16384),
  'model.in_channels': Range(1, 64),
  'model.out_channels': Range(1, 64),
  'model.num_classes': Range(2, 65536),
  'model.group_norm_groups': Range(1, 4096),
  'model.lut_size': Range(2, 65),
  'model.lut_bases': Range(1, 64),
  'model.thumbnail_size': Range(16, 1024),  # the thumbnail encoder halves it 4 times
  'model.frame_gain': Range(2, 64, off=0),
  'model.curves': Range(2, 256, off=0),
  'model.local_grid': Range(2, 256, off=0),
  'model.exposure_range_ev': Range(0, 10, low_open=True),
  # loss
  'loss.l1': _WEIGHT,
  'loss.l2': _WEIGHT,
  'loss.charbonnier': _WEIGHT,
  'loss.ssim': _WEIGHT,
  'loss.ms_ssim': _WEIGHT,
  'loss.perceptual': _WEIGHT,
  'loss.cross_entropy': _WEIGHT,
  'loss.dice': _WEIGHT,
  'loss.lut_smoothness': _WEIGHT,
  'loss.lut_curvature': _WEIGHT,
  'loss.lut_monotonicity': _WEIGHT,
  'loss.frame_gain_curvature': _WEIGHT,
  'loss.global_grade': _WEIGHT,
  'loss.auto_levels': _WEIGHT,
  'loss.whole_photo_grade': _WEIGHT,
  'loss.charbonnier_epsilon': Range(0, 1, low_open=True, training_only=True),
  'loss.ignore_label': Range(0, 65535, training_only=True),
  # data
  'data.crop_size': Range(1, 8192, training_only=True),
  # SSIM's window is 11 px: a smaller eval image cannot be scored.
  'data.eval_size': Range(11, 16384, none_ok=True),
  'data.max_pixels': Range(1, 10**10),
  'data.max_rotation_degrees': Range(0, 45, training_only=True),
  'data.noise_sigma': Range(0, 1),
  'data.num_workers': Range(0, 256, training_only=True),
  'data.photo_cache_mb': Range(0, 10**7, training_only=True),
  'data.prefetch_buffer_size': Range(0, 1024, training_only=True),
  # optimizer
  'optimizer.learning_rate': Range(0, 10, low_open=True, training_only=True),
  'optimizer.warmup_steps': Range(0, _STEPS, training_only=True),
  'optimizer.end_learning_rate_factor': Range(0, 1, training_only=True),
  'optimizer.weight_decay': Range(0, 10, training_only=True),
  'optimizer.b1': Range(0, 1, high_open=True, training_only=True),
  'optimizer.b2': Range(0, 1, high_open=True, training_only=True),
  # 0 switches clipping off; a negative norm would flip every gradient (gradient ascent).
  'optimizer.grad_clip_norm': Range(0, 1e6, low_open=True, off=0, training_only=True),
  'optimizer.ema_decay': Range(0, 1, high_open=True, training_only=True),
  'optimizer.global_grade_lr_factor': Range(0, 1e4, low_open=True, training_only=True),
  'optimizer.exposure_lr_factor': Range(0, 1e4, low_open=True, training_only=True),
  'optimizer.grade_first_steps': Range(0, _STEPS, training_only=True),
  # divergence
  'divergence.loss_factor': Range(1, 1e6, low_open=True, training_only=True),
  'divergence.patience': Range(1, 10**6, training_only=True),
  'divergence.eval_margin_db': Range(0, 100, training_only=True),
  # predict
  'predict.tile_size': Range(1, 16384),
  'predict.tile_overlap': Range(0, 8192),
  'predict.batch_tiles': Range(0, 4096),
  'predict.jpeg_quality': Range(1, 100),
  # distributed
  'distributed.num_processes': Range(1, 10**5, none_ok=True),
  'distributed.process_id': Range(0, 10**5, none_ok=True),
}

# Command-line flags with a range (main.py): Resolve and most graders read .cube LUTs of up to
# 65 points a side; the format allows 256.
LUT_SIZE = Range(2, 256)


def _get(config: ml_collections.ConfigDict, key: str) -> tuple[bool, Any]:
  node: Any = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False, None
    node = node[part]
  return True, node


def check_ranges(config: ml_collections.ConfigDict, *, training: bool = True) -> None:
  """ValueError naming the first numeric option outside its range (`training=False`: the
  options that eval and predict read)."""
  for key, valid in RANGES.items():
    if valid.training_only and not training:
      continue
    found, value = _get(config, key)
    if not found or (value is None and valid.none_ok):
      continue
    if isinstance(value, bool) or not isinstance(value, int | float) or not valid.contains(value):
      raise ValueError(f'config.{key}={value!r} is out of range: it must be {valid.text()}.')


def check_flag(name: str, value: int, valid: Range) -> None:
  """ValueError naming `--name` when a numeric flag is outside its range."""
  if not valid.contains(value):
    raise ValueError(f'--{name}={value} is out of range: it must be {valid.text()}.')
