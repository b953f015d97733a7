"""A 3D colour look-up table fitted to a model's output, and the `.cube` file that holds it.

A LUT maps each RGB colour to a new one, the same everywhere in the photo: it is the best
*global* approximation of a grading model, which may also make local edits (a LUT cannot). The
table is `[N, N, N, 3]`, indexed `table[r, g, b]` on a regular grid over [0, 1]^3, and applied
with trilinear interpolation, as DaVinci Resolve, Photoshop, ffmpeg's `lut3d` and colour-science
do.

The fit: every pixel's output is a trilinear blend of the 8 grid cells around its input colour,
so the table is the least-squares solution of a sparse linear system (one row per pixel, 8
non-zeros). Colours the photos never show leave cells without data; a smoothness term fills
them: squared first differences, along r, g and b, of the edit (the table minus the identity),
so the edit of a cell without data is a smooth blend of the edits of the cells around it (and
past the last data, the nearest one carried on). A tiny pull towards the identity table keeps
the system well posed where nothing else applies. Second differences (`curvature > 0`), which
continue the edit's trend instead (as `loss.lut_curvature` does in training), are for the
least-squares baselines of `experiments/color_head.py`; exported `.cube` files keep the fit
they have always had (first differences only).
"""

import os

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import threadpoolctl

DEFAULT_SIZE = 33
# Relative to the data term, which is averaged over pixels: small enough that cells with data
# follow the data, large enough that empty regions between them interpolate smoothly.
DEFAULT_SMOOTHNESS = 1e-5
_IDENTITY_PULL = 1e-9
_CG_TOLERANCE = 1e-8
_CG_MAX_ITERATIONS = 20_000


def identity_table(size: int) -> np.ndarray:
  """`[size, size, size, 3]` table that maps every colour to itself."""
  grid = np.linspace(0.0, 1.0, size)
  r, g, b = np.meshgrid(grid, grid, grid, indexing='ij')
  return np.stack([r, g, b], axis=-1)


