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
from unet_jax import whole_photo as whole_photo_lib
from unet_jax.models import auto_levels, global_grade, layers, local_affine, tone_curves
from unet_jax.models import thumbnail as thumbnail_lib


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
  # The global grade (models/global_grade.py) and the whole-photo inputs (whole_photo.py).
  color_head: str = 'none'
  lut_size: int = 17
  lut_bases: int = 3
  lut_method: str = 'auto'
  unet_input: str = 'input'
  thumbnail_context: bool = False
  thumbnail: str = 'crop'  # what training thumbnails show; predict always gives the photo's
  thumbnail_size: int = 64
  thumbnail_stats: bool = False
  coords: bool = False
  frame_gain: int = 0
  exposure: bool = False
  exposure_range_ev: float = 2.0
  auto_levels: bool = False
  auto_levels_offset: bool = False
  curves: int = 0
  local_grid: int = 0
  local_grid_statistics: bool = False
  local_grid_extremes: bool = False
  local_grid_detail: bool = False

  @property
  def whole_photo(self) -> whole_photo_lib.WholePhotoInputs:
    """The whole-photo inputs this net reads (thumbnail, metering statistics, coordinates)."""
    return whole_photo_lib.WholePhotoInputs.from_model_config(self)

  @property
  def has_global_grade(self) -> bool:
    """Whether a global grade (exposure, colour head, frame gain) sits under the U-Net."""
    return global_grade.has_global_grade(self)

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
      statistics: `[B, F]` figures of those whole photos (`whole_photo.photo_figures`), read
        by nets with `thumbnail_stats`, `exposure`, `auto_levels` or `curves`; None: the
        figures of `x` itself.
      coords: `[B, H, W, 2]` (y, x) of every pixel in [-1, 1] over its whole photo (nets whose
        `whole_photo.coords` is set); None: the coordinates of `x` as a whole photo.
      pooled_context: `[B, C]` pooled bottleneck features to use instead of this input's own
        (bottleneck global context only); tiled inference passes the whole image's here.
      return_pooled_context: stop after the bottleneck and return its pooled features `[B, C]`.
      lut_only: return the grade under the U-Net alone (auto levels, exposure, tone curves,
        colour head, local affine grid, frame gain: those set), without running the U-Net.

    The global grade is computed first: the U-Net's edit goes on top of it, and with
    `unet_input='lut'` the U-Net reads it. Then encoder, bottleneck (with the global context),
    decoder with the skips, and the head.
    """
    self._check_input(x)
    height, width = x.shape[1:3]
    thumbnail, statistics, coords = self.whole_photo.fill_in(x, thumbnail, statistics, coords)
    context = self._thumbnail_context(thumbnail, statistics)
    base = self._global_grade(x, context, thumbnail, statistics, coords)
    if lut_only:
      return base
    x = base if self.unet_input == 'lut' else x
    if self.coords:
      x = jnp.concatenate([x, coords.astype(x.dtype)], axis=-1)
    x = self._pad(x)

    features, skips = self._encoder(x, train)
    features = self._bottleneck(features, x, train)
    if return_pooled_context:
      return layers.pool_features(features)
    if self.global_context:
      shared = context if self.thumbnail_context else pooled_context
      features = layers.GlobalContext(self.activation, self.dtype, name='global_context')(
        features, shared
      )
    features = self._decoder(features, skips, train)
    return self._head(features, base)[:, :height, :width, :]

  # The parts of `__call__`, in the order they run. Each names its layers explicitly, so the
  # parameter tree is the same as when they were inline (checkpoints load).

  def _thumbnail_context(
    self, thumbnail: jax.Array | None, statistics: jax.Array | None
  ) -> jax.Array | None:
    """`[B, C]`: the thumbnail encoder's vector, for the adaptive LUT's weights and the
    thumbnail global context; None when neither is used."""
    if not (self.color_head == 'adaptive_lut' or (self.global_context and self.thumbnail_context)):
      return None
    encoder = thumbnail_lib.ThumbnailEncoder(dtype=self.dtype, name='thumbnail_encoder')
    return encoder(thumbnail, statistics if self.thumbnail_stats else None)

  def _global_grade(
    self,
    x: jax.Array,
    context: jax.Array | None,
    thumbnail: jax.Array | None,
    statistics: jax.Array | None,
    coords: jax.Array | None,
  ) -> jax.Array:
    """The grade under the U-Net's edit, in float32: auto levels, exposure, tone curves, colour
    head, local affine grid, frame gain (those set); `x` itself without any. Sown as
    `intermediates/global_grade` (and the auto levels' output as `intermediates/levelled`) for
    the train step's losses on them.

    The colour parts come first and the frame parts (grid, gain) last: the colour parts map each
    colour alike wherever it sits, so their output (sown as `intermediates/colour_grade`) is one
    colour table per photo, which the preview bakes (`inference/preview.py`)."""
    base = x.astype(jnp.float32)
    if self.auto_levels:
      levels = auto_levels.AutoLevels(self.auto_levels_offset, name='auto_levels')
      base = levels(base, statistics)
      self.sow('intermediates', 'levelled', base)
    if self.exposure:
      base = global_grade.Exposure(self.exposure_range_ev, name='exposure')(base, statistics)
    if self.curves:
      base = tone_curves.ToneCurves(self.curves, name='tone_curves')(base, statistics)
    if self.color_head != 'none':
      head = global_grade.ColorHead(
        self.color_head, self.lut_size, self.lut_bases, self.lut_method, name='color_head'
      )
      base = head(base, context)
    if self.has_global_grade:
      self.sow('intermediates', 'colour_grade', base)
    if self.local_grid:
      grid = local_affine.LocalAffine(
        self.local_grid,
        statistics=self.local_grid_statistics,
        extremes=self.local_grid_extremes,
        detail=self.local_grid_detail,
        name='local_affine',
      )
      base = grid(base, thumbnail, coords, x)
    if self.frame_gain:
      base = global_grade.FrameGain(self.frame_gain, name='frame_gain')(base, coords)
    if self.has_global_grade:
      self.sow('intermediates', 'global_grade', base)
    return base

  def _pad(self, x: jax.Array) -> jax.Array:
    """Reflect-pads H and W up to a multiple of 2**levels (the output is cropped back)."""
    multiple = 2**self.levels
    pad_h, pad_w = (-x.shape[1]) % multiple, (-x.shape[2]) % multiple
    if pad_h or pad_w:
      x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode='reflect')
    return x

  def _encoder(self, x: jax.Array, train: bool) -> tuple[jax.Array, list[jax.Array]]:
    """The encoder stages; returns the last stage's features and every stage's (the skips)."""
    features = x.astype(self.dtype)
    skips = []
    for level in range(self.levels):
      if level > 0:
        features = layers.Downsample(self.down, self.dtype, name=f'down_{level}')(features)
        if self.multiscale_input:
          features = jnp.concatenate([features, _downscale(x, 2**level, self.dtype)], axis=-1)
      features = self._block(level, f'encoder_{level}')(features, train)
      skips.append(features)
    return features, skips

  def _bottleneck(self, features: jax.Array, x: jax.Array, train: bool) -> jax.Array:
    multiple = 2**self.levels
    features = layers.Downsample(self.down, self.dtype, name=f'down_{self.levels}')(features)
    if self.multiscale_input:
      features = jnp.concatenate([features, _downscale(x, multiple, self.dtype)], axis=-1)
    return self._block(self.levels, 'bottleneck')(features, train)

  def _decoder(self, features: jax.Array, skips: list[jax.Array], train: bool) -> jax.Array:
    """Up-samples level by level, joining each encoder stage's features (concat skips)."""
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
    return features

  def _head(self, features: jax.Array, base: jax.Array) -> jax.Array:
    """The 1x1 output layer, in float32 (the last layer and the output keep full precision).
    With `residual`, its edit (zero at init) goes on top of the global grade `base`."""
    features = features.astype(jnp.float32)
    if self.head == 'segmentation':
      return nn.Conv(self.num_classes, (1, 1), name='head')(features)
    if not self.residual:
      return nn.Conv(self.out_channels, (1, 1), name='head')(features)
    zeros = nn.initializers.zeros
    edit = nn.Conv(self.out_channels, (1, 1), kernel_init=zeros, bias_init=zeros, name='head')(
      features
    )
    return base + edit[:, : base.shape[1], : base.shape[2], :]

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


def create_model(model_config: ml_collections.ConfigDict, *, task: str) -> UNet:
  """Builds the `UNet` described by `config.model` for `config.task`, which picks the output head;
  `validation.validate_config` (or `validation.validate_model_config`) checks the options first,
  once, naming a bad one."""
  kwargs = dict(model_config, head=options.output_head(task))
  kwargs['dtype'] = jnp.dtype(model_config.dtype)
  # The module's fields: a bottleneck context, and whether it is the thumbnail encoder's.
  kwargs['global_context'] = model_config.global_context != 'none'
  kwargs['thumbnail_context'] = model_config.global_context == 'thumbnail'
  return UNet(**kwargs)


def count_params(params: Any) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))
