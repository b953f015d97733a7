"""Measures on the predicted held-out images: checkerboard energy and sharpness."""

import json
import os

import numpy as np
from PIL import Image


def _even_crop(image: np.ndarray) -> np.ndarray:
  height, width = image.shape[:2]
  return image[: height - height % 2, : width - width % 2]


def checkerboard_energy(image: np.ndarray) -> float:
  """Fraction of the (mean-removed) spectral energy on the period-2 frequencies.

  `image`: `[H, W, C]`. The period-2 frequencies are the Nyquist row and column of the 2-D DFT
  (ky = H/2 or kx = W/2), where a stride-2 pattern puts its energy.
  """
  image = _even_crop(np.asarray(image, np.float64))
  height, width = image.shape[:2]
  centred = image - image.mean(axis=(0, 1), keepdims=True)
  power = np.abs(np.fft.fft2(centred, axes=(0, 1))) ** 2
  nyquist = np.zeros((height, width), bool)
  nyquist[height // 2, :] = True
  nyquist[:, width // 2] = True
  return float(power[nyquist].sum() / max(power.sum(), 1e-20))


def high_frequency_energy(image: np.ndarray) -> float:
  """Mean squared 4-neighbour Laplacian: how much fine detail an image holds."""
  image = np.asarray(image, np.float64)
  laplacian = (
    4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:]
  )
  return float(np.mean(laplacian**2))


def split_panel(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """An eval panel `input | output | target` (what `evaluate` writes) as three float images."""
  panel = np.asarray(Image.open(path).convert('RGB'), np.float32) / 255.0
  width = panel.shape[1] // 3
  return panel[:, :width], panel[:, width : 2 * width], panel[:, 2 * width : 3 * width]


def eval_panels(eval_dir: str) -> list[str]:
  """The `input | output | target` panels of an eval folder, one per image of its metrics.json."""
  with open(os.path.join(eval_dir, 'metrics.json')) as f:
    names = sorted(image['name'] for image in json.load(f)['images'])
  return [os.path.join(eval_dir, f'{name}.png') for name in names]


def image_measures(eval_dir: str) -> dict[str, float]:
  """Checkerboard and sharpness of the final predictions, each relative to the target's own.

  `checkerboard` > 1: more energy at the period-2 frequencies than the true image has;
  `sharpness` < 1: less fine detail (blurrier) than the target.
  """
  ratios = {'checkerboard': [], 'sharpness': []}
  for path in eval_panels(eval_dir):
    _, output, target = split_panel(path)
    ratios['checkerboard'].append(checkerboard_energy(output) / checkerboard_energy(target))
    ratios['sharpness'].append(high_frequency_energy(output) / high_frequency_energy(target))
  return {k: float(np.mean(v)) for k, v in ratios.items() if v}
