"""Decoding user files: modes, bit depths, EXIF, and clear errors for broken ones."""

import numpy as np
import pytest
import pyvips
from PIL import Image

from tests.helpers import png16, random_pixels, save
from unet_jax.data import DataError, load_image
from unet_jax.data.images import image_size


@pytest.fixture
def rgb():
  return random_pixels(0, 12, 10)


def _check(image, expected, atol=1e-6):
  assert image.dtype == np.float32 and image.shape == expected.shape
  np.testing.assert_allclose(image, expected, atol=atol)


def test_rgb_png_round_trips_exactly(tmp_path, rgb):
  _check(load_image(save(tmp_path / 'a.png', rgb)), rgb / 255.0)


@pytest.mark.parametrize('mode', ['L', '1', 'P', 'CMYK'])
def test_eight_bit_modes_become_rgb(tmp_path, rgb, mode):
  image = Image.fromarray(rgb).convert(mode)
  path = tmp_path / ('a.jpg' if mode == 'CMYK' else 'a.png')
  image.save(path, quality=100)
  expected = np.asarray(Image.open(path).convert('RGB'), np.float32) / 255.0
  _check(load_image(path), expected)
  if mode in ('L', '1'):
    loaded = load_image(path)
    assert np.array_equal(loaded[..., 0], loaded[..., 2])


@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P'])
def test_alpha_is_composited_over_black(tmp_path, rgb, mode):
  alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
  rgba = Image.fromarray(np.dstack([rgb, alpha]))
  if mode == 'P':
    # A palette with one transparent entry (PNG tRNS), as GIF-style exports have.
    rgb_image = Image.fromarray(rgb).convert('P')
    rgb_image.save(tmp_path / 'a.png', transparency=int(np.asarray(rgb_image)[0, 0]))
  else:
    (rgba if mode == 'RGBA' else rgba.convert(mode)).save(tmp_path / 'a.png')
  assert Image.open(tmp_path / 'a.png').mode == mode
  stored = np.asarray(Image.open(tmp_path / 'a.png').convert('RGBA'), np.float32) / 255.0
  _check(load_image(tmp_path / 'a.png'), stored[..., :3] * stored[..., 3:])


def test_sixteen_bit_grayscale_keeps_precision(tmp_path):
  gray = np.arange(0, 65535, 65535 // 120, dtype=np.uint16)[:120].reshape(12, 10)
  Image.fromarray(gray).save(tmp_path / 'g16.png')
  image = load_image(tmp_path / 'g16.png')
  _check(image, np.repeat(gray[..., None] / 65535.0, 3, -1), atol=1e-6)


def test_sixteen_bit_rgb_keeps_full_precision(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 65536, (6, 5, 3)).astype(np.uint16)
  (tmp_path / 'rgb16.png').write_bytes(png16(pixels))
  _check(load_image(tmp_path / 'rgb16.png'), pixels / 65535.0, atol=1e-7)
  rgba = np.random.default_rng(1).integers(0, 65536, (6, 5, 4)).astype(np.uint16)
  image = pyvips.Image.new_from_array(rgba).copy(interpretation='rgb16')
  (tmp_path / 'rgba16.tif').write_bytes(image.tiffsave_buffer())
  stored = rgba / 65535.0
  _check(load_image(tmp_path / 'rgba16.tif'), stored[..., :3] * stored[..., 3:], atol=1e-6)


def test_exif_orientation_is_applied(tmp_path, rgb):
  exif = Image.Exif()
  exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
  path = save(tmp_path / 'phone.jpg', rgb, exif=exif, quality=100)
  image = load_image(path)
  assert image.shape == (10, 12, 3) and image_size(path.read_bytes(), 'x') == (10, 12)
  upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270), np.float32) / 255
  _check(image, upright)


def test_broken_files_name_the_file(tmp_path, rgb):
  empty = tmp_path / 'empty.png'
  empty.write_bytes(b'')
  text = tmp_path / 'notes.jpg'
  text.write_text('not a photo')
  good = save(tmp_path / 'cut.png', rgb).read_bytes()
  cut = tmp_path / 'cut.png'
  cut.write_bytes(good[: len(good) // 2])
  cases = [
    (empty, 'empty file'),
    (text, 'not an image'),
    (cut, 'truncated or corrupt'),
    (tmp_path / 'missing.png', 'no such file'),
  ]
  for path, message in cases:
    with pytest.raises(DataError, match=message) as error:
      load_image(path)
    assert str(path) in str(error.value)