def _corners(rgb: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Flat cell indices `[N, 8]` and trilinear weights `[N, 8]` of colours `rgb` `[N, 3]`."""
  position = np.clip(rgb.astype(np.float64), 0.0, 1.0) * (size - 1)
  low = np.minimum(np.floor(position).astype(np.int64), size - 2)
  frac = position - low
  indices, weights = [], []
  for dr in (0, 1):
    for dg in (0, 1):
      for db in (0, 1):
        offset = np.array([dr, dg, db])
        corner = low + offset
        indices.append((corner[:, 0] * size + corner[:, 1]) * size + corner[:, 2])
        weights.append(np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=1))
  return np.stack(indices, axis=1), np.stack(weights, axis=1)


def apply_lut(table: np.ndarray, rgb: np.ndarray) -> np.ndarray:
  """Trilinear look-up of colours `rgb` `[..., 3]` (clipped to [0, 1]) in `table`."""
  size = table.shape[0]
  flat = rgb.reshape(-1, 3)
  indices, weights = _corners(flat, size)
  values = table.reshape(-1, 3)[indices]  # [N, 8, 3]
  out = np.einsum('nk,nkc->nc', weights, values)
  return out.reshape(rgb.shape).astype(np.float32)


def _differences(size: int, order: int) -> scipy.sparse.csr_matrix:
  """Stacked `order`-th difference operators (1 or 2) along the r, g and b axes of the grid."""
  stencil = {1: [-1.0, 1.0], 2: [1.0, -2.0, 1.0]}[order]
  line = scipy.sparse.diags(stencil, range(order + 1), shape=(size - order, size))
  eye = scipy.sparse.identity(size)
  axes = [
    scipy.sparse.kron(scipy.sparse.kron(line, eye), eye),
    scipy.sparse.kron(scipy.sparse.kron(eye, line), eye),
    scipy.sparse.kron(scipy.sparse.kron(eye, eye), line),
  ]
  return scipy.sparse.vstack(axes).tocsr()


def fit_lut(
  inputs: np.ndarray,
  outputs: np.ndarray,
  *,
  size: int = DEFAULT_SIZE,
  smoothness: float = DEFAULT_SMOOTHNESS,
  curvature: float = 0.0,
  identity_pull: float = _IDENTITY_PULL,
) -> np.ndarray:
  """The `[size, size, size, 3]` table whose trilinear look-up best maps `inputs` to `outputs`.

  Args:
    inputs: `[N, 3]` input colours in [0, 1] (pixels of the photos, flattened).
    outputs: `[N, 3]` the model's output colours for those pixels.
    size: grid points per axis (33 is the common size for grading LUTs).
    smoothness: weight of the penalty on the edit's first differences, relative to the mean
      squared error.
    curvature: weight of a penalty on the table's second differences (0: none). It leaves
      affine edits alone, so cells without data continue their neighbours' straight trend (as
      `loss.lut_curvature` does in training).
    identity_pull: weight of the pull of every cell towards the identity table.

  Returns float32 values clipped to [0, 1] (what a photo file can hold).
  """
  if size < 2:
    raise ValueError(f'LUT size must be at least 2; got {size}.')
  inputs = np.asarray(inputs).reshape(-1, 3)
  outputs = np.asarray(outputs).reshape(-1, 3)
  if inputs.shape != outputs.shape or not len(inputs):
    raise ValueError(f'fit_lut needs matching [N, 3] colours; got {inputs.shape}, {outputs.shape}.')
  cells = size**3
  # The unknown is the edit e = t - identity; the smoothness term penalises its first
  # differences, so a cell without data takes the edit of the cells around it. Normal
  # equations: (W'W / N + s D'D + p I) e = W'(y - W identity) / N, one solve per channel.
  identity = identity_table(size).reshape(-1, 3)
  gram, right = _normal_equations(inputs, outputs, size, identity)
  normal = gram / len(inputs) + identity_pull * scipy.sparse.identity(cells)
  if smoothness:
    smooth = _differences(size, 1)
    normal = normal + smoothness * (smooth.T @ smooth)
  if curvature:
    bend = _differences(size, 2)
    normal = normal + curvature * (bend.T @ bend)
  right = right / len(inputs)
  # Conjugate gradients from the identity table: a direct factorisation of this 3-D lattice
  # fills in badly (minutes at 33^3), CG takes seconds. Jacobi preconditioning evens out cells
  # with many pixels and cells with none.
  normal = normal.tocsr()
  preconditioner = scipy.sparse.diags(1.0 / normal.diagonal())
  channels = []
  # CG's vector products are tiny BLAS calls; a multi-threaded BLAS on a busy machine spends
  # 30x longer synchronising its threads than computing (measured: 13 s vs 0.5 s per channel).
  with threadpoolctl.threadpool_limits(1, user_api='blas'):
    for c in range(3):
      solution, info = scipy.sparse.linalg.cg(
        normal, right[:, c], rtol=_CG_TOLERANCE, maxiter=_CG_MAX_ITERATIONS, M=preconditioner
      )
      if info != 0:
        raise RuntimeError(f'LUT fit: conjugate gradients did not converge (channel {c}).')
      channels.append(solution)
  table = identity + np.stack(channels, axis=-1)
  return np.clip(table, 0.0, 1.0).reshape(size, size, size, 3).astype(np.float32)


# Pixels per block of the design matrix in `_normal_equations`: ~0.5 GB of sparse rows at once,
# whatever the number of pixels (a hundred 1 MP photos would need ~15 GB in one block).
_FIT_BLOCK = 2**22


def _normal_equations(
  inputs: np.ndarray, outputs: np.ndarray, size: int, identity: np.ndarray
) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
  """`W'W` and `W'(y - W identity)` of the trilinear design matrix `W` of `inputs`, summed over
  blocks of `_FIT_BLOCK` pixels so that memory stays bounded."""
  cells = size**3
  gram = scipy.sparse.csr_matrix((cells, cells))
  right = np.zeros((cells, 3))
  for start in range(0, len(inputs), _FIT_BLOCK):
    block = slice(start, start + _FIT_BLOCK)
    indices, weights = _corners(inputs[block], size)
    rows = np.repeat(np.arange(len(indices)), 8)
    design = scipy.sparse.csr_matrix(
      (weights.ravel(), (rows, indices.ravel())), shape=(len(indices), cells)
    )
    gram = gram + design.T @ design
    right += design.T @ (np.asarray(outputs[block], np.float64) - design @ identity)
  return gram, right


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two arrays of values in [0, 1] (inf when they are equal)."""
  mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
  return float('inf') if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def write_cube(path: str, table: np.ndarray, *, title: str) -> str:
  """Writes `table` `[N, N, N, 3]` as an Iridas/Resolve `.cube` file; never replaces a file.

  Lines run with red changing fastest, then green, then blue, as the format requires.
  """
  size = table.shape[0]
  if table.shape != (size, size, size, 3):
    raise ValueError(f'A 3D LUT table is [N, N, N, 3]; got shape {table.shape}.')
  lines = [
    f'TITLE "{title}"',
    '# Written by unet_jax: the global colour mapping fitted to a U-Net grading model.',
    f'LUT_3D_SIZE {size}',
    'DOMAIN_MIN 0.0 0.0 0.0',
    'DOMAIN_MAX 1.0 1.0 1.0',
  ]
  values = np.asarray(table, np.float64).transpose(2, 1, 0, 3).reshape(-1, 3)
  lines.extend(f'{r:.6f} {g:.6f} {b:.6f}' for r, g, b in values)
  with open(os.fspath(path), 'x') as f:
    f.write('\n'.join(lines) + '\n')
  return os.fspath(path)
