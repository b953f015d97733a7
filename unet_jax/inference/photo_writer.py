"""Encodes a graded photo like the file it came from: container, bit depth, ICC profile, EXIF.

`output_spec(photo, predict_config)` decides what a graded file is, `encode_photo` makes its
bytes. By default (`config.predict.output_*='same'`):
- JPEG stays JPEG (quality `jpeg_quality`, 4:4:4 chroma), WebP stays WebP, 8-bit PNG stays
  8-bit PNG, 16-bit PNG and TIFF stay 16-bit of the same format. HEIC/AVIF become JPEG (libvips
  here has no HEVC encoder).
- Pixels go from the working space back to the input's ICC profile, which is embedded; an
  untagged input gives an untagged sRGB file, as it was. Only an RGB display or output-class
  profile that LittleCMS can convert into is written back: grey and CMYK inputs, and RGB
  pixels tagged with a camera/scanner input profile (class `scnr`, often A2B0 only), a grey or
  CMYK profile, or a profile whose tags are damaged, are written as RGB in the working space
  (a grade may add colour; ink limits are the printer's business), and `OutputSpec.note` says
  why for the summary.
- EXIF is copied with the orientation set to 1: the pixels were turned upright on reading. For
  TIFF, whose EXIF libvips neither reads nor writes, Pillow reads the tags and
  `tiff_exif.add_exif` appends them to the file.
Colours outside the output profile are clipped and counted. Conversions to a matrix/TRC
profile are exact, in float (`data/matrix_shaper.py`); others go through LittleCMS.
"""

import dataclasses
import functools
import os

import ml_collections
import numpy as np
import pyvips
from PIL import Image

from unet_jax.data import colour_spaces, matrix_shaper, tiff_exif
from unet_jax.data.images import Photo
from unet_jax.data.vips_errors import first_line
from unet_jax.data.working_space import clipped_count
from unet_jax.options import check_choices

_EXTENSIONS = {'jpeg': '.jpg', 'png': '.png', 'tiff': '.tif', 'webp': '.webp'}
_CONTAINERS = {
  '.jpg': 'jpeg',
  '.jpeg': 'jpeg',
  '.png': 'png',
  '.tif': 'tiff',
  '.tiff': 'tiff',
  '.webp': 'webp',
}  # anything else (HEIC, AVIF) becomes JPEG
_EIGHT_BIT_ONLY = ('jpeg', 'webp')
_ORIENTATION_TAG = 0x0112


@dataclasses.dataclass(frozen=True)
class OutputSpec:
  """What a graded file will be."""

  container: str  # jpeg | png | tiff | webp
  bits: int  # 8 or 16
  profile: bytes | None  # embedded and converted to; None: untagged sRGB
  extension: str  # with the dot
  note: str | None = None  # why the input's own profile was not used, when it was not

  @property
  def profile_name(self) -> str:
    return colour_spaces.describe(self.profile)


def check_output_options(predict: ml_collections.ConfigDict) -> None:
  """ValueError naming the `config.predict.*` option that cannot work."""
  check_choices(predict, section='predict')
  if predict.output_format == 'jpeg' and str(predict.output_bits) == '16':
    raise ValueError(
      "config.predict.output_bits='16' cannot be JPEG (8 bits only): use "
      "config.predict.output_format='png' or 'tiff'."
    )
  if not 1 <= predict.jpeg_quality <= 100:
    raise ValueError(
      f'config.predict.jpeg_quality must be in [1, 100]; got {predict.jpeg_quality}.'
    )


def _container(input_path: str, predict: ml_collections.ConfigDict) -> str:
  # From the name, so that output names can be planned before any file is decoded.
  if predict.output_format != 'same':
    return predict.output_format
  return _CONTAINERS.get(os.path.splitext(input_path)[1].lower(), 'jpeg')


def planned_extension(input_path: str, predict: ml_collections.ConfigDict) -> str:
  """The graded file's extension: the input's own when the container stays, e.g. '.JPG'."""
  container = _container(input_path, predict)
  extension = os.path.splitext(input_path)[1]
  if _CONTAINERS.get(extension.lower()) == container:
    return extension
  return _EXTENSIONS[container]


def output_spec(photo: Photo, input_path: str, predict: ml_collections.ConfigDict) -> OutputSpec:
  """The container, bits, profile and extension of the graded file of `photo`."""
  container = _container(input_path, predict)
  if container in _EIGHT_BIT_ONLY:
    bits = 8
  elif str(predict.output_bits) == 'same':
    bits = 8 if photo.bits == 8 else 16
  else:
    bits = int(predict.output_bits)
  note = None
  if predict.output_profile != 'same':
    profile = colour_spaces.profile_bytes(predict.output_profile)
  elif photo.colours != 'rgb':
    profile = colour_spaces.profile_bytes(photo.working_space)
  else:
    profile = photo.profile
    refusal = None if profile is None else unwritable_reason(profile)
    if refusal is not None:
      profile = colour_spaces.profile_bytes(photo.working_space)
      note = (
        f'the input profile ({colour_spaces.describe(photo.profile)}) {refusal}: written in '
        f'the working space {colour_spaces.describe(profile)} instead'
      )
  return OutputSpec(container, bits, profile, planned_extension(input_path, predict), note)


