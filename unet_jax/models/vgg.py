"""Frozen ImageNet VGG16/VGG19 feature extractors for perceptual losses and LPIPS.

Networks only; their pretrained weights come from `unet_jax.pretrained.load_vgg_params`.

  params = pretrained.load_vgg_params('vgg16')
  features = VGG16().apply({'params': params}, images)  # {'relu1_2': [B, H, W, 64], ...}
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WIDTHS = (64, 128, 256, 512, 512)
BLOCK_DEPTHS = {'vgg16': (2, 2, 3, 3, 3), 'vgg19': (2, 2, 4, 4, 4)}
# The last ReLU of each block: what perceptual losses and LPIPS compare.
LAYERS = {
  network: tuple(f'relu{block + 1}_{depth}' for block, depth in enumerate(depths))
  for network, depths in BLOCK_DEPTHS.items()
}
# Each block's output is tagged with this name, for `jax.checkpoint` policies that keep only them.
BLOCK_OUTPUT = 'vgg_block_output'


class _FrozenConv3x3(nn.Module):
  """A 3x3 'same' convolution whose parameters receive no gradient."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel', nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    kernel, bias = jax.lax.stop_gradient((kernel, bias))
    y = jax.lax.conv_general_dilated(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      window_strides=(1, 1),
      padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    return y + bias.astype(self.dtype)


class VGG(nn.Module):
  """VGG convolutional trunk up to the last ReLU of block 5 (no final pool, no classifier).

  Input `[B, H, W, 3]` RGB in [0, 1]; ImageNet mean/std normalisation happens inside. Returns
  `{'relu1_2': [B, H, W, 64], 'relu2_2': [B, H/2, W/2, 128], ...}`, shallow to deep. Parameters are
  wrapped in `stop_gradient`, so the network stays frozen inside any loss; gradients still flow to
  the input. Parameter names (`conv1_1` ... `conv5_3`) follow the usual VGG layer names.
  """

  block_depths: tuple[int, ...] = BLOCK_DEPTHS['vgg16']
  normalize: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    x = images.astype(jnp.float32)
    if self.normalize:
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    x = x.astype(self.dtype)
    features = {}
    for block, (depth, width) in enumerate(zip(self.block_depths, WIDTHS, strict=True), start=1):
      if block > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for layer in range(1, depth + 1):
        x = nn.relu(_FrozenConv3x3(width, dtype=self.dtype, name=f'conv{block}_{layer}')(x))
      x = checkpoint_name(x, BLOCK_OUTPUT)
      features[f'relu{block}_{depth}'] = x
    return features


class VGG16(VGG):
  """VGG16 features `relu1_2, relu2_2, relu3_3, relu4_3, relu5_3` (see `VGG`)."""

  block_depths: tuple[int, ...] = BLOCK_DEPTHS['vgg16']


class VGG19(VGG):
  """VGG19 features `relu1_2, relu2_2, relu3_4, relu4_4, relu5_4` (see `VGG`)."""

  block_depths: tuple[int, ...] = BLOCK_DEPTHS['vgg19']


def create_vgg(network: str = 'vgg16', dtype: Any = jnp.float32) -> VGG:
  check_network(network)
  return (VGG16 if network == 'vgg16' else VGG19)(dtype=dtype)


def param_shapes(network: str = 'vgg16') -> dict[str, tuple[int, ...]]:
  """Flat `{'conv1_1/kernel': (3, 3, 3, 64), 'conv1_1/bias': (64,), ...}` in layer order."""
  check_network(network)
  shapes, channels = {}, 3
  for block, (depth, width) in enumerate(zip(BLOCK_DEPTHS[network], WIDTHS, strict=True), 1):
    for layer in range(1, depth + 1):
      shapes[f'conv{block}_{layer}/kernel'] = (3, 3, channels, width)
      shapes[f'conv{block}_{layer}/bias'] = (width,)
      channels = width
  return shapes


def check_network(network: str) -> None:
  if network not in BLOCK_DEPTHS:
    raise ValueError(f'Unknown VGG network {network!r}; expected one of {sorted(BLOCK_DEPTHS)}.')
