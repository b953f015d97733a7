"""Fits the local grid as one transform over the frame before the first step
(`optimizer.local_grid_prefit`).

A local look made by an editor's filter (a local contrast, a local min-max stretch) is one rule
applied everywhere: with `model.local_grid_detail`, one set of the grid's coefficients (the
same in every cell) holds most of it. That set is linear in the coefficients, so least squares
on a sample of whole training pairs finds it exactly, in a second. Adam from the zero
initialisation gets there slowly: the detail weights must travel to the look's strength (0.8
for ImageMagick's 80 %) at the network's step size. The fit is written into the bias of the
grid network's last layer, whose kernel stays zero, so the net starts as that one transform and
learns each cell's correction from there (it is not held still).

The grade before the grid (auto levels, exposure, curves, colour head) is the identity at
initialisation, so the fit reads the input photo where the grid will read the grade.
"""

import logging
import time

import jax.numpy as jnp
import ml_collections
import numpy as np

from unet_jax.models import local_affine
from unet_jax.training import levels_prefit

# A pull of every coefficient towards zero (the identity), per unit of mean squared error: a
# few pairs of a look the grid cannot hold would otherwise set large detail weights.
RIDGE = 1e-6


def fit_uniform_grid(
  sample: levels_prefit.PixelSample, detail: bool, extremes: bool, ridge: float = RIDGE
) -> tuple[np.ndarray, float, float]:
  """The coefficients `[12 (+ 9 K)]` of one local transform for every cell (`local_affine`'s
  layout: a 3 x 3 matrix, an offset and, with `detail`, the weights of each detail block) that
  minimise the mean squared error of `inputs -> targets` in `sample`.

  Returns them with the mean squared error before (the identity) and after."""
  colours = np.asarray(sample.inputs, np.float64)  # [P, N, 3]
  columns = [colours, np.ones((*colours.shape[:2], 1))]
  if detail:
    guides = local_affine.guide_fields(jnp.asarray(sample.thumbnails), extremes)
    blocks = local_affine.pixel_detail(
      guides, jnp.asarray(sample.inputs)[:, :, None, :], jnp.asarray(sample.coords)[:, :, None, :]
    )  # [P, N, 1, K, 3]
    blocks = np.asarray(blocks, np.float64)[:, :, 0]
    columns.append(blocks.reshape(*blocks.shape[:2], -1))
  design = np.concatenate(columns, axis=-1).reshape(-1, sum(c.shape[-1] for c in columns))
  residual = (np.asarray(sample.targets, np.float64) - colours).reshape(-1, 3)
  normal = design.T @ design / len(design) + ridge * np.eye(design.shape[1])
  solution = np.linalg.solve(normal, design.T @ residual / len(design))  # [features, 3]
  # Row i of the solution's columns is output channel i: matrix row, offset, detail rows.
  matrix, offset, weights = solution[:3].T, solution[3], solution[4:].T
  coefficients = [matrix.reshape(9), offset]
  if detail:
    blocks_count = weights.shape[1] // 3
    # [3 out, K, 3 in] -> the layout slice_affine reads: per block, a 3 x 3 matrix row-major.
    per_block = weights.reshape(3, blocks_count, 3).transpose(1, 0, 2)
    coefficients.append(per_block.reshape(-1))
  before = float(np.mean(np.square(residual)))
  after = float(np.mean(np.square(residual - design @ solution)))
  return np.concatenate(coefficients).astype(np.float32), before, after


def prefit(config: ml_collections.ConfigDict, data_dir: str | None) -> np.ndarray:
  """The local grid's uniform coefficients fitted to the training pairs; logs the fit."""
  start = time.perf_counter()
  sample = levels_prefit.sample_training_pairs(config, data_dir)
  detail = bool(config.model.get('local_grid_detail', False))
  extremes = bool(config.model.get('local_grid_extremes', False))
  fitted, before, after = fit_uniform_grid(sample, detail, extremes)
  logging.info(
    'Local grid fitted as one transform to %d training pairs (%d pixels each) in %.1f s: RMSE '
    '%.2f -> %.2f 8-bit steps.',
    sample.inputs.shape[0],
    sample.inputs.shape[1],
    time.perf_counter() - start,
    255 * before**0.5,
    255 * after**0.5,
  )
  return fitted
