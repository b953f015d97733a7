"""The valid values of every config key that names a choice, in one table (`CHOICES`), and the
keys derived from others rather than set (`DERIVED`).

`check_choices(config)` refuses a value outside its list, naming the key; validation.py runs it
first. The modules that implement a choice import its list from here; where one keeps a table
keyed by the names (activations, VGG depths, colour spaces),
tests/training/test_config_record.py checks that its keys are this list. This module imports
nothing from the package, so every module may import it.
"""

from typing import Any

import ml_collections

TASKS = ('enhance', 'denoise', 'segment')
NORMS = ('batch', 'group', 'layer', 'none')
# How BatchNorm computes (models/batch_norm.py): auto is gemm on CPU, flax elsewhere.
BATCH_NORMS = ('auto', 'gemm', 'flax')
ACTIVATIONS = ('relu', 'gelu', 'silu')
DOWNS = ('maxpool', 'strided')
UPS = ('bilinear', 'transposed', 'pixel_shuffle')
SKIPS = ('concat', 'none')
# What the U-Net's bottleneck mixes in: nothing; its own features pooled over the photo (two
# passes over the tiles at predict); or the thumbnail encoder's vector of the photo's thumbnail.
GLOBAL_CONTEXTS = ('none', 'pooled', 'thumbnail')
DTYPES = ('float32', 'bfloat16')
COLOR_HEADS = ('none', 'lut', 'adaptive_lut')
# How a 3D LUT is read (models/lut.py): auto is matmul on TPU, gather elsewhere.
LUT_METHODS = ('auto', 'gather', 'matmul')
UNET_INPUTS = ('input', 'lut')
# What the thumbnail (and its metering figures) in a training batch shows: the training crop
# itself, or the whole photo the crop was cut from, as at predict.
THUMBNAILS = ('crop', 'photo')
PERCEPTUAL_NETWORKS = ('vgg16', 'vgg19')
WORKING_SPACES = ('srgb', 'display_p3', 'adobe_rgb', 'prophoto_rgb')
SAMPLINGS = ('crop', 'resize', 'mixed')
BAD_PAIR_POLICIES = ('error', 'skip')
DIVERGENCE_ACTIONS = ('warn', 'stop')
OUTPUT_FORMATS = ('same', 'jpeg', 'png', 'tiff')
OUTPUT_BITS = ('same', '8', '16')
OUTPUT_PROFILES = ('same', *WORKING_SPACES)

CHOICES: dict[str, tuple[str, ...]] = {
  'task': TASKS,
  'model.norm': NORMS,
  'model.batch_norm': BATCH_NORMS,
  'model.activation': ACTIVATIONS,
  'model.down': DOWNS,
  'model.up': UPS,
  'model.skip': SKIPS,
  'model.global_context': GLOBAL_CONTEXTS,
  'model.dtype': DTYPES,
  'model.color_head': COLOR_HEADS,
  'model.lut_method': LUT_METHODS,
  'model.unet_input': UNET_INPUTS,
  'model.thumbnail': THUMBNAILS,
  'loss.perceptual_network': PERCEPTUAL_NETWORKS,
  'data.working_space': WORKING_SPACES,
  'data.sampling': SAMPLINGS,
  'data.bad_pair_policy': BAD_PAIR_POLICIES,
  'divergence.action': DIVERGENCE_ACTIONS,
  'predict.output_format': OUTPUT_FORMATS,
  'predict.output_bits': OUTPUT_BITS,
  'predict.output_profile': OUTPUT_PROFILES,
}

# Keys no longer set because they follow from another (a config.json written before holds them;
# training/run_record.upgrade drops them): {key: (the key it follows, how)}.
DERIVED = {
  'model.head': ('task', 'segment: the segmentation head; enhance, denoise: the image head'),
}


def derivation(key: str) -> str:
  """'follows config.task (...)': why a key of `DERIVED` is not set."""
  source, how = DERIVED[key]
  return f'follows config.{source} ({how})'


def output_head(task: str) -> str:
  """The U-Net's output head for `config.task`: 'segmentation' (logits) or 'image'."""
  return 'segmentation' if task == 'segment' else 'image'


def _value(config: ml_collections.ConfigDict, key: str) -> Any:
  for part in key.split('.'):
    config = config[part]
  return config


def check_choices(config: ml_collections.ConfigDict, section: str | None = None) -> None:
  """Raises ValueError naming the first key whose value is not one of its choices.

  With `section` (say 'model'), `config` is that section alone (`config.model`) and only its
  keys are checked.
  """
  prefix = f'{section}.' if section else ''
  for key, choices in CHOICES.items():
    if not key.startswith(prefix):
      continue
    value = _value(config, key.removeprefix(prefix))
    # Bit depths are typed as ints on the command line (--config.predict.output_bits=16).
    if str(value) not in choices:
      raise ValueError(f'config.{key}={value!r} is not one of {list(choices)}.')
