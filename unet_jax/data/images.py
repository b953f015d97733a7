"""Decodes photo files into float32 RGB `[H, W, 3]` in [0, 1] of a working space, or says which
file is broken. One decoder for training pairs, eval and predict, built on libvips (LittleCMS
colour management, libjpeg-turbo, libpng, libtiff, libwebp, libheif for AVIF), with
pillow-heif for HEVC-coded HEIC (phones' photos), which the libvips wheel cannot decode.

What a file becomes (the contract every loader here shares):
- Colour: the embedded ICC profile is converted to the working space (`colour_spaces.py`,
  `config.data.working_space`), relative colorimetric; a file without profile is taken as sRGB.
  RGB matrix/TRC profiles (sRGB, Display P3, Adobe RGB, ProPhoto and their kin) are converted
  exactly, in float (`matrix_shaper.py`); other profiles (CMYK, grey, lookup tables) with
  LittleCMS at 16 bits. Colours outside the working space are clipped, and the pixels that were
  are counted (`Photo.clipped_pixels`). A profile equal to the working space's skips the transform,
  so such files, and untagged files in an sRGB run, are read bit for bit.
- Precision: 8-bit files give value / 255 exactly, 16-bit RGB, RGBA and grayscale PNG and TIFF
  value / 65535 (no 8-bit step anywhere); a converted file keeps float precision (LittleCMS's
  transforms: 16 bits). 32-bit
  integer files give value / 65535, float files are clipped to [0, 1].
- EXIF orientation is applied, so a camera JPEG stored sideways and its upright edited export
  line up pixel for pixel.
- Transparency is composited over black (RGB times alpha, in the working space), so invisible
  pixels never carry stray colours. Grayscale is repeated on the three channels.
- Size: a file whose header claims more than `max_pixels` pixels (`config.data.max_pixels`,
  default `DEFAULT_MAX_PIXELS`) is refused before its pixels are decoded: a few-KB JPEG can
  claim 65000 x 65000 pixels (a decompression bomb) and would take tens of GB to decode.
- CMYK with a profile is colour-managed like RGB; CMYK without one uses the plain formula
  `(1 - C)(1 - K)` in 8 bits, as Pillow does: nothing says which press it was made for.
"""

import contextlib
import dataclasses
import io
import logging
import os

import numpy as np
import pyvips
from PIL import Image

from unet_jax.data import colour_spaces, heic, tiff_exif
from unet_jax.data.errors import DataError
from unet_jax.data.vips_errors import first_line
from unet_jax.data.working_space import (
  clipped_count,
  exact_shaper,
  exact_to_working_space,
  needs_transform,
  plain_cmyk_image,
  to_working_space,
)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.tif', '.tiff', '.webp', '.heic', '.heif', '.avif')
DEFAULT_WORKING_SPACE = 'srgb'
# 200 MP: above any camera sold (the largest medium-format backs give 150 MP) and a stitched
# panorama of most sizes; a float32 copy of it is 2.4 GB.
DEFAULT_MAX_PIXELS = 200_000_000
# EXIF orientations 5..8 swap width and height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_BITS = {'uchar': 8, 'char': 8, 'ushort': 16, 'short': 16, 'uint': 32, 'int': 32, 'float': 32}
_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.uint32): 65535.0}

# libvips' operation cache keeps the last results (and the file bytes they hold) alive; a data
# pipeline never decodes the same bytes twice in a row, so the cache would only cost memory.
pyvips.cache_set_max(0)
# pyvips logs every libvips thread pool at INFO; a training run would print thousands.
logging.getLogger('pyvips').setLevel(logging.WARNING)


@dataclasses.dataclass(frozen=True)
class Photo:
  """A decoded file: pixels in the working space, and what the writer needs to match it."""

  pixels: np.ndarray  # float32 [H, W, 3] in [0, 1]
  working_space: str
  profile: bytes | None  # the embedded ICC profile; None: untagged, read as sRGB
  colours: str  # 'rgb', 'grey' or 'cmyk', of the file
  bits: int  # 8, 16 or 32 per channel, of the file
  container: str  # 'jpeg', 'png', 'tiff', 'webp', 'heif', ...
  exif: bytes | None  # the EXIF block as stored (its orientation already applied to the pixels)
  converted: bool  # False when the pixels are the file's values, unchanged
  clipped_pixels: int  # pixels with a colour outside the working space (clipped to its edge)

  @property
  def profile_name(self) -> str:
    return colour_spaces.describe(self.profile)


