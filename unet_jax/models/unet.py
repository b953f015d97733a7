"""The U-Net: encoder stages, a bottleneck, decoder stages joined by skip connections.

Level i works at 1 / 2**i of the input resolution with `base_channels * 2**i` channels (capped
at `max_channels`). With `levels=4`: four encoder stages, four down-samplings, a bottleneck at
1/16, and four decoder stages that up-sample and concatenate the encoder's features.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from unet_jax import options
from unet_jax.models import batch_norm, layers, lut
from unet_jax.models import color_head as color_head_lib

HEADS = ('image', 'segmentation')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class UNet(nn.Module):
  """U-Net for image-to-image work on `[B, H, W, C]` inputs of any H and W.

  Inputs are reflect-padded to a multiple of 2**levels and the output cropped back, so the output
  has the input's spatial shape. The image head returns `[B, H, W, out_channels]` float32 (with
  `residual=True`: input + edit, and the edit starts at exactly zero); the segmentation head
  returns float32 logits `[B, H, W, num_classes]`.
  """

  levels: int = 4
  base_channels: int = 32
  max_channels: int = 512
  in_channels: int = 3
  norm: str = 'batch'
  batch_norm: str = 'auto'  # auto | gemm | flax (models/batch_norm.py)
  group_norm_groups: int = 8
  activation: str = 'relu'
  down: str = 'maxpool'
  up: str = 'bilinear'
  skip: str = 'concat'
  attention_gates: bool = False
  multiscale_input: bool = False
  global_context: bool = False
  residual: bool = True
  head: str = 'image'
  out_channels: int = 3
  num_classes: int = 2
  dtype: Any = jnp.float32
  remat: bool = False
  # The global colour head and the whole-photo context (models/color_head.py).
  color_head: str = 'none'
  lut_size: int = 17
  lut_bases: int = 3
  lut_method: str = 'auto'
  unet_input: str = 'input'
  thumbnail_context: bool = False
  thumbnail_size: int = 64
  thumbnail_stats: bool = False
  coords: bool = False
  frame_gain: int = 0
  exposure: bool = False
  exposure_range_ev: float = 2.0

  @property
  def reads_thumbnail(self) -> bool:
    """Whether a thumbnail feeds the global branch (exposure, LUT weights, global context)."""
    return (
      self.color_head == 'adaptive_lut'
      or self.exposure
      or (self.global_context and self.thumbnail_context)
    )

  @property
  def reads_statistics(self) -> bool:
    """Whether the whole photo's metering figures feed the context or the exposure."""
    return self.thumbnail_stats or self.exposure

  @property
  def has_global_grade(self) -> bool:
    """Whether a global grade (exposure, colour head, frame gain) sits under the U-Net."""
    return has_global_grade(self)

  @property
  def reads_coords(self) -> bool:
    """Whether the net reads whole-photo pixel coordinates (U-Net input, or the frame gain)."""
    return self.coords or self.frame_gain > 0

  @property
  def pools_bottleneck(self) -> bool:
    """Whether the global context is the pooled bottleneck (tiled predict needs two passes)."""
    return self.global_context and not self.thumbnail_context

  def channels(self, level: int) -> int:
    return min(self.base_channels * 2**level, self.max_channels)

  def _block(self, level: int, name: str) -> layers.ConvBlock:
    # remat: each block's inner activations are recomputed in the backward pass instead of
    # kept, so training holds about one activation per block instead of five.
    block = nn.remat(layers.ConvBlock, static_argnums=(2,)) if self.remat else layers.ConvBlock
    return block(
      self.channels(level),
      norm=self.norm,
      groups=self.group_norm_groups,
      batch_norm=self.batch_norm,
      activation=self.activation,
      dtype=self.dtype,
      name=name,
    )

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    train: bool = False,
    thumbnail: jax.Array | None = None,
    statistics: jax.Array | None = None,
    coords: jax.Array | None = None,
    pooled_context: jax.Array | None = None,
    return_pooled_context: bool = False,
    lut_only: bool = False,
  ) -> jax.Array:
    """Runs the net.

    Args:
      x: `[B, H, W, in_channels]` images in [0, 1].
      train: BatchNorm uses batch statistics (and updates `batch_stats`) when True.
      thumbnail: `[B, T, T, 3]` thumbnails of the whole photos `x` was cut from
        (`thumbnail_size` T), read by the global branch; None: a thumbnail of `x` itself.
      statistics: `[B, 8]` metering figures of those whole photos (`photo_statistics`), read
        by nets with `thumbnail_stats` or `exposure`; None: the figures of `x` itself.
      coords: `[B, H, W, 2]` (y, x) of every pixel in [-1, 1] over its whole photo (nets that
        `reads_coords`); None: the coordinates of `x` as a whole photo.
      pooled_context: `[B, C]` pooled bottleneck features to use instead of this input's own
        (bottleneck global context only); tiled inference passes the whole image's here.
      return_pooled_context: stop after the bottleneck and return its pooled features `[B, C]`.
      lut_only: return the global grade alone (exposure, colour head, then frame gain),
        without running the U-Net.
    """
    self._check_input(x)
    height, width = x.shape[1:3]
    context = None
    if self.reads_thumbnail and thumbnail is None:
      thumbnail = color_head_lib.resize_thumbnail(x, self.thumbnail_size)
    if self.reads_statistics and statistics is None:
      statistics = color_head_lib.photo_statistics(x)
    if self.color_head == 'adaptive_lut' or (self.global_context and self.thumbnail_context):
      encoder = color_head_lib.ThumbnailEncoder(dtype=self.dtype, name='thumbnail_encoder')
      context = encoder(thumbnail, statistics if self.thumbnail_stats else None)
    if self.reads_coords and coords is None:
      grid = color_head_lib.photo_coords(range(height), range(width), height, width)
      coords = jnp.broadcast_to(jnp.asarray(grid), (x.shape[0], height, width, 2))
    base = x.astype(jnp.float32)
    if self.exposure:
      exposure = color_head_lib.Exposure(self.exposure_range_ev, name='exposure')
      base = exposure(base, statistics)
    if self.color_head != 'none':
      head = color_head_lib.ColorHead(
        self.color_head, self.lut_size, self.lut_bases, self.lut_method, name='color_head'
      )
      base = head(base, context)
    if self.frame_gain:
      base = color_head_lib.FrameGain(self.frame_gain, name='frame_gain')(base, coords)
    if self.has_global_grade:
      self.sow('intermediates', 'global_grade', base)
    if lut_only:
      return base
    if self.unet_input == 'lut':
      x = base
    if self.coords:
      x = jnp.concatenate([x, coords.astype(x.dtype)], axis=-1)

    multiple = 2**self.levels
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='reflect')

    features = x.astype(self.dtype)
    skips = []
    for level in range(self.levels):
      if level > 0:
        features = layers.Downsample(self.down, self.dtype, name=f'down_{level}')(features)
        if self.multiscale_input:
          features = jnp.concatenate([features, _downscale(x, 2**level, self.dtype)], axis=-1)
      features = self._block(level, f'encoder_{level}')(features, train)
      skips.append(features)

    features = layers.Downsample(self.down, self.dtype, name=f'down_{self.levels}')(features)
    if self.multiscale_input:
      features = jnp.concatenate([features, _downscale(x, multiple, self.dtype)], axis=-1)
    features = self._block(self.levels, 'bottleneck')(features, train)
    if return_pooled_context:
      return layers.pool_features(features)
    if self.global_context:
      if self.thumbnail_context:
        pooled_context = context
      features = layers.GlobalContext(self.activation, self.dtype, name='global_context')(
        features, pooled_context
      )

    for level in reversed(range(self.levels)):
      features = layers.Upsample(self.channels(level), self.up, self.dtype, name=f'up_{level}')(
        features
      )
      if self.skip == 'concat':
        skip = skips[level]
        if self.attention_gates:
          gate = layers.AttentionGate(
            max(self.channels(level) // 2, 1), self.dtype, name=f'attention_{level}'
          )
          skip = gate(skip, features)
        features = jnp.concatenate([features, skip], axis=-1)
      features = self._block(level, f'decoder_{level}')(features, train)

    # The head runs in float32: the last layer and the output keep full precision.
    features = features.astype(jnp.float32)
    if self.head == 'segmentation':
      out = nn.Conv(self.num_classes, (1, 1), name='head')(features)
    elif self.residual:
      edit = nn.Conv(
        self.out_channels,
        (1, 1),
        kernel_init=nn.initializers.zeros,
        bias_init=nn.initializers.zeros,
        name='head',
      )(features)
      # The edit goes on top of the colour head's grade (the input itself without one).
      return base + edit[:, :height, :width, :]
    else:
      out = nn.Conv(self.out_channels, (1, 1), name='head')(features)
    return out[:, :height, :width, :]

  def _check_input(self, x: jax.Array) -> None:
    if x.ndim != 4:
      raise ValueError(
        f'UNet expects images shaped [B, H, W, C]; got an array of rank {x.ndim} '
        f'with shape {tuple(x.shape)}.'
      )
    if x.shape[-1] != self.in_channels:
      raise ValueError(
        f'UNet was built for {self.in_channels} input channels (model.in_channels) but got '
        f'{x.shape[-1]} channels in an input of shape {tuple(x.shape)}.'
      )


def _downscale(x: jax.Array, factor: int, dtype: Any) -> jax.Array:
  """Average-pools the input image by `factor` (the multi-scale input of each stage)."""
  return nn.avg_pool(x, (factor, factor), strides=(factor, factor)).astype(dtype)


def _check_choice(option: str, value: Any, choices: tuple) -> None:
  if value not in choices:
    raise ValueError(f'config.model.{option}={value!r} is not one of {list(choices)}.')


def validate_model_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the `config.model` option that cannot build a U-Net."""
  _check_choice('norm', model_config.norm, layers.NORMS)
  # .get: configs saved in workdirs before these options existed lack them.
  _check_choice('batch_norm', model_config.get('batch_norm', 'auto'), batch_norm.IMPLEMENTATIONS)
  _check_choice('activation', model_config.activation, tuple(layers.ACTIVATIONS))
  _check_choice('down', model_config.down, layers.DOWNS)
  _check_choice('up', model_config.up, layers.UPS)
  _check_choice('skip', model_config.skip, ('concat', 'none'))
  _check_choice('head', model_config.head, HEADS)
  _check_choice('dtype', model_config.dtype, tuple(DTYPES))
  _validate_color_head(model_config)
  for option in ('levels', 'base_channels', 'max_channels', 'in_channels', 'group_norm_groups'):
    if int(model_config[option]) < 1:
      raise ValueError(f'config.model.{option} must be >= 1; got {model_config[option]}.')
  if model_config.head == 'image' and model_config.out_channels < 1:
    raise ValueError(f'config.model.out_channels must be >= 1; got {model_config.out_channels}.')
  if model_config.head == 'segmentation':
    if model_config.num_classes < 2:
      raise ValueError(
        f'config.model.num_classes must be >= 2 for segmentation; got {model_config.num_classes}.'
      )
    if model_config.residual:
      raise ValueError(
        'config.model.residual=True needs the image head (output = input + edit); set '
        '--config.model.residual=False for config.model.head=segmentation.'
      )
  elif model_config.residual and model_config.out_channels != model_config.in_channels:
    raise ValueError(
      f'config.model.residual=True adds the input to the output, so out_channels '
      f'({model_config.out_channels}) must equal in_channels ({model_config.in_channels}).'
    )


def _validate_color_head(model_config: ml_collections.ConfigDict) -> None:
  _check_choice('color_head', model_config.color_head, color_head_lib.COLOR_HEADS)
  _check_choice('lut_method', model_config.lut_method, lut.METHODS)
  _check_choice('unet_input', model_config.unet_input, color_head_lib.UNET_INPUTS)
  _check_choice('global_context', model_config.global_context, options.GLOBAL_CONTEXTS)
  _check_choice('thumbnail', model_config.thumbnail, options.THUMBNAILS)
  if model_config.thumbnail == 'photo' and not (
    model_config.color_head == 'adaptive_lut'
    or model_config.global_context == 'thumbnail'
    or model_config.get('exposure', False)
  ):
    raise ValueError(
      "config.model.thumbnail='photo' feeds the global branch, and this model has none: "
      "set config.model.color_head='adaptive_lut', config.model.global_context='thumbnail' or "
      'config.model.exposure=True.'
    )
  stages = len(color_head_lib.ENCODER_CHANNELS)
  if model_config.thumbnail_size < 2**stages:
    raise ValueError(
      f'config.model.thumbnail_size must be >= {2**stages} (the thumbnail encoder halves it '
      f'{stages} times); got {model_config.thumbnail_size}.'
    )
  if model_config.get('thumbnail_stats', False) and not (
    model_config.color_head == 'adaptive_lut' or model_config.global_context == 'thumbnail'
  ):
    raise ValueError(
      "config.model.thumbnail_stats=True adds the thumbnail's figures to the context, and "
      "this model encodes no thumbnail: set config.model.color_head='adaptive_lut' or "
      "config.model.global_context='thumbnail'."
    )
  frame_gain = int(model_config.get('frame_gain', 0))
  if frame_gain == 1 or frame_gain < 0:
    raise ValueError(
      f'config.model.frame_gain must be 0 (off) or >= 2 lattice points a side; got {frame_gain}.'
    )
  if model_config.get('exposure', False):
    if model_config.thumbnail != 'photo':
      raise ValueError(
        "config.model.exposure=True meters the whole photo's thumbnail: it needs "
        "config.model.thumbnail='photo'."
      )
    if not model_config.get('exposure_range_ev', 2.0) > 0:
      raise ValueError(
        f'config.model.exposure_range_ev must be > 0; got {model_config.exposure_range_ev}.'
      )
  if not has_global_grade(model_config):
    if model_config.unet_input != 'input':
      raise ValueError(
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
  if model_config.head != 'image' or not model_config.residual:
    raise ValueError(
      f"config.model.{grade} grades colours under the U-Net's residual edit: it needs "
      'config.model.head=image and config.model.residual=True.'
    )
  if model_config.in_channels != 3 or model_config.out_channels != 3:
    raise ValueError(
      f'config.model.{grade} maps RGB to RGB: it needs in_channels=3 and out_channels=3; '
      f'got {model_config.in_channels} and {model_config.out_channels}.'
    )
  if model_config.color_head == 'none':
    return
  if model_config.lut_size < 2:
    raise ValueError(f'config.model.lut_size must be >= 2; got {model_config.lut_size}.')
  if model_config.lut_bases < 1:
    raise ValueError(f'config.model.lut_bases must be >= 1; got {model_config.lut_bases}.')


def has_global_grade(model: Any) -> bool:
  """Whether `model` (a `UNet` or its `config.model`) puts a global grade under the U-Net:
  an exposure, a colour head or a frame gain."""

  def option(name: str, default: Any) -> Any:
    if isinstance(model, ml_collections.ConfigDict):
      return model.get(name, default)
    return getattr(model, name, default)

  return (
    option('color_head', 'none') != 'none'
    or bool(option('frame_gain', 0))
    or bool(option('exposure', False))
  )


def create_model(model_config: ml_collections.ConfigDict) -> UNet:
  """Builds the `UNet` described by `config.model`, after checking every option."""
  validate_model_config(model_config)
  kwargs = dict(model_config)
  kwargs['dtype'] = DTYPES[model_config.dtype]
  # The module's fields: a bottleneck context, and whether it is the thumbnail encoder's. What
  # the training thumbnail shows (`thumbnail`) is the data pipeline's business.
  del kwargs['thumbnail']
  kwargs['global_context'] = model_config.global_context != 'none'
  kwargs['thumbnail_context'] = model_config.global_context == 'thumbnail'
  return UNet(**kwargs)


def count_params(params: Any) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))
