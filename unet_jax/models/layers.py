"""Building blocks of the U-Net: conv block, down- and up-sampling, attention gate."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax.models import batch_norm

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  'relu': nn.relu,
  'gelu': nn.gelu,
  'silu': nn.silu,
}


def _group_count(features: int, groups: int) -> int:
  """The largest count <= `groups` that divides `features` (GroupNorm needs a divisor)."""
  for count in range(min(groups, features), 0, -1):
    if features % count == 0:
      return count
  return 1


class Norm(nn.Module):
  """The normalisation chosen by name; BatchNorm keeps running statistics for eval."""

  kind: str = 'batch'
  groups: int = 8
  batch_norm: str = 'auto'  # options.BATCH_NORMS, read by batch_norm.implementation
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.kind == 'batch':
      norm = batch_norm.create(self.batch_norm, momentum=0.9, dtype=self.dtype)
      return norm(x, use_running_average=not train)
    if self.kind == 'group':
      groups = _group_count(x.shape[-1], self.groups)
      return nn.GroupNorm(num_groups=groups, dtype=self.dtype)(x)
    if self.kind == 'layer':
      return nn.LayerNorm(dtype=self.dtype)(x)
    return x


class ConvBlock(nn.Module):
  """2 x (3x3 conv -> norm -> activation), the U-Net's unit of work at one resolution."""

  features: int
  norm: str = 'batch'
  groups: int = 8
  batch_norm: str = 'auto'
  activation: str = 'relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    # `train` is positional so that `nn.remat(ConvBlock, static_argnums=(2,))` can keep it static.
    activation = ACTIVATIONS[self.activation]
    for i in range(2):
      # A bias before a normalisation that subtracts the mean is wasted parameters.
      x = nn.Conv(
        self.features,
        (3, 3),
        use_bias=self.norm == 'none',
        dtype=self.dtype,
        name=f'conv_{i}',
      )(x)
      x = Norm(self.norm, self.groups, self.batch_norm, self.dtype, name=f'norm_{i}')(
        x, train=train
      )
      x = activation(x)
    return x


