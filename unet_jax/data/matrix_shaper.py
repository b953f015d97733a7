"""Exact (float) conversions between RGB matrix/TRC ICC profiles.

A matrix/TRC profile (sRGB, Display P3, Adobe RGB, ProPhoto and most cameras' and editors' RGB
profiles) says all there is to say in six tags: a tone curve per channel (`rTRC`, `gTRC`,
`bTRC`) from code values to linear light, and the D50 XYZ of each linear primary (`rXYZ`,
`gXYZ`, `bXYZ`). A relative colorimetric conversion between two of them is therefore
  target codes = target curve^-1( M_target^-1 . M_source . source curve(source codes) ),
done here in float. LittleCMS, through libvips, instead folds a 16-bit transform into sampled
grids, which puts some colours over a CIEDE2000 unit off the exact result; this path is exact
to float rounding. Profiles with lookup tables (A2B*/B2A* tags: CMYK, some printer and camera
profiles), grey profiles and curves this module cannot read are left to LittleCMS
(`matrix_shaper()` returns None for them).
"""

import dataclasses
import functools
import struct

import numpy as np

from unet_jax.data import colour_spaces

# LittleCMS prefers a profile's lookup tables to its matrix when both are present.
_LUT_TAGS = (b'A2B0', b'A2B1', b'A2B2', b'B2A0', b'B2A1', b'B2A2')
# Parametric curve types (ICC.1:2010, 10.18): how many parameters each stores.
_PARA_COUNTS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
# A pixel counts as clipped when a channel lands more than half an 8-bit code outside [0, 1].
CLIP_TOLERANCE = 0.5 / 255


@dataclasses.dataclass(frozen=True)
class _Curve:
  """One tone curve: the parametric form (g, a, b, c, d, e, f), or a sampled table."""

  params: tuple[float, ...] | None = None  # Y = (aX + b)^g + e for X >= d, else cX + f
  table: np.ndarray | None = None  # samples of Y at X = 0, 1/(n-1), ..., 1

  def to_linear(self, x: np.ndarray) -> np.ndarray:
    if self.table is not None:
      return np.interp(x, np.linspace(0.0, 1.0, len(self.table)), self.table)
    g, a, b, c, d, e, f = self.params
    magnitude = np.abs(x)
    power = np.power(np.maximum(a * magnitude + b, 0.0), g) + e
    y = np.where(magnitude >= d, power, c * magnitude + f)
    return np.copysign(y, x)  # mirrored below zero, as colour-science and LittleCMS extend

  def from_linear(self, y: np.ndarray) -> np.ndarray:
    """Linear values in [0, 1] -> codes in [0, 1] (float32; `y` is clipped to [0, 1])."""
    y = np.clip(y, 0.0, 1.0, dtype=np.float32)
    if self.table is not None:
      rising = np.maximum.accumulate(self.table)
      return np.interp(y, rising, np.linspace(0.0, 1.0, len(rising))).astype(np.float32)
    g, a, b, c, d, e, f = self.params
    # In place: a 24 MP photo is 72 M values, and every temporary costs as much as the power.
    x = np.subtract(y, e, dtype=np.float32)
    np.maximum(x, 0.0, out=x)
    np.power(x, np.float32(1.0 / g), out=x)
    x -= b
    x /= a
    knee = (a * d + b) ** g + e if a * d + b > 0 else e
    low = y < knee
    if np.any(low):
      x[low] = (y[low] - f) / c if c else d
    return x


@dataclasses.dataclass(frozen=True)
class MatrixShaper:
  """What a matrix/TRC profile says: `to_pcs` `[3, 3]` (linear RGB -> D50 XYZ) and 3 curves."""

  to_pcs: np.ndarray
  curves: tuple[_Curve, _Curve, _Curve]


def _s15f16(data: bytes, offset: int, count: int) -> list[float]:
  return [v / 65536 for v in struct.unpack_from(f'>{count}i', data, offset)]


