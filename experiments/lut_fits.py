"""The least-squares LUT baselines of the colour-head study, in a module without flags: shared
by `experiments/color_head.py` (the report's LUT rows) and `experiments/per_photo_bound.py`
(the per-photo bound, photo by photo), which cannot import one another's absl flags."""

import numpy as np

from unet_jax.inference import lut as inference_lut

# `best_fit_lut`: a table of this many points a side fitted to one held-out photo's own target.
BEST_FIT_SIZE = 17


def fit_lut(
  inputs: list[np.ndarray], targets: list[np.ndarray], size: int = 17, curvature: float = 0.0
) -> np.ndarray:
  """Least-squares `[S, S, S, 3]` table mapping `inputs` to `targets` through trilinear lookup,
  by `unet_jax.inference.lut.fit_lut`.

  Where few pixels fall, the table is pulled weakly towards the identity (1e-3 of the mean
  squared error's weight per pixel, spread over the S^3 cells), or with `curvature > 0` towards
  the straight continuation of its neighbours (second differences, as `loss.lut_curvature`
  does in training), with that weight instead and only a trace of the identity pull.
  """
  pixels = np.concatenate([i.reshape(-1, 3) for i in inputs])
  wanted = np.concatenate([t.reshape(-1, 3) for t in targets])
  cells = size**3
  return inference_lut.fit_lut(
    pixels,
    wanted,
    size=size,
    smoothness=0.0,
    curvature=curvature / cells,
    identity_pull=(1e-9 if curvature > 0 else 1e-3) / cells,
  )


def best_fit_lut(image: np.ndarray, target: np.ndarray) -> np.ndarray:
  """The `best_fit_lut` row's table: fitted to `image`'s own `target`, the bound for any global
  method on that photo."""
  return fit_lut([image], [target], BEST_FIT_SIZE, 0.0)
