"""The thumbnail encoder: what the global branch reads of the whole photo, as one vector."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# The CNN's channels per stride-2 stage; a 64 px thumbnail ends at 4 x 4 before pooling.
ENCODER_CHANNELS = (16, 32, 64, 128)


class ThumbnailEncoder(nn.Module):
  """`[B, T, T, 3]` thumbnail -> `[B, C]` context vector: stride-2 3x3 convs, then the mean,
  and `statistics [B, F]` (the photo's `whole_photo.photo_figures`) after them when given.

  No batch statistics, so a photo's vector is the same whatever it is batched with, and the
  same in training and at predict time.
  """

  channels: tuple[int, ...] = ENCODER_CHANNELS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, thumbnail: jax.Array, statistics: jax.Array | None = None) -> jax.Array:
    features = thumbnail.astype(self.dtype)
    for i, channels in enumerate(self.channels):
      features = nn.Conv(channels, (3, 3), strides=(2, 2), dtype=self.dtype, name=f'conv_{i}')(
        features
      )
      features = nn.leaky_relu(features, 0.2)
      if i > 0:
        features = nn.LayerNorm(dtype=self.dtype, name=f'norm_{i}')(features)
    context = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    if statistics is not None:
      context = jnp.concatenate([context, statistics.astype(jnp.float32)], axis=1)
    return context