def _curve(tag: bytes) -> _Curve | None:
  kind = tag[:4]
  if kind == b'curv' and len(tag) >= 12:
    (count,) = struct.unpack_from('>I', tag, 8)
    if count == 0:
      return _Curve(params=(1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    if count == 1:
      (gamma,) = struct.unpack_from('>H', tag, 12)
      return _Curve(params=(gamma / 256, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    if len(tag) < 12 + 2 * count:
      return None
    table = np.array(struct.unpack_from(f'>{count}H', tag, 12), np.float64) / 65535
    return _Curve(table=table)
  if kind == b'para' and len(tag) >= 12:
    (function,) = struct.unpack_from('>H', tag, 8)
    count = _PARA_COUNTS.get(function)
    if count is None or len(tag) < 12 + 4 * count:
      return None
    p = _s15f16(tag, 12, count)
    if p[0] <= 0 or (function > 0 and p[1] == 0):
      return None
    if function == 0:
      return _Curve(params=(p[0], 1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    g, a, b = p[:3]
    if function == 1:  # (aX + b)^g from X = -b/a, 0 below
      return _Curve(params=(g, a, b, 0.0, -b / a, 0.0, 0.0))
    if function == 2:  # (aX + b)^g + c from X = -b/a, c below
      return _Curve(params=(g, a, b, 0.0, -b / a, p[3], p[3]))
    if function == 3:
      return _Curve(params=(g, a, b, p[3], p[4], 0.0, 0.0))
    return _Curve(params=(g, a, b, p[3], p[4], p[5], p[6]))
  return None


@functools.lru_cache(maxsize=64)
def matrix_shaper(profile: bytes) -> MatrixShaper | None:
  """The matrix and curves of an RGB matrix/TRC profile; None for any other kind."""
  if colour_spaces.colour_space_of(profile) != 'RGB':
    return None
  tags = colour_spaces.icc_tags(profile)
  if any(tag in tags for tag in _LUT_TAGS):
    return None
  columns = []
  for name in (b'rXYZ', b'gXYZ', b'bXYZ'):
    tag = tags.get(name, b'')
    if tag[:4] != b'XYZ ' or len(tag) < 20:
      return None
    columns.append(_s15f16(tag, 8, 3))
  curves = tuple(_curve(tags.get(name, b'')) for name in (b'rTRC', b'gTRC', b'bTRC'))
  to_pcs = np.array(columns).T
  if any(curve is None for curve in curves) or abs(np.linalg.det(to_pcs)) < 1e-6:
    return None
  return MatrixShaper(to_pcs, curves)


def working_shaper(name: str) -> MatrixShaper:
  """The matrix and curves of working space `name` (all of them are matrix/TRC)."""
  return matrix_shaper(colour_spaces.profile_bytes(name))


def _linear(values: np.ndarray, shaper: MatrixShaper) -> np.ndarray:
  if values.dtype in (np.uint8, np.uint16):
    # Each code's linear value once, then a lookup: a 24 MP photo has few distinct codes.
    top = np.iinfo(values.dtype).max
    codes = np.arange(top + 1, dtype=np.float64) / top
    tables = [curve.to_linear(codes).astype(np.float32) for curve in shaper.curves]
    if all(np.array_equal(tables[0], table) for table in tables[1:]):
      return np.take(tables[0], values)  # one pass when the channels share a curve (usual)
    return np.stack([np.take(tables[i], values[..., i]) for i in range(3)], axis=-1)
  values = values.astype(np.float32)
  return np.stack([shaper.curves[i].to_linear(values[..., i]) for i in range(3)], axis=-1)


def convert(
  values: np.ndarray, source: MatrixShaper, target: MatrixShaper
) -> tuple[np.ndarray, np.ndarray]:
  """RGB codes `[H, W, 3]` of `source` (uint8, uint16, or float in [0, 1]) -> (float32 codes of
  `target` clipped to [0, 1], bool `[H, W]`: the pixels whose colour `target` cannot hold)."""
  matrix = np.linalg.solve(target.to_pcs, source.to_pcs).astype(np.float32)
  linear = _linear(values, source) @ matrix.T
  encoded = np.empty(linear.shape, np.float32)
  outside = np.zeros(linear.shape[:-1], bool)
  for i, curve in enumerate(target.curves):
    # The curves rise, so a code beyond [0, 1] is a linear value beyond these two.
    low, high = curve.to_linear(np.array([-CLIP_TOLERANCE, 1 + CLIP_TOLERANCE]))
    outside |= (linear[..., i] < low) | (linear[..., i] > high)
    encoded[..., i] = curve.from_linear(linear[..., i])
  return encoded, outside
