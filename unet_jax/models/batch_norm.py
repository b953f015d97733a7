"""BatchNorm for the U-Net: `flax.linen.BatchNorm`, or on CPU one whose sums are matrix products.

`GemmBatchNorm` is a drop-in for `flax.linen.BatchNorm` as the U-Net uses it (features last,
momentum 0.9, epsilon 1e-5): the same variables (`params`: `scale`, `bias`; `batch_stats`:
`mean`, `var`) under the same name, so a checkpoint trained with either loads into the other and
the PyTorch reference reads both. The difference is how it computes: XLA:CPU runs the reductions
over B x H x W that BatchNorm and its autodiff gradient need far below memory bandwidth, and each
reduction fusion recomputes its producers (BENCHMARKS.md). Here every per-channel sum is
`ones @ x[N, C]`, which XLA hands to its GEMM kernels, and the gradient is written out by hand:
two such sums instead of the several reductions of autodiff. The variance is two-pass (the mean
first), so a large mean does not cancel it away.

It was measured faster on XLA:CPU only; GPU and TPU compilers fuse these reductions well, so
`implementation('auto')` picks it on CPU and `flax.linen.BatchNorm` everywhere else.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax.options import BATCH_NORMS

EPSILON = 1e-5


# The variables' scope in both implementations, so checkpoints do not depend on the choice.
NAME = 'BatchNorm_0'


def implementation(choice: str, platform: str | None = None) -> str:
  """'gemm' or 'flax': what `choice` means on `platform` (default: jax's default backend)."""
  if choice not in BATCH_NORMS:
    raise ValueError(f'config.model.batch_norm={choice!r} is not one of {list(BATCH_NORMS)}.')
  if choice != 'auto':
    return choice
  return 'gemm' if (platform or jax.default_backend()) == 'cpu' else 'flax'


def create(choice: str, *, momentum: float, dtype: Any) -> nn.Module:
  """The BatchNorm `choice` resolves to on the default backend, named `NAME`."""
  if implementation(choice) == 'gemm':
    return GemmBatchNorm(momentum=momentum, dtype=dtype, name=NAME)
  # Two-pass variance, like GemmBatchNorm: a large mean does not cancel a small spread away.
  return nn.BatchNorm(
    momentum=momentum, epsilon=EPSILON, dtype=dtype, use_fast_variance=False, name=NAME
  )


def _channel_sum(x: jax.Array) -> jax.Array:
  """[N, C] -> [C] as a matrix product, accumulated in float32 (no float32 copy of `x`)."""
  return jnp.matmul(jnp.ones((x.shape[0],), x.dtype), x, preferred_element_type=jnp.float32)


def _statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and (biased) variance `[C]` of `x` `[N, C]`, in float32."""
  mean = _channel_sum(x) / x.shape[0]
  var = _channel_sum(jnp.square(x.astype(jnp.float32) - mean)) / x.shape[0]
  return mean, var


@jax.custom_vjp
def _normalize(x: jax.Array, scale: jax.Array, bias: jax.Array) -> tuple[jax.Array, ...]:
  """Batch-normalises `x` `[N, C]`; returns (y, batch mean, batch variance)."""
  return _normalize_forward(x, scale, bias)[0]


def _normalize_forward(x, scale, bias):
  mean, var = _statistics(x)
  inv_std = jax.lax.rsqrt(var + EPSILON)
  y = ((x.astype(jnp.float32) - mean) * (inv_std * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, mean, inv_std, scale)


def _normalize_backward(residuals, cotangents):
  # The statistics are outputs only for the running averages, which take no gradient.
  x, mean, inv_std, scale = residuals
  dy = cotangents[0].astype(jnp.float32)
  x_hat = (x.astype(jnp.float32) - mean) * inv_std
  n = x.shape[0]
  d_bias = _channel_sum(dy)
  d_scale = _channel_sum(dy * x_hat)
  dx = (scale * inv_std) * (dy - (d_bias + x_hat * d_scale) / n)
  return dx.astype(x.dtype), d_scale, d_bias


_normalize.defvjp(_normalize_forward, _normalize_backward)


class GemmBatchNorm(nn.Module):
  """Normalises `[..., C]` over every axis but the last; running statistics for eval."""

  momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, use_running_average: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    if use_running_average:
      inv_std = jax.lax.rsqrt(ra_var.value + EPSILON)
      y = (x.astype(jnp.float32) - ra_mean.value) * (inv_std * scale) + bias
      return y.astype(self.dtype)
    y, mean, var = _normalize(x.reshape(-1, features), scale, bias)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.reshape(x.shape).astype(self.dtype)
