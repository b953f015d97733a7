"""Image-adaptive tone curves: one curve per channel, read off each photo's own histogram.

An editor's auto levels, auto gamma or grey-world white balance sets a per-channel curve from
the photo it grades: the same tool gives every photo another curve. A fixed table learns the
average of those curves, which fits no photo (experiments/results/editor_looks.md), so here a
small network maps the whole photo's figures (`whole_photo.photo_figures` with tones: metering
and each channel's quantiles) to the curves. As in SepLUT (Yang et al., ECCV 2022) and CURL
(Moran et al., ICPR 2020), the 1D curves come before any 3D table.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# The hidden width of the network that reads the figures.
HIDDEN = 64


class ToneCurves(nn.Module):
  """Grades `[B, H, W, 3]` colours in [0, 1] with `[B, 3, knots]` curves predicted from each
  photo's `figures [B, F]`: piecewise linear between `knots` evenly spaced input values.

  The curves are the identity plus an offset from two paths: a linear map of the figures (black
  and white points are linear in the quantiles, and a linear map extrapolates sanely to photos
  unlike the training ones) and a two-layer network for the rest (a gamma from a mean). Both end
  in zero-initialised layers, so an untrained model leaves photos as they are. The curves
  applied are sown as `intermediates/tone_curves` for the train step's regularisers.
  """

  knots: int = 16

  @nn.compact
  def __call__(self, images: jax.Array, figures: jax.Array) -> jax.Array:
    figures = figures.astype(jnp.float32)
    outputs = 3 * self.knots
    zeros = nn.initializers.zeros
    linear = nn.Dense(outputs, kernel_init=zeros, bias_init=zeros, name='linear')(figures)
    hidden = nn.gelu(nn.Dense(HIDDEN, name='hidden_0')(figures))
    hidden = nn.gelu(nn.Dense(HIDDEN, name='hidden_1')(hidden))
    nonlinear = nn.Dense(outputs, kernel_init=zeros, bias_init=zeros, name='nonlinear')(hidden)
    grid = jnp.linspace(0.0, 1.0, self.knots, dtype=jnp.float32)
    curves = grid + (linear + nonlinear).reshape(-1, 3, self.knots)
    self.sow('intermediates', 'tone_curves', curves)
    return apply_curves(curves, images)


def apply_curves(curves: jax.Array, images: jax.Array) -> jax.Array:
  """`curves [B, 3, K]` (outputs at K evenly spaced inputs over [0, 1]) applied to each channel
  of `images [B, H, W, 3]`, linearly between knots; inputs are clipped to [0, 1]."""
  batch, height, width, channels = images.shape
  knots = curves.shape[-1]
  values = jnp.clip(images.astype(jnp.float32), 0.0, 1.0).reshape(batch, -1, channels)
  values = jnp.swapaxes(values, 1, 2)  # [B, 3, N]
  scaled = values * (knots - 1)
  lower = jnp.clip(jnp.floor(scaled), 0, knots - 2)
  frac = scaled - lower
  index = lower.astype(jnp.int32)
  below = jnp.take_along_axis(curves, index, axis=2)
  above = jnp.take_along_axis(curves, index + 1, axis=2)
  graded = below + frac * (above - below)
  return jnp.swapaxes(graded, 1, 2).reshape(batch, height, width, channels)
