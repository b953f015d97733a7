"""The best `model.local_grid` can do on one photo: its grid of affine colour transforms
(`models/local_affine.py`) least-squares fitted to the photo's own target.

The per-photo bound of the local grid, as `best_fit_lut` is the bound of a global table. A look
that this fit grades well while the trained model does not is one whose grid the model fails to
*learn* from the thumbnail, not one the grid cannot *hold*. The grade is the model's own: the
fitted grid is applied by `local_affine.slice_affine` at the photo's `whole_photo.photo_coords`.

Each pixel's output is linear in the coefficients of the 4 cells around it (bilinear weights
times the pixel's colour and 1), so the fit is one linear least-squares problem per photo with
`grid^2 * 4` unknowns per channel, the same design matrix for all three: its normal equations
are small enough (4096 x 4096 at grid 32) to solve directly.
"""

import jax.numpy as jnp
import numpy as np
import scipy.sparse

from unet_jax import whole_photo
from unet_jax.models import global_grade, local_affine

# Ridge on the coefficients, relative to the normal matrix's mean diagonal: only there to keep
# the solve well posed where a cell's pixels are all one colour.
_RIDGE = 1e-6


def _design(image: np.ndarray, coords: np.ndarray, grid: int) -> scipy.sparse.csr_matrix:
  """`[H*W, grid*grid*4]`: each pixel's bilinear weight of each of its 4 cells times the
  pixel's (r, g, b, 1), in the column of that cell's matrix row entry or offset."""
  lattice = local_affine.cell_lattice(jnp.asarray(coords), grid).reshape(-1, 2)
  lower, frac = (np.asarray(a) for a in global_grade.frame_lattice_cell(lattice, grid))
  pixels = image.reshape(-1, 3).astype(np.float64)
  features = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
  rows = np.arange(len(pixels))
  entries, columns, values = [], [], []
  for dy in (0, 1):
    weight_y = frac[:, 0] if dy else 1.0 - frac[:, 0]
    for dx in (0, 1):
      weight = weight_y * (frac[:, 1] if dx else 1.0 - frac[:, 1])
      cell = (lower[:, 0] + dy) * grid + lower[:, 1] + dx
      for feature in range(4):
        entries.append(rows)
        columns.append(cell * 4 + feature)
        values.append(weight * features[:, feature])
  return scipy.sparse.csr_matrix(
    (np.concatenate(values), (np.concatenate(entries), np.concatenate(columns))),
    shape=(len(pixels), grid * grid * 4),
  )


def fit_local_grid(image: np.ndarray, target: np.ndarray, grid: int = 32) -> np.ndarray:
  """`[grid, grid, 12]` coefficients (`local_affine.COEFFICIENTS`: a 3 x 3 matrix row by row,
  then the offset, as offsets from the identity) whose grade of `image [H, W, 3]` comes closest
  to `target` in squared error."""
  height, width, _ = image.shape
  coords = whole_photo.photo_coords(np.arange(height), np.arange(width), height, width)
  design = _design(image, coords, grid)
  normal = (design.T @ design).toarray()
  normal[np.diag_indices_from(normal)] += _RIDGE * np.mean(np.diag(normal))
  edit = (target - image).reshape(-1, 3).astype(np.float64)
  solution = np.linalg.solve(normal, design.T @ edit)  # [cells * 4, 3 output channels]
  per_cell = solution.reshape(grid, grid, 4, 3)
  matrix = np.swapaxes(per_cell[:, :, :3, :], -1, -2).reshape(grid, grid, 9)  # [out, in]
  return np.concatenate([matrix, per_cell[:, :, 3, :]], axis=-1).astype(np.float32)


def grade_with_grid(image: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """`image [H, W, 3]` through the coefficient grid, as the model slices it, clipped to [0, 1]."""
  height, width, _ = image.shape
  coords = whole_photo.photo_coords(np.arange(height), np.arange(width), height, width)
  graded = local_affine.slice_affine(jnp.asarray(grid)[None], image[None], coords[None])[0]
  return np.clip(np.asarray(graded), 0.0, 1.0)
