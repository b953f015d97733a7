"""HEVC-coded HEIC (what phones write), which the libvips wheel cannot decode (its libheif reads
AVIF only): decoded by pillow-heif into a libvips image that `images.read_photo` treats like any
other file."""

import numpy as np
import pyvips

from unet_jax.data.errors import DataError

# Set on images decoded outside libvips (HEVC HEIC): they are whole in memory already.
_DECODED_BY = 'unet-jax-decoder'


def is_hevc(image: pyvips.Image) -> bool:
  """An HEVC-coded HEIF (what phones write): the libvips wheel's libheif decodes AVIF only."""
  return (
    image.get('vips-loader').startswith('heifload')
    and image.get_typeof('heif-compression') != 0
    and image.get('heif-compression') == 'hevc'
  )


def is_decoded(image: pyvips.Image) -> bool:
  return image.get_typeof(_DECODED_BY) != 0


def decode_hevc(data: bytes, name: str) -> pyvips.Image:
  """An HEVC HEIC decoded by pillow-heif (libheif with libde265 inside its wheel) as a libvips
  image in memory with the file's ICC profile and EXIF, so the rest of `read_photo` treats it
  like any other file. libheif turns the pixels upright (the file's rotation and mirror
  properties, which phones keep in step with the EXIF orientation), so the orientation is 1.
  8-bit files give uint8; 10- and 12-bit files uint16 over the full 16-bit range."""
  try:
    import pillow_heif  # noqa: PLC0415 - only HEIC files need it
  except ImportError:
    raise DataError(
      f'{name}: an HEVC-coded HEIC; reading it needs pillow-heif (pip install pillow-heif).'
    ) from None
  try:
    heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=False)
    pixels = np.ascontiguousarray(np.asarray(heif))
  except Exception as error:  # libheif's errors are plain RuntimeErrors/ValueErrors
    raise DataError(f'{name}: an HEIC that pillow-heif cannot decode ({error}).') from None
  interpretation = 'rgb16' if pixels.dtype == np.uint16 else 'srgb'
  image = pyvips.Image.new_from_array(pixels).copy(interpretation=interpretation)
  image.set_type(pyvips.GValue.gstr_type, 'vips-loader', 'heifload')
  image.set_type(pyvips.GValue.gstr_type, _DECODED_BY, 'pillow-heif')
  for field, key in (('icc-profile-data', 'icc_profile'), ('exif-data', 'exif')):
    if heif.info.get(key):
      image.set_type(pyvips.GValue.blob_type, field, bytes(heif.info[key]))
  # libvips takes an orientation out of the EXIF block just set: the pixels are upright already.
  image.set_type(pyvips.GValue.gint_type, 'orientation', 1)
  return image
