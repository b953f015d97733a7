"""Fits the auto levels alone to the training pairs before the first step
(`optimizer.auto_levels_prefit`).

The auto levels (models/auto_levels.py) hold an editor's auto rules as a few dozen weights,
linear in each photo's histogram figures, and an editor's rule is matched only when those
weights are right to a few parts in ten thousand: a black point one part in a thousand off is a
quarter of an 8-bit step at white. Adam on noisy crop batches wanders around such a solution by
its own step size, and full-batch Adam converges to it slowly along the figures that move
together (the tail quantiles of a photo). The stage alone is a small least-squares problem,
which Levenberg-Marquardt solves to convergence in a few dozen Jacobians: that is done here, on
a fixed sample of pixels of every whole training pair (the figures taken of the whole photo, as
in training), and the train step then holds the stage still (`train_state.create_optimizer`).
"""

import itertools
import logging
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.flatten_util import ravel_pytree

from unet_jax import data, whole_photo
from unet_jax.models import auto_levels

# The pixels sampled over all training pairs: the Jacobian holds 3 residuals per pixel for each
# of the stage's ~50 weights (float32: about 120 MB at this size).
SAMPLE_PIXELS = 200_000
# The pairs read (the split's first, in its fixed order): a few hundred photos pin the stage's
# few dozen weights, and reading a large dataset's every photo would take longer than training.
MAX_PAIRS = 512
# Each pair gives at least this many pixels, whatever their number, and at most this many.
MIN_PIXELS_PER_PAIR = 256
MAX_PIXELS_PER_PAIR = 16_384
# Levenberg-Marquardt: iterations, the first damping, and the damping past which a step that
# does not lower the cost ends the fit (converged).
ITERATIONS = 50
# A pull of every weight towards zero (the identity), per unit of mean squared error: a few
# pairs, or a look the stage cannot hold, otherwise set weights far past any editor's rule (whose
# weights are 0 or +-1), which grade unseen photos with wild points and gains. Chosen as the
# largest that leaves the fits of experiments/results/editor_looks_prefit.md as they were.
RIDGE = 1e-7
_FIRST_DAMPING = 1e-3
_LAST_DAMPING = 1e8


class PixelSample(NamedTuple):
  """Pixels of `P` whole training pairs, `N` each: `inputs` and `targets` `[P, N, 3]`, their
  places in the photo `coords` `[P, N, 2]`, and what the model reads of each whole photo
  (`WholePhotoInputs.of_photo`): `figures` `[P, F]` and `thumbnails` `[P, T, T, C]` (None for
  what it does not read)."""

  inputs: np.ndarray
  targets: np.ndarray
  coords: np.ndarray
  figures: np.ndarray | None
  thumbnails: np.ndarray | None


