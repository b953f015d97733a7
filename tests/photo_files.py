"""Photographers' files made in the tests (no tests here): tagged JPEG, TIFF and PNG via libvips.

Profiles come from libvips (`p3`, `cmyk`, a phone-like Display P3 and a press CMYK) or from
`colour_spaces` (written from the published primaries).
"""

import pathlib
import struct

import colour
import numpy as np
import pyvips
from PIL import Image

from unet_jax.data import colour_spaces

SPACES = colour.RGB_COLOURSPACES
# ProPhoto files carry a pure 1.8 gamma (Adobe's and Kodak's profiles); colour-science's
# 'ProPhoto RGB' has ROMM's linear toe, so the reference gets the curve the files have.
PROPHOTO = SPACES['ProPhoto RGB'].copy()
PROPHOTO.cctf_decoding = lambda v: np.sign(v) * np.abs(v) ** 1.8
PROPHOTO.cctf_encoding = lambda v: np.sign(v) * np.abs(v) ** (1 / 1.8)
REFERENCE = {
  'srgb': SPACES['sRGB'],
  'display_p3': SPACES['Display P3'],
  'adobe_rgb': SPACES['Adobe RGB (1998)'],
  'prophoto_rgb': PROPHOTO,
}


def colourful(height: int, width: int, bits: int, seed: int = 0) -> np.ndarray:
  """Uniform random RGB codes `[H, W, 3]`: saturated colours everywhere, as profile tests need."""
  top = 255 if bits == 8 else 65535
  dtype = np.uint8 if bits == 8 else np.uint16
  return np.random.default_rng(seed).integers(0, top + 1, (height, width, 3)).astype(dtype)


def exif_block(orientation: int = 1, make: str = 'Canon', exposure: float = 0.004) -> bytes:
  tags = Image.Exif()
  tags[0x0112] = orientation
  tags[0x010F] = make
  tags[0x0110] = 'EOS R5'
  tags[0x8769] = {0x829A: exposure, 0x9003: '2026:11:30 10:00:00'}
  return tags.tobytes()


def write(
  path: pathlib.Path,
  pixels: np.ndarray,
  profile: bytes | None = None,
  exif: bytes | None = None,
  interpretation: str | None = None,
  **options,
) -> pathlib.Path:
  """Saves `pixels` (uint8 or uint16 `[H, W, C]`) with an embedded profile and EXIF."""
  image = pyvips.Image.new_from_array(np.ascontiguousarray(pixels))
  if interpretation is None:
    interpretation = 'rgb16' if pixels.dtype == np.uint16 else 'srgb'
  image = image.copy(interpretation=interpretation)
  if profile is not None:
    image.set_type(pyvips.GValue.blob_type, 'icc-profile-data', profile)
  if exif is not None:
    image.set_type(pyvips.GValue.blob_type, 'exif-data', exif)
  path.parent.mkdir(parents=True, exist_ok=True)
  data = image.write_to_buffer(path.suffix, **options)
  if exif is not None and path.suffix in ('.tif', '.tiff'):
    from unet_jax.data import tiff_exif

    data = tiff_exif.add_exif(data, exif)
  path.write_bytes(data)
  return path


def stored(path: pathlib.Path) -> np.ndarray:
  """The file's values as stored (no colour management, no rotation), in [0, 1]."""
  array = pyvips.Image.new_from_file(str(path)).numpy()
  return array.astype(np.float64) / (255 if array.dtype == np.uint8 else 65535)


def reference(values: np.ndarray, source: str, target: str) -> np.ndarray:
  """colour-science's conversion between two working spaces (Bradford, clipped)."""
  converted = colour.RGB_to_RGB(
    values,
    REFERENCE[source],
    REFERENCE[target],
    chromatic_adaptation_transform='Bradford',
    apply_cctf_decoding=True,
    apply_cctf_encoding=True,
  )
  return np.clip(np.nan_to_num(converted), 0, 1)


def delta_e(a: np.ndarray, b: np.ndarray, space: str) -> np.ndarray:
  """CIEDE2000 between two images of the same working space, per pixel."""
  rgb = REFERENCE[space]

  def lab(x):
    xyz = colour.RGB_to_XYZ(x, rgb, apply_cctf_decoding=True)
    return colour.XYZ_to_Lab(xyz, rgb.whitepoint)

  return colour.delta_E(lab(a), lab(b), method='CIE 2000')


def profile(name: str) -> bytes:
  return colour_spaces.profile_bytes(name)


def bomb_jpeg(width: int = 65000, height: int = 65000) -> bytes:
  """A tiny real JPEG whose header (SOF0) claims `width` x `height`."""
  data = bytearray(pyvips.Image.black(16, 16, bands=3).jpegsave_buffer(Q=50))
  sof = data.index(b'\xff\xc0')
  struct.pack_into('>HH', data, sof + 5, height, width)
  return bytes(data)
