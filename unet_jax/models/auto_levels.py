"""Image-adaptive levels: a black point, a white point, a gamma and a gain per channel, each
chosen per photo from its own histogram, as an editor's auto tools choose them.

ImageMagick's `-auto-level -auto-gamma`, Photoshop's auto tone or a grey-world white balance
set a handful of numbers per photo by a simple rule of its histogram: the darkest and brightest
values become black and white, the gamma brings the mean to a target, each channel's gain
brings the channel means together. The rule is fixed, the numbers are the photo's. A network
that predicts curve knots from the histogram must learn ratios and logarithms to match such a
rule; here the rules are linear in what the stage reads, so fitting a few weights recovers them
(`experiments/levels_fit.py` fits the stage alone on a look's pairs):

- black and white points: linear in each channel's quantiles and in their minimum and maximum
  over the channels (auto levels: the minimum of the darkest values, weight 1);
- the gain: its log is linear in the log channel means and their minimum, mean and maximum,
  over all pixels and over the neutral ones (`whole_photo.neutral_means`; OpenCV's grey world:
  the smallest neutral mean minus the channel's own);
- the gamma: its log is linear in `log(-log u)` of each channel's levelled mean `u` and of
  the three's mean (auto gamma, which brings that mean to 0.5: weight -1, bias log log 2).

The weights are shared by the three channels (each reads its own figures) with a bias per
channel. All start at zero: an untrained stage is the identity.

With `offset`, a learned per-channel shift follows, in steps of an 8-bit file: editors that
write 8-bit results by truncating (OpenCV's fixed-point `>> 8`, ImageMagick's `-auto-level
-auto-gamma` as measured) lower every value by half a step on average, which a stage that
rounds its output to the file pays for as a whole step on half the pixels.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax import whole_photo

# The narrowest black-to-white range a photo is stretched from (a flat photo is not blown up).
_MIN_RANGE = 1e-2
# How many quantiles at each end of `whole_photo.TONE_QUANTILES` the points read (0-5 %,
# 95-100 %).
_TAIL = 6
# Levelled means are kept this far inside (0, 1), where log(-log u) is finite.
_MEAN_MARGIN = 1e-4
# The smallest levelled value raised to the gamma (0 ** gamma has no finite gradient).
_TINY = 1e-12
# The offset's unit: one step of an 8-bit file, so the optimiser's steps are a fraction of one.
_FILE_STEP = 1.0 / 255.0


class AutoLevels(nn.Module):
  """Levels `[B, H, W, 3]` colours in [0, 1] by each photo's `figures [B, F]` (with tones,
  `whole_photo.photo_figures`): `clip(gain * clip((x - black) / (white - black)) ** gamma
  + offset)` per channel (`offset` 0 unless set). The points, gammas and gains applied are sown
  as `intermediates/auto_levels`."""

  offset: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, figures: jax.Array) -> jax.Array:
    # [B, 3, Q], [B, 3], [B, 3]
    quantiles, means, neutral_means = whole_photo.tone_parts(figures.astype(jnp.float32))
    # Black from the dark end of the histogram, white from the bright end: each channel's own
    # quantiles beside the darkest (for black) or brightest (for white) of the three. The white
    # point reads `q - 1`, so both are the identity at zero weights without a bias to learn.
    dark, bright = quantiles[..., :_TAIL], quantiles[..., -_TAIL:] - 1.0
    dark = jnp.concatenate([dark, _broadcast_channels(dark.min(1))], -1)
    bright = jnp.concatenate([bright, _broadcast_channels(bright.max(1))], -1)
    black = _Shared(1, name='black')(dark)[..., 0]
    white = 1.0 + _Shared(1, name='white')(bright)[..., 0]
    span = jnp.maximum(white - black, _MIN_RANGE)

    log_neutral, log_all = (jnp.log(jnp.maximum(m, _TINY)) for m in (neutral_means, means))
    # The two sets of means differ on photos with large strongly coloured parts only: read as
    # the neutral ones and the difference, a fit starts from the neutral ones and the two do not
    # compete for the same weight.
    neutral, every = _with_pooled(log_neutral), _with_pooled(log_all)
    gain = jnp.exp(_Shared(1, name='gain')(jnp.concatenate([neutral, every - neutral], -1))[..., 0])

    levelled = (means - black) / span
    both = jnp.stack([levelled, jnp.broadcast_to(levelled.mean(1, keepdims=True), means.shape)], -1)
    both = jnp.clip(both, _MEAN_MARGIN, 1.0 - _MEAN_MARGIN)
    gamma = jnp.exp(_Shared(1, name='gamma')(jnp.log(-jnp.log(both)))[..., 0])

    self.sow('intermediates', 'auto_levels', jnp.stack([black, white, gamma, gain], -1))
    per_pixel = [v[:, None, None, :] for v in (black, span, gamma, gain)]
    black, span, gamma, gain = per_pixel
    values = jnp.clip((images.astype(jnp.float32) - black) / span, _TINY, 1.0)
    levelled = gain * jnp.exp(gamma * jnp.log(values))
    if self.offset:
      levelled = levelled + _FILE_STEP * self.param('offset', nn.initializers.zeros, (3,))
    return jnp.clip(levelled, 0.0, 1.0)


def _broadcast_channels(pooled: jax.Array) -> jax.Array:
  """`[B, F]` -> `[B, 3, F]`: the same figures for each channel."""
  return jnp.broadcast_to(pooled[:, None, :], (pooled.shape[0], 3, pooled.shape[1]))


def _with_pooled(figure: jax.Array) -> jax.Array:
  """`[B, 3]` -> `[B, 3, 4]`: each channel's figure beside the mean, minimum and maximum of the
  three."""
  pooled = jnp.stack([figure.mean(1), figure.min(1), figure.max(1)], -1)[:, None, :]
  return jnp.concatenate([figure[..., None], jnp.broadcast_to(pooled, (*figure.shape, 3))], -1)


class _Shared(nn.Module):
  """A zero-initialised linear map of each channel's `[B, 3, F]` figures to `[B, 3, outputs]`,
  its weights shared by the channels and a bias per channel."""

  outputs: int

  @nn.compact
  def __call__(self, figures: jax.Array) -> jax.Array:
    zeros = nn.initializers.zeros
    mapped = nn.Dense(self.outputs, use_bias=False, kernel_init=zeros, name='linear')(figures)
    return mapped + self.param('channel_bias', zeros, (3, self.outputs))
