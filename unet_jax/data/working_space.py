"""Decoded pixels into the run's working space: exact float conversion for RGB matrix/TRC
profiles (`matrix_shaper.py`), LittleCMS at 16 bits for the rest, the plain formula for CMYK
without a profile, and a count of the pixels clipped to the working space's gamut."""

import numpy as np
import pyvips

from unet_jax.data import colour_spaces, matrix_shaper
from unet_jax.data.errors import DataError
from unet_jax.data.matrix_shaper import MatrixShaper
from unet_jax.data.vips_errors import first_line


def _cmyk_plain(cmyk: np.ndarray) -> np.ndarray:
  """uint8 CMYK `[H, W, 4]` -> uint8 RGB, `(255 - C)(255 - K) / 255` rounded as Pillow does."""
  ink = cmyk.astype(np.int32)
  rest = 255 - ink[..., 3:]
  product = ink[..., :3] * rest + 128
  return (rest - (((product >> 8) + product) >> 8)).astype(np.uint8)


def plain_cmyk_image(image: pyvips.Image) -> pyvips.Image:
  cmyk = image.numpy()
  if cmyk.dtype == np.uint16:
    cmyk = (cmyk >> 8).astype(np.uint8)
  rgb = _cmyk_plain(cmyk[..., :4])
  if cmyk.shape[-1] == 5:
    rgb = np.dstack([rgb, cmyk[..., 4:]])
  return pyvips.Image.new_from_array(rgb).copy(interpretation='srgb')


def needs_transform(profile: bytes | None, image: pyvips.Image, working_space: str) -> bool:
  if image.format in ('float', 'double'):
    return False
  if profile is None:
    return working_space != 'srgb'  # untagged grey and RGB are sRGB
  is_rgb = image.bands - int(image.hasalpha()) == 3
  return not (is_rgb and colour_spaces.same_colours(profile, working_space))


def exact_shaper(profile: bytes | None, image: pyvips.Image) -> MatrixShaper | None:
  """The file's matrix/TRC profile (sRGB when untagged) when its RGB pixels can be converted
  exactly in float; None sends them through LittleCMS (grey, CMYK, lookup-table profiles)."""
  if image.bands - int(image.hasalpha()) != 3 or image.format not in ('uchar', 'ushort'):
    return None
  return matrix_shaper.matrix_shaper(profile or colour_spaces.profile_bytes('srgb'))


def exact_to_working_space(
  pixels: np.ndarray, shaper: MatrixShaper, working_space: str
) -> tuple[np.ndarray, int]:
  """uint8/uint16 RGB(A) `[H, W, 3 or 4]` -> (float32 in [0, 1] of the working space, alpha
  kept as a fraction; pixels clipped to its gamut)."""
  rgb, outside = matrix_shaper.convert(
    pixels[..., :3], shaper, matrix_shaper.working_shaper(working_space)
  )
  if pixels.shape[-1] == 4:
    alpha = pixels[..., 3:].astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)
    rgb = np.concatenate([rgb, alpha], axis=-1)
  return rgb, int(np.count_nonzero(outside))


def to_working_space(
  image: pyvips.Image, profile: bytes | None, working_space: str, name: str
) -> pyvips.Image:
  try:
    return image.icc_transform(
      colour_spaces.profile_path(working_space),
      embedded=profile is not None,
      input_profile='srgb',
      intent='relative',
      depth=16,
    )
  except pyvips.Error as error:
    raise DataError(
      f'{name}: its embedded ICC profile ({colour_spaces.describe(profile)}) cannot convert '
      f'it to {working_space} ({first_line(error)}).'
    ) from None


def clipped_count(source: np.ndarray, converted: np.ndarray) -> int:
  """Pixels pushed to the edge of the working space although inside the file's own range.

  A colour strictly inside the source space's range that lands on 0 or the maximum of some
  channel was outside the working space and has been clipped there (LittleCMS clips).
  """
  source = source.reshape(*source.shape[:2], -1)
  colour = slice(0, converted.shape[-1] - (1 if converted.shape[-1] in (2, 4) else 0))
  top = np.iinfo(converted.dtype).max
  at_edge = np.any((converted[..., colour] == 0) | (converted[..., colour] == top), axis=-1)
  source_bands = source.shape[-1] - (1 if source.shape[-1] in (2, 4, 5) else 0)
  inner = source[..., :source_bands]
  source_top = np.iinfo(source.dtype).max if source.dtype.kind == 'u' else 1
  inside = np.all((inner > 0) & (inner < source_top), axis=-1)
  return int(np.count_nonzero(at_edge & inside))