def is_image_file(name: str) -> bool:
  """True for the extensions we read (case-insensitive); hidden files never count."""
  base = os.path.basename(name)
  return not base.startswith('.') and base.lower().endswith(IMAGE_EXTENSIONS)


def _open(data: bytes, name: str, access: str = 'random') -> pyvips.Image:
  if not data:
    raise DataError(f'{name}: empty file (0 bytes).')
  try:
    # 'truncated': a cut JPEG or PNG is an error, not a photo with a grey bottom half.
    return pyvips.Image.new_from_buffer(data, '', fail_on='truncated', access=access)
  except pyvips.Error as error:
    raise DataError(f'{name}: not an image that libvips can read ({first_line(error)}).') from None


def _orientation(image: pyvips.Image) -> int:
  if image.get_typeof('orientation') == 0:
    return 1
  with contextlib.suppress(pyvips.Error, TypeError, ValueError):
    return int(image.get('orientation'))
  return 1


def check_pixel_count(image: pyvips.Image, name: str, max_pixels: int | None) -> None:
  """DataError when the header claims more than `max_pixels` pixels (None: the default)."""
  limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
  if image.width * image.height > limit:
    raise DataError(
      f'{name}: its header says {image.width}x{image.height} '
      f'({image.width * image.height:,} pixels), more than config.data.max_pixels={limit} '
      '(a guard against decompression bombs): not decoded. Raise config.data.max_pixels if '
      'the photo is real.'
    )


def image_size(data: bytes, name: str, max_pixels: int | None = None) -> tuple[int, int]:
  """(height, width) after EXIF orientation, from the header only (cheap, no pixel decode)."""
  image = _open(data, name)
  check_pixel_count(image, name, max_pixels)
  height, width = image.height, image.width
  if _orientation(image) in _TRANSPOSING_ORIENTATIONS:
    width, height = height, width
  return height, width


def _blob(image: pyvips.Image, field: str) -> bytes | None:
  if image.get_typeof(field) == 0:
    return None
  value = bytes(image.get(field))
  return value or None


def _tiff_exif(data: bytes) -> bytes | None:
  """A TIFF's EXIF tags as an EXIF block (libvips does not read them); None if unreadable."""
  try:
    return tiff_exif.descriptive_exif(Image.open(io.BytesIO(data)).getexif())
  except Exception:  # Metadata never makes a photo unreadable.
    return None


def read_photo(
  data: bytes,
  name: str,
  working_space: str = DEFAULT_WORKING_SPACE,
  max_pixels: int | None = None,
) -> Photo:
  """Encoded file bytes -> a Photo in `working_space`; DataError naming `name` if broken or
  larger than `max_pixels` (None: DEFAULT_MAX_PIXELS)."""
  colour_spaces.check_working_space(working_space)
  image = _open(data, name)
  check_pixel_count(image, name, max_pixels)
  if heic.is_hevc(image):
    image = heic.decode_hevc(data, name)  # already upright: libheif applies the file's rotation
  container = image.get('vips-loader').split('load')[0]
  exif = _blob(image, 'exif-data') or (_tiff_exif(data) if container == 'tiff' else None)
  profile = _blob(image, 'icc-profile-data')
  try:
    if _orientation(image) in (1, 0) and not heic.is_decoded(image):
      # Top to bottom in one pass: a quarter faster than random access, and enough unturned.
      image = _open(data, name, access='sequential')
    else:
      with contextlib.suppress(pyvips.Error):  # a damaged EXIF block leaves pixels as stored
        image = image.autorot()
    colour_bands = image.bands - int(image.hasalpha())
    colours = {1: 'grey', 3: 'rgb', 4: 'cmyk'}.get(colour_bands)
    if colours is None:
      raise DataError(f'{name}: {image.bands} channels; expected grey, RGB or CMYK (with alpha).')
    if image.format in ('float', 'double'):
      profile = None  # float files hold linear or scene values that no ICC profile here describes
    bits = _BITS.get(image.format, 8)
    if colours == 'cmyk' and profile is None:
      image = plain_cmyk_image(image)
    converted = needs_transform(profile, image, working_space)
    shaper = exact_shaper(profile, image) if converted else None
    if converted and shaper is None:
      image = image.copy_memory()  # decoded once: read again below to count clipped colours
      source, image = image, to_working_space(image, profile, working_space, name)
    pixels = image.numpy()
  except pyvips.Error as error:
    raise DataError(f'{name}: truncated or corrupt image ({first_line(error)}).') from None
  pixels = pixels.reshape(*pixels.shape[:2], -1)
  if shaper is not None:
    pixels, clipped = exact_to_working_space(pixels, shaper, working_space)
  else:
    clipped = clipped_count(source.numpy(), pixels) if converted else 0
  return Photo(
    _to_float_rgb(pixels, has_alpha=pixels.shape[-1] in (2, 4)),
    working_space,
    profile,
    colours,
    bits,
    container,
    exif,
    converted,
    clipped,
  )


