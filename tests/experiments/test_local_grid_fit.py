"""experiments/local_grid_fit.py: the per-photo bound of the local grid is the model's own
representation, fitted exactly where a grid can make the target."""

import numpy as np

from experiments import local_grid_fit


def test_a_grade_made_by_a_grid_is_fitted_back_to_that_grid():
  rng = np.random.default_rng(0)
  image = (0.2 + 0.6 * rng.random((40, 72, 3))).astype(np.float32)
  grid = (0.05 * rng.standard_normal((6, 6, 12))).astype(np.float32)
  target = local_grid_fit.grade_with_grid(image, grid)
  fitted = local_grid_fit.fit_local_grid(image, target, grid=6)
  np.testing.assert_allclose(fitted, grid, atol=1e-4)
  np.testing.assert_allclose(local_grid_fit.grade_with_grid(image, fitted), target, atol=1e-5)


def test_a_local_edit_beyond_any_global_table_is_fitted_closely():
  # Local contrast as a clarity slider makes it: the photo plus 0.8 x (photo - its blur), a
  # blur far wider than a pixel. No global mapping can make it; a grid of affine transforms can.
  from scipy.ndimage import gaussian_filter

  rng = np.random.default_rng(1)
  image = gaussian_filter(rng.random((64, 96, 3)), (2, 2, 0)).astype(np.float32)
  image = 0.25 + 0.5 * (image - image.min()) / np.ptp(image)
  blur = gaussian_filter(image, (12, 12, 0))
  target = np.clip(image + 0.8 * (image - blur), 0.0, 1.0).astype(np.float32)
  graded = local_grid_fit.grade_with_grid(image, local_grid_fit.fit_local_grid(image, target, 16))
  error = np.sqrt(np.mean((graded - target) ** 2))
  assert error < 0.2 * np.sqrt(np.mean((image - target) ** 2))
