"""The built-in colour-grading looks: pure functions of the input photo, in numpy.

Each look maps a float32 RGB image `[H, W, 3]` in [0, 1] (sRGB-encoded values) to one of the
same shape and range, deterministically, so `target = LOOKS[name](input)` can be checked. They
differ in how much of the frame a pixel's new value depends on, which is what a U-Net has to learn:

- `warm_film` (global, per pixel): warmer white balance, a gentle S-curve with lifted blacks, and
  split toning (teal shadows, orange highlights). The output at a pixel depends on that pixel only.
- `auto_exposure` (whole image): exposure normalised to the photo's own key, i.e. its log-average
  luminance is brought to 0.18 in linear light, then a highlight roll-off. The same pixel value
  comes out differently in a dark photo and in a bright one; a crop sees only part of the evidence.
- `local_contrast` (local, the default): clarity; luminance detail above a Gaussian of
  sigma = 6 px is doubled, plus a 15 % saturation boost. Each pixel depends on a ~36 px wide
  neighbourhood; translation-equivariant, so crops learn it well.
- `vignette` (position in the frame): corners darkened by up to 45 % with the squared distance
  from the centre. A random crop cannot tell where it sits in the frame: train it with
  `config.data.sampling='resize'` or `'mixed'`.
"""

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from unet_jax.data.errors import DataError

# Rec. 709 luma weights, applied to the encoded values (a perceptual, not a physical, luminance).
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)

LOCAL_CONTRAST_SIGMA_PX = 6.0
LOCAL_CONTRAST_AMOUNT = 1.0
LOCAL_CONTRAST_SATURATION = 1.15
AUTO_EXPOSURE_KEY = 0.18
AUTO_EXPOSURE_MAX_GAIN = 4.0
AUTO_EXPOSURE_WHITE = 2.0
VIGNETTE_STRENGTH = 0.45
GAMMA = 2.2


def _luma(image: np.ndarray) -> np.ndarray:
  return image @ LUMA


def _saturate(image: np.ndarray, factor: float) -> np.ndarray:
  gray = _luma(image)[..., None]
  return gray + factor * (image - gray)


def _finish(image: np.ndarray) -> np.ndarray:
  return np.clip(image, 0.0, 1.0).astype(np.float32)


def warm_film(image: np.ndarray) -> np.ndarray:
  """Global per-pixel look: warm white balance, S-curve, lifted blacks, split toning."""
  x = np.clip(image * np.array([1.06, 1.0, 0.92], np.float32), 0.0, 1.0)
  s_curve = x * x * (3.0 - 2.0 * x)
  x = 0.5 * x + 0.5 * s_curve
  x = 0.04 + 0.94 * x
  luma = _luma(x)[..., None]
  shadows, highlights = (1.0 - luma) ** 2, luma**2
  x = x + shadows * np.array([-0.03, 0.01, 0.04], np.float32)
  x = x + highlights * np.array([0.04, 0.01, -0.03], np.float32)
  return _finish(x)


def auto_exposure(image: np.ndarray) -> np.ndarray:
  """Whole-image look: exposure set from the photo's own log-average luminance, then roll-off."""
  linear = np.clip(image, 0.0, 1.0) ** GAMMA
  key = float(np.exp(np.mean(np.log(1e-4 + _luma(linear)))))
  gain = np.clip(AUTO_EXPOSURE_KEY / key, 1.0 / AUTO_EXPOSURE_MAX_GAIN, AUTO_EXPOSURE_MAX_GAIN)
  linear = linear * gain
  # Extended Reinhard: keeps mid-tones near linear and reaches 1 at the white point.
  white_sq = AUTO_EXPOSURE_WHITE**2
  linear = linear * (1.0 + linear / white_sq) / (1.0 + linear)
  return _finish(np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA))


def local_contrast(image: np.ndarray) -> np.ndarray:
  """Local look: luminance detail above a 6 px Gaussian doubled, saturation +15 %."""
  luma = _luma(image)
  base = ndimage.gaussian_filter(luma, sigma=LOCAL_CONTRAST_SIGMA_PX, mode='reflect')
  x = image + LOCAL_CONTRAST_AMOUNT * (luma - base)[..., None]
  return _finish(_saturate(x, LOCAL_CONTRAST_SATURATION))


def vignette(image: np.ndarray) -> np.ndarray:
  """Positional look: darkens towards the corners by the squared normalised radius."""
  height, width = image.shape[:2]
  y = (np.arange(height, dtype=np.float32) - (height - 1) / 2) / max((height - 1) / 2, 1)
  x = (np.arange(width, dtype=np.float32) - (width - 1) / 2) / max((width - 1) / 2, 1)
  # Radius 1 at the corners whatever the aspect ratio.
  radius_sq = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0
  return _finish(image * (1.0 - VIGNETTE_STRENGTH * radius_sq)[..., None])


LOOKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
  'warm_film': warm_film,
  'auto_exposure': auto_exposure,
  'local_contrast': local_contrast,
  'vignette': vignette,
}
DEFAULT_LOOK = 'local_contrast'


def apply_look(name: str, image: np.ndarray) -> np.ndarray:
  """`LOOKS[name](image)` with a clear error for an unknown name."""
  if name not in LOOKS:
    raise DataError(f'Unknown look {name!r}; choose one of {sorted(LOOKS)}.')
  return LOOKS[name](np.asarray(image, np.float32))