def _to_float_rgb(pixels: np.ndarray, *, has_alpha: bool) -> np.ndarray:
  scale = _SCALES.get(pixels.dtype)
  out = pixels.astype(np.float32)
  if scale is None:
    np.clip(out, 0.0, 1.0, out=out)
  else:
    # In place: on a 1536 px photo this halves the time spent after the decoder.
    np.divide(out, np.float32(scale), out=out)
    if pixels.dtype == np.uint32:
      np.clip(out, 0.0, 1.0, out=out)
  if has_alpha:
    out = out[..., :-1] * out[..., -1:]
  if out.shape[-1] == 1:
    out = np.repeat(out, 3, axis=-1)
  return np.ascontiguousarray(out)


def decode_image(
  data: bytes,
  name: str,
  working_space: str = DEFAULT_WORKING_SPACE,
  max_pixels: int | None = None,
) -> np.ndarray:
  """Encoded file bytes -> float32 `[H, W, 3]` in [0, 1]; DataError naming `name` if broken."""
  return read_photo(data, name, working_space, max_pixels).pixels


def read_bytes(path: str | os.PathLike) -> bytes:
  """The file's bytes; DataError naming it if it is missing, not a file or unreadable."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(f'{path}: no such file.')
  if not os.path.isfile(path):
    raise DataError(f'{path}: not a file.')
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as error:
    raise DataError(f'{path}: cannot be read ({error.strerror or error}).') from None


def load_photo(
  path: str | os.PathLike,
  working_space: str = DEFAULT_WORKING_SPACE,
  max_pixels: int | None = None,
) -> Photo:
  """An image file -> a Photo (pixels and what the file was); DataError naming it if broken."""
  return read_photo(read_bytes(path), os.fspath(path), working_space, max_pixels)


def load_image(
  path: str | os.PathLike,
  working_space: str = DEFAULT_WORKING_SPACE,
  max_pixels: int | None = None,
) -> np.ndarray:
  """An image file -> float32 `[H, W, 3]` in [0, 1] of `working_space`, EXIF applied.

  Raises DataError naming the file if it is missing, empty, truncated, not an image, or larger
  than `max_pixels`.
  """
  return load_photo(path, working_space, max_pixels).pixels


def to_uint8(image: np.ndarray) -> np.ndarray:
  """float `[..., 3]` in [0, 1] -> uint8, rounded (the inverse of decoding an 8-bit file)."""
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def verify_image(
  data: bytes,
  name: str,
  working_space: str = DEFAULT_WORKING_SPACE,
  max_pixels: int | None = None,
) -> tuple[tuple[int, int], Photo]:
  """Decodes the pixels once to prove the file is whole: ((height, width) after EXIF, Photo).

  Raises the same DataError messages as `read_photo`.
  """
  photo = read_photo(data, name, working_space, max_pixels)
  return photo.pixels.shape[:2], photo