def sample_training_pairs(config: ml_collections.ConfigDict, data_dir: str | None) -> PixelSample:
  """A fixed random sample of each whole training pair's pixels, with what the model reads of
  the whole photo, for the fits made before the first step (this module, `grid_prefit.py`).

  The split's first `MAX_PAIRS` pairs are read one at a time, keeping `MAX_PIXELS_PER_PAIR` of
  each, then as many of those as `SAMPLE_PIXELS` shares out (at least `MIN_PIXELS_PER_PAIR`;
  the same N for every pair, at most the smallest photo's pixel count)."""
  split_config = ml_collections.ConfigDict(config.to_dict())
  split_config.data.eval_split = config.data.train_split
  split_config.data.eval_size = None
  reads = whole_photo.WholePhotoInputs.from_model_config(config.model)
  rng = np.random.default_rng(config.seed)
  inputs, targets, coords, figures, thumbnails = [], [], [], [], []
  examples = data.create_eval_iterator(split_config, data_dir=data_dir)
  for example in itertools.islice(examples, MAX_PAIRS):
    image, target = example['input'], example['target']
    whole = reads.of_photo(image, coords=False)
    figures.append(whole.get('statistics'))
    thumbnails.append(whole.get('thumbnail'))
    # A random order of the photo's pixels, no pixel twice: any prefix is a random sample.
    height, width = image.shape[:2]
    kept = rng.permutation(height * width)[:MAX_PIXELS_PER_PAIR]
    inputs.append(image.reshape(-1, 3)[kept])
    targets.append(target.reshape(-1, 3)[kept])
    rows = whole_photo.photo_coords(kept // width, [0], height, width)[:, 0, 0]
    cols = whole_photo.photo_coords([0], kept % width, height, width)[0, :, 1]
    coords.append(np.stack([rows, cols], axis=-1))
  if not inputs:
    raise ValueError(f'config.data.train_split={config.data.train_split!r} holds no pairs.')
  share = max(MIN_PIXELS_PER_PAIR, SAMPLE_PIXELS // len(inputs))
  per_pair = min(share, *(len(kept) for kept in inputs))
  sampled = [np.stack([kept[:per_pair] for kept in arrays]) for arrays in (inputs, targets, coords)]
  whole = [None if items[0] is None else np.stack(items) for items in (figures, thumbnails)]
  return PixelSample(*sampled, *whole)


def fit_auto_levels(
  params: dict,
  offset: bool,
  inputs: np.ndarray,
  targets: np.ndarray,
  figures: np.ndarray,
  ridge: float = RIDGE,
) -> tuple[dict, float, float]:
  """The `AutoLevels(offset)` weights, from `params`, that minimise the mean squared error of
  the stage alone on `inputs [P, N, 3]` -> `targets` with each pair's `figures [P, F]`.

  Returns them with the mean squared error before and after."""
  model = auto_levels.AutoLevels(offset)
  theta, unravel = ravel_pytree(params)
  images = jnp.asarray(inputs)[:, :, None, :]  # [P, N, 1, 3]: a pair's pixels as one column
  wanted, figures = jnp.asarray(targets)[:, :, None, :], jnp.asarray(figures)

  count = images.shape[0] * images.shape[1] * 3
  # The prior's residuals: mean squared error + ridge * |weights|^2 is the cost minimised.
  prior = float(np.sqrt(ridge * count))

  def residuals(flat: jax.Array) -> jax.Array:
    graded = model.apply({'params': unravel(flat)}, images, figures)
    return jnp.concatenate([(graded - wanted).ravel(), prior * flat])

  residuals_at, jacobian_at = jax.jit(residuals), jax.jit(jax.jacfwd(residuals))
  current = first_residuals = residuals_at(theta)
  cost = float(current @ current)
  damping = _FIRST_DAMPING
  for _ in range(ITERATIONS):
    jacobian = np.asarray(jacobian_at(theta), np.float64)
    normal, gradient = jacobian.T @ jacobian, jacobian.T @ np.asarray(current, np.float64)
    # Marquardt's scaling: each weight damped by its own curvature (weights that no training
    # pair moves get a tiny floor, so the system stays solvable and they stay where they are).
    scale = np.diag(np.diag(normal) + 1e-12)
    while damping <= _LAST_DAMPING:
      step = np.linalg.solve(normal + damping * scale, -gradient)
      candidate = theta + jnp.asarray(step, theta.dtype)
      tried = residuals_at(candidate)
      tried_cost = float(tried @ tried)
      if tried_cost < cost:
        theta, current, cost, damping = candidate, tried, tried_cost, damping / 3
        break
      damping *= 4
    else:
      break  # no step lowers the cost: converged
  data_error = lambda r: float(jnp.mean(jnp.square(r[:count])))
  return unravel(theta), data_error(first_residuals), data_error(current)


def prefit(config: ml_collections.ConfigDict, data_dir: str | None, levels: dict) -> dict:
  """The auto levels' weights, from `levels`, fitted alone to the training pairs (numpy
  float32); logs the fit."""
  start = time.perf_counter()
  sample = sample_training_pairs(config, data_dir)
  inputs = sample.inputs
  offset = bool(config.model.get('auto_levels_offset', False))
  fitted, before, after = fit_auto_levels(levels, offset, inputs, sample.targets, sample.figures)
  logging.info(
    'Auto levels fitted alone to %d training pairs (%d pixels each) in %.1f s: RMSE %.2f -> %.2f '
    '8-bit steps.',
    len(inputs),
    inputs.shape[1],
    time.perf_counter() - start,
    255 * before**0.5,
    255 * after**0.5,
  )
  return jax.tree.map(lambda a: np.asarray(a, np.float32), fitted)
