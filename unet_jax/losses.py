"""Losses in pure jnp. Images are `[B, H, W, C]` in [0, 1]; every loss returns a float32 scalar.

Each image loss is `loss(pred, target) -> scalar`, 0 (its minimum) when `pred == target`, and
computes in float32 whatever the input dtype. `combined` weights them as `config.loss` says; the
default is the seed's `l1 + 0.1 * perceptual + 0.1 * (1 - ssim)`. Segmentation losses take logits
`[B, H, W, K]` and integer labels `[B, H, W]`, ignoring pixels labelled `ignore_label`.

The perceptual loss needs the frozen VGG weights: get them once with `load_loss_params` and pass
them to the jitted step as an argument (closing over 60 MB of constants slows compilation).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from unet_jax import metrics, pretrained
from unet_jax.models import global_grade, lut, vgg

IMAGE_TERMS = ('l1', 'l2', 'charbonnier', 'ssim', 'ms_ssim', 'perceptual')
SEGMENTATION_TERMS = ('cross_entropy', 'dice')
# Regularisers of what the global grade sows (`intermediates/.../<name>`), each weighted by
# `config.loss.<term>`: term -> (sown name, function of one sown array). The LUT's are Zeng et
# al.'s smoothness and monotonicity and a curvature prior; the frame gain's lattice has its own
# curvature, so the frame's edges, which crops seldom reach, follow its middle.
SOWN_REGULARISERS = {
  'lut_smoothness': ('lut', lut.smoothness),
  'lut_curvature': ('lut', lut.curvature),
  'lut_monotonicity': ('lut', lut.monotonicity),
  'frame_gain_curvature': ('frame_gain', global_grade.frame_curvature),
}


def _f32(*arrays: jax.Array) -> tuple[jax.Array, ...]:
  return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error."""
  pred, target = _f32(pred, target)
  return jnp.mean(jnp.abs(pred - target))


