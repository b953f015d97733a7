"""Phones' HEVC-coded HEIC: read through pillow-heif (the libvips wheel decodes AVIF only) with
its ICC profile and orientation, graded, and written back as a JPEG with both kept."""

import io
import os

import numpy as np
import pillow_heif
import pytest
import pyvips
from PIL import Image

from tests import photo_files as pf
from tests.helpers import identity_model
from unet_jax.data import DataError, load_photo
from unet_jax.data.images import image_size
from unet_jax.inference import files


def _write_heic(path, values: np.ndarray, *, profile=None, exif=None):
  """An HEVC HEIC as a phone writes one, near-lossless (quality -1, 4:4:4)."""
  height, width = values.shape[:2]
  mode = 'RGB;16' if values.dtype == np.uint16 else 'RGB'
  heif = pillow_heif.from_bytes(mode=mode, size=(width, height), data=values.tobytes())
  if profile is not None:
    heif.info['icc_profile'] = profile
  if exif is not None:
    heif.info['exif'] = exif
  buffer = io.BytesIO()
  heif.save(buffer, quality=-1, chroma=444)
  path.write_bytes(buffer.getvalue())
  return path


def _smooth(height: int, width: int) -> np.ndarray:
  """uint8 gradients through saturated colours: content JPEG keeps within a fraction of a
  CIEDE2000 unit (random codes would measure JPEG's loss, not the colour handling)."""
  y, x = np.mgrid[0:height, 0:width]
  rgb = np.stack([x / (width - 1), y / (height - 1), 1 - (x / (width - 1) + y / (height - 1)) / 2])
  return np.round(255 * rgb.transpose(1, 2, 0)).astype(np.uint8)


def _decoded(path) -> np.ndarray:
  """pillow-heif's own decoding (upright), in [0, 1]: what the reader must have started from."""
  pixels = np.asarray(pillow_heif.open_heif(path.read_bytes(), convert_hdr_to_8bit=False))
  return pixels.astype(np.float64) / (255 if pixels.dtype == np.uint8 else 65535)


def test_the_libvips_wheel_cannot_decode_hevc_itself(tmp_path):
  # Why pillow-heif is needed: libvips reads the header, then fails on the pixels.
  path = _write_heic(tmp_path / 'a.heic', pf.colourful(16, 16, 8))
  with pytest.raises(pyvips.Error):
    pyvips.Image.new_from_file(str(path)).numpy()


def test_phone_heic_read_with_its_profile_and_orientation(tmp_path):
  values = pf.colourful(20, 30, 8, seed=1)  # stored 30 wide, 20 high
  path = _write_heic(
    tmp_path / 'IMG_0001.HEIC',
    values,
    profile=pf.profile('display_p3'),
    exif=pf.exif_block(orientation=6, make='Apple'),
  )
  photo = load_photo(path, 'srgb')
  assert photo.container == 'heif' and photo.bits == 8 and photo.colours == 'rgb'
  # Orientation 6: shown turned 90 degrees clockwise, 20 wide and 30 high, as a JPEG would be.
  assert photo.pixels.shape == (30, 20, 3) and image_size(path.read_bytes(), str(path)) == (30, 20)
  decoded = _decoded(path)
  np.testing.assert_allclose(decoded, np.rot90(values / 255, k=-1), atol=1.5 / 255)
  # The Display P3 profile is honoured: converted to sRGB as colour-science does.
  assert photo.profile == pf.profile('display_p3') and photo.converted
  expected = pf.reference(decoded, 'display_p3', 'srgb')
  inside = np.all((expected > 0) & (expected < 1), axis=-1)
  de = pf.delta_e(photo.pixels[inside], expected[inside], 'srgb')
  assert de.max() < 0.1, de.max()
  # Read in its own space, pillow-heif's values are kept as decoded.
  np.testing.assert_array_equal(load_photo(path, 'display_p3').pixels, decoded.astype(np.float32))


def test_ten_bit_heic_keeps_its_precision(tmp_path):
  values = pf.colourful(12, 16, 16, seed=2)
  path = _write_heic(tmp_path / 'deep.heic', values, profile=pf.profile('display_p3'))
  photo = load_photo(path, 'display_p3')
  assert photo.bits == 16 and not photo.converted
  np.testing.assert_allclose(photo.pixels, values / 65535, atol=2 / 1023)  # 10-bit steps


def test_phone_heic_is_graded_and_written_as_a_jpeg(tmp_path):
  config, model, variables = identity_model('srgb')  # output = input: pixels can be compared
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  values = _smooth(24, 40)
  _write_heic(
    source / 'IMG_0002.heic',
    values,
    profile=pf.profile('display_p3'),
    exif=pf.exif_block(orientation=6, make='Apple'),
  )

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  assert summary['failed'] == [] and os.path.basename(summary['written'][0]['output']) == (
    'IMG_0002.jpg'
  )
  jpeg = Image.open(out / 'IMG_0002.jpg')
  assert jpeg.format == 'JPEG' and jpeg.size == (24, 40)  # upright, 24 wide
  assert jpeg.info['icc_profile'] == pf.profile('display_p3')
  assert jpeg.getexif()[0x0112] == 1 and jpeg.getexif()[0x010F] == 'Apple'
  # Back in the file's own P3 after the sRGB working space, within JPEG's loss ...
  written = load_photo(out / 'IMG_0002.jpg', 'display_p3').pixels
  original = _decoded(source / 'IMG_0002.heic')
  srgb = pf.reference(original, 'display_p3', 'srgb')
  inside = np.all((srgb > 0) & (srgb < 1), axis=-1)
  de = pf.delta_e(written[inside], original[inside], 'display_p3')
  assert de.mean() < 0.5, de.mean()
  # ... where P3 values taken for sRGB ones would be far off: the profile was honoured.
  assert pf.delta_e(srgb[inside], original[inside], 'display_p3').mean() > 2.0


def test_broken_heic_names_the_file(tmp_path):
  path = _write_heic(tmp_path / 'cut.heic', pf.colourful(64, 64, 8))
  data = path.read_bytes()
  path.write_bytes(data[: len(data) - 200])
  with pytest.raises(DataError, match='cut.heic'):
    load_photo(path)