class Downsample(nn.Module):
  """Halves H and W: 2x2 max-pool, or a learnt 4x4 convolution with stride 2."""

  kind: str = 'maxpool'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == 'maxpool':
      return max_pool_2x2(x)
    return nn.Conv(
      x.shape[-1], (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype, name='conv'
    )(x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H // 2, W // 2, C], the max of each 2x2 block (an odd last row or
  column is dropped, as by a VALID max-pool).

  Same values and gradients as `nn.max_pool(x, (2, 2), strides=(2, 2))` wherever a block has a
  single maximum (ties share the gradient instead of giving it to the first), but XLA:CPU
  lowers the reduce-window's gradient to a slow index-tracking select-and-scatter
  (BENCHMARKS.md); a reshape and a reduction differentiate into one cheap elementwise pass.
  """
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return _block_max(x.reshape(b, h // 2, 2, w // 2, 2, c))


@jax.custom_vjp
def _block_max(blocks: jax.Array) -> jax.Array:
  """Max over axes 2 and 4 of `[B, H/2, 2, W/2, 2, C]`."""
  return blocks.max(axis=(2, 4))


def _block_max_forward(blocks):
  pooled = _block_max(blocks)
  return pooled, (blocks, pooled)


def block_max_backward(residuals, cotangent):
  """The gradient to each block's maxima, shared among ties; never NaN.

  jnp.max's own gradient divides by the number of entries equal to the max. XLA may compute the
  pooled tensor's producer (a normalisation and activation) twice, in the reduction's fusion
  and in the comparison's, and two such copies can differ in the last bit (contracted into an
  FMA in one, not the other): then no entry equals the max and 0 / 0 made the whole gradient
  NaN (seen with XLA:CPU's unoptimised build). Here such a block gets no gradient instead.
  """
  blocks, pooled = residuals
  expand = lambda a: a[:, :, None, :, None, :]
  at_max = blocks == expand(pooled)
  count = jnp.maximum(jnp.sum(at_max, axis=(2, 4), dtype=cotangent.dtype), 1)
  return (jnp.where(at_max, expand(cotangent / count), 0).astype(blocks.dtype),)


_block_max.defvjp(_block_max_forward, block_max_backward)


def _upsample_axis_2x(x: jax.Array, axis: int) -> jax.Array:
  """Bilinear 2x along `axis` with half-pixel centres and clamped edges.

  Output 2i samples the input at i - 1/4 and 2i + 1 at i + 1/4, so the weights are fixed:
  3/4 of the nearest input pixel plus 1/4 of its neighbour on that side (itself at the edge).
  """
  n = x.shape[axis]
  before = jnp.concatenate([_slice(x, 0, 1, axis), _slice(x, 0, n - 1, axis)], axis=axis)
  after = jnp.concatenate([_slice(x, 1, n, axis), _slice(x, n - 1, n, axis)], axis=axis)
  even = 0.75 * x + 0.25 * before
  odd = 0.75 * x + 0.25 * after
  shape = list(x.shape)
  shape[axis] = 2 * n
  return jnp.stack([even, odd], axis=axis + 1).reshape(shape)


def _slice(x: jax.Array, start: int, stop: int, axis: int) -> jax.Array:
  return jax.lax.slice_in_dim(x, start, stop, axis=axis)


def upsample_bilinear_2x(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], equal to `jax.image.resize(..., 'bilinear')` up to rounding.

  `jax.image.resize` builds its interpolation weights at run time and applies them as dense
  [2H, H] and [2W, W] matrix products; at a fixed factor of 2 the weights are constants and a
  shifted sum does the same work in a fused elementwise pass, forward and backward.
  """
  return _upsample_axis_2x(_upsample_axis_2x(x, 1), 2)


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """[B, H, W, C * block**2] -> [B, H * block, W * block, C] (pixel shuffle)."""
  b, h, w, c = x.shape
  channels = c // (block * block)
  x = x.reshape(b, h, w, block, block, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, channels)


def _icnr_init(base_init: Callable, block: int) -> Callable:
  """Initialises a pixel-shuffle conv so its output starts as nearest-neighbour upsampling.

  Every sub-pixel position gets the same kernel, which removes the checkerboard pattern a
  freshly initialised pixel shuffle otherwise produces (Aitken et al., 2017, "ICNR").
  """

  def init(key, shape, dtype=jnp.float32):
    *spatial, in_features, out_features = shape
    sub = base_init(key, (*spatial, in_features, out_features // (block * block)), dtype)
    return jnp.repeat(sub, block * block, axis=-1)

  return init


class Upsample(nn.Module):
  """Doubles H and W and maps to `features` channels.

  bilinear: resize then 3x3 conv (smooth, no checkerboard); transposed: 4x4 transposed conv with
  stride 2 (learnt, prone to checkerboard artifacts); pixel_shuffle: 3x3 conv to 4x channels,
  then depth-to-space, initialised with ICNR.
  """

  features: int
  kind: str = 'bilinear'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == 'bilinear':
      x = upsample_bilinear_2x(x)
      return nn.Conv(self.features, (3, 3), dtype=self.dtype, name='conv')(x)
    if self.kind == 'transposed':
      return nn.ConvTranspose(
        self.features, (4, 4), strides=(2, 2), padding='SAME', dtype=self.dtype, name='conv'
      )(x)
    kernel_init = _icnr_init(nn.initializers.lecun_normal(), 2)
    x = nn.Conv(self.features * 4, (3, 3), kernel_init=kernel_init, dtype=self.dtype, name='conv')(
      x
    )
    return depth_to_space(x, 2)


class AttentionGate(nn.Module):
  """Additive attention on a skip connection (Oktay et al., 2018, "Attention U-Net").

  The decoder's features (the gating signal) decide, per pixel, how much of the encoder's skip
  features to let through: skip * sigmoid(psi(relu(W_x skip + W_g gate))).
  """

  inter_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, skip: jax.Array, gate: jax.Array) -> jax.Array:
    theta = nn.Conv(self.inter_features, (1, 1), use_bias=False, dtype=self.dtype, name='skip')
    phi = nn.Conv(self.inter_features, (1, 1), dtype=self.dtype, name='gate')
    psi = nn.Conv(1, (1, 1), dtype=self.dtype, name='psi')
    weights = nn.sigmoid(psi(nn.relu(theta(skip) + phi(gate))))
    return skip * weights


class GlobalContext(nn.Module):
  """Adds an image-wide vector to every bottleneck pixel: mean-pool, then a small MLP.

  Exposure- and scene-dependent edits need to see the whole image, which 3x3 convolutions at the
  bottleneck do not. The pooled vector can be given from outside (`pooled`) so that tiled
  inference shares one context, computed over the whole image, between all tiles.
  """

  activation: str = 'relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, pooled: jax.Array | None = None) -> jax.Array:
    features = x.shape[-1]
    if pooled is None:
      pooled = pool_features(x)
    hidden = nn.Dense(features, dtype=self.dtype, name='dense_0')(pooled)
    hidden = ACTIVATIONS[self.activation](hidden)
    context = nn.Dense(features, dtype=self.dtype, name='dense_1')(hidden)
    return x + context[:, None, None, :].astype(x.dtype)


def pool_features(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C] spatial mean, accumulated in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
