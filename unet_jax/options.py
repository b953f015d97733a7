"""The valid values of every config key that names a choice, in one table (`CHOICES`).

`check_choices(config)` refuses a value outside its list, naming the key; validation.py runs it
first. The modules that implement a choice dispatch on these names; where one keeps its own
list (models/, the photo writer, the colour spaces), tests/training/test_config_record.py
checks that it says the same as this table. This module imports nothing from the package, so
every module may import it.
"""

from typing import Any

import ml_collections

TASKS = ('enhance', 'denoise', 'segment')
# What the U-Net's bottleneck mixes in: nothing; its own features pooled over the photo (two
# passes over the tiles at predict); or the thumbnail encoder's vector of the photo's thumbnail.
GLOBAL_CONTEXTS = ('none', 'pooled', 'thumbnail')
# What the thumbnail (and its metering figures) in a training batch shows: the training crop
# itself, or the whole photo the crop was cut from, as at predict.
THUMBNAILS = ('crop', 'photo')
DIVERGENCE_ACTIONS = ('warn', 'stop')
SAMPLINGS = ('crop', 'resize', 'mixed')
BAD_PAIR_POLICIES = ('error', 'skip')
WORKING_SPACES = ('srgb', 'display_p3', 'adobe_rgb', 'prophoto_rgb')

CHOICES: dict[str, tuple[str, ...]] = {
  'task': TASKS,
  'model.norm': ('batch', 'group', 'layer', 'none'),
  'model.batch_norm': ('auto', 'gemm', 'flax'),
  'model.activation': ('relu', 'gelu', 'silu'),
  'model.down': ('maxpool', 'strided'),
  'model.up': ('bilinear', 'transposed', 'pixel_shuffle'),
  'model.skip': ('concat', 'none'),
  'model.global_context': GLOBAL_CONTEXTS,
  'model.head': ('image', 'segmentation'),
  'model.dtype': ('float32', 'bfloat16'),
  'model.color_head': ('none', 'lut', 'adaptive_lut'),
  'model.lut_method': ('auto', 'gather', 'matmul'),
  'model.unet_input': ('input', 'lut'),
  'model.thumbnail': THUMBNAILS,
  'loss.perceptual_network': ('vgg16', 'vgg19'),
  'data.working_space': WORKING_SPACES,
  'data.sampling': SAMPLINGS,
  'data.bad_pair_policy': BAD_PAIR_POLICIES,
  'divergence.action': DIVERGENCE_ACTIONS,
  'predict.output_format': ('same', 'jpeg', 'png', 'tiff'),
  'predict.output_bits': ('same', '8', '16'),
  'predict.output_profile': ('same', *WORKING_SPACES),
}


def _value(config: ml_collections.ConfigDict, key: str) -> Any:
  for part in key.split('.'):
    config = config[part]
  return config


def check_choices(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first key whose value is not one of its choices."""
  for key, choices in CHOICES.items():
    value = _value(config, key)
    # Bit depths are typed as ints on the command line (--config.predict.output_bits=16).
    if str(value) not in choices:
      raise ValueError(f'config.{key}={value!r} is not one of {list(choices)}.')