_WRITABLE_CLASSES = {b'mntr': 'display', b'prtr': 'output'}


@functools.lru_cache(maxsize=64)
def unwritable_reason(profile: bytes) -> str | None:
  """Why graded RGB pixels cannot be written in `profile` (None: they can).

  Checked from the header (an RGB display or output-class profile), then by converting one
  pixel into it, which fails for a profile without a usable B2A table or matrix.
  """
  if len(profile) < 132 or profile[36:40] != b'acsp':
    return 'is not a valid ICC profile'
  space = colour_spaces.colour_space_of(profile)
  if space != 'RGB':
    return f'describes {space or "unknown"} colours, not RGB'
  kind = profile[12:16]
  if kind not in _WRITABLE_CLASSES:
    name = kind.decode('ascii', 'replace').strip()
    return f"is an input or device-link profile (class '{name}'), not a display profile"
  try:
    pixel = pyvips.Image.black(1, 1, bands=3).cast('ushort').copy(interpretation='rgb16')
    pixel.icc_transform(
      colour_spaces.profile_file(profile, 'embedded'),
      input_profile=colour_spaces.profile_path('srgb'),
      intent='relative',
      depth=16,
    ).numpy()
  except pyvips.Error as error:
    return f'cannot be converted into ({first_line(error)})'
  return None


def _upright_exif(exif: bytes | None) -> bytes | None:
  """The EXIF block with its orientation set to 1 (libvips sets it too; this covers TIFF)."""
  if not exif:
    return None
  tags = Image.Exif()
  try:
    tags.load(exif)
  except Exception:  # A damaged block is dropped rather than copied into the graded file.
    return None
  if _ORIENTATION_TAG in tags:
    tags[_ORIENTATION_TAG] = 1
  return tags.tobytes()


def encode_photo(
  pixels: np.ndarray, photo: Photo, spec: OutputSpec, jpeg_quality: int = 95
) -> tuple[bytes, int]:
  """`[H, W, 3]` float in the working space of `photo` -> (file bytes, clipped pixels)."""
  pixels = np.clip(pixels, 0.0, 1.0)
  target = spec.profile
  same = (target is None and photo.working_space == 'srgb') or (
    target is not None and colour_spaces.same_colours(target, photo.working_space)
  )
  clipped = 0
  if same:
    top = 255.0 if spec.bits == 8 else 65535.0
    dtype = np.uint8 if spec.bits == 8 else np.uint16
    image = _vips_rgb(np.round(pixels * top).astype(dtype))
  elif (exact := _exact_target(target)) is not None:
    converted, outside = matrix_shaper.convert(
      pixels, matrix_shaper.working_shaper(photo.working_space), exact
    )
    top = 255.0 if spec.bits == 8 else 65535.0
    dtype = np.uint8 if spec.bits == 8 else np.uint16
    image = _vips_rgb(np.round(converted * top).astype(dtype))
    clipped = int(np.count_nonzero(outside))
  else:
    source = np.round(pixels * 65535.0).astype(np.uint16)
    image = _vips_rgb(source).icc_transform(
      colour_spaces.profile_file(target, 'embedded') if target is not None else 'srgb',
      input_profile=colour_spaces.profile_path(photo.working_space),
      intent='relative',
      depth=spec.bits,
    )
    converted = image.numpy().reshape(*source.shape[:2], -1)
    clipped = clipped_count(source, converted)
    image = _vips_rgb(converted)
  image = image.copy()
  if target is not None:
    image.set_type(pyvips.GValue.blob_type, 'icc-profile-data', target)
  exif = _upright_exif(photo.exif)
  if exif is not None and spec.container != 'tiff':
    image.set_type(pyvips.GValue.blob_type, 'exif-data', exif)
    image.set_type(pyvips.GValue.gint_type, 'orientation', 1)
  data = _save(image, spec, jpeg_quality)
  if exif is not None and spec.container == 'tiff':
    data = tiff_exif.add_exif(data, exif)
  return data, clipped


def _exact_target(target: bytes | None) -> matrix_shaper.MatrixShaper | None:
  """The output profile's matrix and curves (untagged: sRGB) when it is a matrix/TRC profile,
  converted to exactly in float; None leaves it to LittleCMS."""
  return matrix_shaper.matrix_shaper(target or colour_spaces.profile_bytes('srgb'))


def _vips_rgb(array: np.ndarray) -> pyvips.Image:
  interpretation = 'rgb16' if array.dtype == np.uint16 else 'srgb'
  return pyvips.Image.new_from_array(np.ascontiguousarray(array)).copy(
    interpretation=interpretation
  )


def _save(image: pyvips.Image, spec: OutputSpec, jpeg_quality: int) -> bytes:
  if spec.container == 'jpeg':
    return image.jpegsave_buffer(Q=jpeg_quality, subsample_mode='off', optimize_coding=True)
  if spec.container == 'webp':
    return image.webpsave_buffer(Q=jpeg_quality)
  if spec.container == 'png':
    return image.pngsave_buffer(bitdepth=spec.bits)
  return image.tiffsave_buffer(compression='deflate', predictor='horizontal')