def l2(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error."""
  pred, target = _f32(pred, target)
  return jnp.mean(jnp.square(pred - target))


def charbonnier(pred: jax.Array, target: jax.Array, epsilon: float = 1e-3) -> jax.Array:
  """Mean of `sqrt(d^2 + eps^2) - eps`: L1-like but smooth at 0.

  Subtracting `eps` changes no gradient and makes identical images score exactly 0.
  """
  pred, target = _f32(pred, target)
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + epsilon**2) - epsilon)


def ssim(pred: jax.Array, target: jax.Array) -> jax.Array:
  """`1 - SSIM`, averaged over the batch (Gaussian window 11, sigma 1.5, data range 1)."""
  return 1.0 - jnp.mean(metrics.ssim(pred, target))


def ms_ssim(pred: jax.Array, target: jax.Array) -> jax.Array:
  """`1 - MS-SSIM`, averaged over the batch."""
  return 1.0 - jnp.mean(metrics.ms_ssim(pred, target))


# ----------------------------------------------------------------------------- perceptual


def _layer_weights(network: str, layer_weights: Sequence[float] | None) -> tuple[float, ...]:
  layers = vgg.LAYERS[network]
  if layer_weights is None:
    return (1.0 / len(layers),) * len(layers)
  if len(layer_weights) != len(layers):
    raise ValueError(
      f'perceptual_layer_weights has {len(layer_weights)} values; {network} compares '
      f'{len(layers)} layers {layers}.'
    )
  return tuple(float(w) for w in layer_weights)


def perceptual(
  pred: jax.Array,
  target: jax.Array,
  vgg_params: Any,
  *,
  network: str = 'vgg16',
  layer_weights: Sequence[float] | None = None,
  remat: bool = False,
) -> jax.Array:
  """Weighted mean absolute difference of VGG activations (relu1_2 ... relu5_x).

  `vgg_params` from `pretrained.load_vgg_params(network)`, passed as a jit argument.
  `layer_weights` go shallow to deep; None averages the layers. The VGG is frozen: gradients
  reach `pred` only. `remat` keeps only each VGG block's output for the backward pass and
  recomputes the convolutions inside the blocks (one more VGG forward pass on the predictions
  for a fraction of its saved activations; `model.remat` turns it on with the U-Net's).
  """
  weights = _layer_weights(network, layer_weights)
  pred, target = _f32(pred, target)
  network_module = vgg.create_vgg(network)

  def features_of(images):
    return network_module.apply({'params': vgg_params}, images)

  # The targets' features need no gradient: a call of their own keeps nothing of them for the
  # backward pass (one call on predictions and targets together would keep both).
  target_features = jax.lax.stop_gradient(features_of(target))
  if remat:
    keep_block_outputs = jax.checkpoint_policies.save_only_these_names(vgg.BLOCK_OUTPUT)
    pred_features = jax.checkpoint(features_of, policy=keep_block_outputs)(pred)
  else:
    pred_features = features_of(pred)
  total = jnp.zeros((), jnp.float32)
  for weight, layer in zip(weights, vgg.LAYERS[network], strict=True):
    if weight:
      total += weight * jnp.mean(jnp.abs(pred_features[layer] - target_features[layer]))
  return total


# ----------------------------------------------------------------------------- combined


def load_loss_params(loss_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The frozen arrays `combined` needs: `{'vgg': params}` if the perceptual term is on, else {}."""
  if loss_config.get('perceptual', 0.0) > 0:
    return {
      'vgg': pretrained.load_vgg_params(
        loss_config.perceptual_network, loss_config.vgg_weights_path
      )
    }
  return {}


def active_weights(
  loss_config: ml_collections.ConfigDict, names: Sequence[str]
) -> dict[str, float]:
  """The weights of `names` in `loss_config` that are > 0; raises ValueError naming the option
  when one is negative or none is positive (the one check of the loss weights)."""
  weights = {name: float(loss_config.get(name, 0.0) or 0.0) for name in names}
  for name, weight in weights.items():
    if not weight >= 0:  # also refuses NaN
      raise ValueError(f'config.loss.{name} must be >= 0; got {weight}.')
  active = {name: w for name, w in weights.items() if w > 0}
  if not active:
    raise ValueError(
      'Every loss weight is 0: set one of '
      + ', '.join(f'config.loss.{n}' for n in names)
      + ' above 0.'
    )
  return active


def combined(
  pred: jax.Array,
  target: jax.Array,
  loss_config: ml_collections.ConfigDict,
  loss_params: dict[str, Any],
  *,
  remat: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`(total, terms)`: the weighted sum of the image losses whose `config.loss` weight is > 0.

  `terms` holds each unweighted term (`'ssim'` is `1 - SSIM`) for logging. `loss_params` comes from
  `load_loss_params(loss_config)`. Computed in float32 even for bfloat16 `pred`. `remat`: see
  `perceptual`.
  """
  weights = active_weights(loss_config, IMAGE_TERMS)
  pred, target = _f32(pred, target)
  terms = {}
  for name in weights:
    if name == 'charbonnier':
      terms[name] = charbonnier(pred, target, loss_config.charbonnier_epsilon)
    elif name == 'perceptual':
      if 'vgg' not in loss_params:
        raise ValueError(
          'The perceptual loss is on but loss_params has no VGG weights; pass '
          'losses.load_loss_params(config.loss).'
        )
      layer_weights = loss_config.get('perceptual_layer_weights')
      terms[name] = perceptual(
        pred,
        target,
        loss_params['vgg'],
        network=loss_config.perceptual_network,
        layer_weights=layer_weights,
        remat=remat,
      )
    else:
      terms[name] = _IMAGE_LOSSES[name](pred, target)
  total = sum(weights[name] * value for name, value in terms.items())
  return total, terms


_IMAGE_LOSSES = {'l1': l1, 'l2': l2, 'ssim': ssim, 'ms_ssim': ms_ssim}


def sown_regularisers(
  sown: Mapping[str, Sequence[jax.Array]], loss_config: ml_collections.ConfigDict
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`(total, terms)` of the `SOWN_REGULARISERS`, weighted by `config.loss.<term>`.

  `sown` maps a sown name (`lut`, `frame_gain`) to the arrays the model sowed under it: the
  `[S, S, S, 3]` or `[B, S, S, S, 3]` tables the colour head applied, the frame gain's
  `[S, S, 3]` lattice. Terms with weight 0, or whose arrays the model did not sow, are left out.
  """
  terms = {
    name: sum(function(array) for array in sown[source])
    for name, (source, function) in SOWN_REGULARISERS.items()
    if sown.get(source) and float(loss_config.get(name, 0.0) or 0.0) > 0
  }
  total = sum(float(loss_config[name]) * value for name, value in terms.items())
  return jnp.asarray(total, jnp.float32), terms


# ----------------------------------------------------------------------------- segmentation


def _valid(labels: jax.Array, ignore_label: int | None) -> jax.Array:
  if ignore_label is None:
    return jnp.ones(labels.shape, jnp.float32)
  return (labels != ignore_label).astype(jnp.float32)


def cross_entropy(
  logits: jax.Array, labels: jax.Array, ignore_label: int | None = None
) -> jax.Array:
  """Softmax cross-entropy averaged over labelled pixels.

  Logits `[B, H, W, K]`, integer labels `[B, H, W]`; pixels equal to `ignore_label` count for
  nothing (and a batch with none labelled gives 0).
  """
  logits = jnp.asarray(logits, jnp.float32)
  valid = _valid(labels, ignore_label)
  safe = jnp.where(valid > 0, labels, 0).astype(jnp.int32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def dice(
  logits: jax.Array, labels: jax.Array, ignore_label: int | None = None, smooth: float = 1.0
) -> jax.Array:
  """Soft Dice loss, `1 - mean over classes of (2|P∩Y| + s) / (|P| + |Y| + s)`, over the batch.

  `smooth` keeps classes absent from both prediction and labels at a Dice of 1 (no penalty).
  """
  logits = jnp.asarray(logits, jnp.float32)
  num_classes = logits.shape[-1]
  valid = _valid(labels, ignore_label)[..., None]
  probs = jax.nn.softmax(logits, axis=-1) * valid
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * valid
  axes = tuple(range(logits.ndim - 1))
  intersection = jnp.sum(probs * onehot, axis=axes)
  sizes = jnp.sum(probs, axis=axes) + jnp.sum(onehot, axis=axes)
  return 1.0 - jnp.mean((2.0 * intersection + smooth) / (sizes + smooth))


def segmentation_combined(
  logits: jax.Array, labels: jax.Array, loss_config: ml_collections.ConfigDict
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`(total, terms)` of `cross_entropy` and `dice` weighted by `config.loss`.

  Logits `[B, H, W, K]`, labels int `[B, H, W]`; pixels equal to `loss_config.ignore_label` count
  for nothing.
  """
  weights = active_weights(loss_config, SEGMENTATION_TERMS)
  ignore_label = loss_config.get('ignore_label')
  losses = {'cross_entropy': cross_entropy, 'dice': dice}
  terms = {name: losses[name](logits, labels, ignore_label) for name in weights}
  total = sum(weights[name] * value for name, value in terms.items())
  return total, terms
