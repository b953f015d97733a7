"""Tiled inference: matches whole-image inference, one compile per tile shape, safe file output."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from tests.helpers import PHOTO_SIZE as SIZE
from tests.helpers import photo, psnr, random_variables
from unet_jax import data
from unet_jax.config import get_base_config
from unet_jax.inference import files, grading, tile_programs, tiling
from unet_jax.models import UNet


def _whole(model: UNet, variables: dict, image: np.ndarray, **kwargs) -> np.ndarray:
  """Whole-image inference, the reference that tiling must reproduce."""
  return np.asarray(model.apply(variables, image[None], train=False, **kwargs))[0]


@pytest.mark.parametrize(
  'levels, global_context, tile, overlap, batch_tiles',
  [
    pytest.param(2, False, 32, 12, 1, marks=pytest.mark.slow),
    pytest.param(3, False, 48, 16, 3, marks=pytest.mark.slow),
    (2, True, 48, 16, 2),
    pytest.param(3, True, 48, 16, 1, marks=pytest.mark.slow),
  ],
)
def test_tiled_matches_whole_image(levels, global_context, tile, overlap, batch_tiles):
  model = UNet(levels=levels, base_channels=8, norm='batch', global_context=global_context)
  variables = random_variables(model)
  image = photo(*SIZE)
  whole = _whole(model, variables, image)
  assert np.std(whole - image) > 0.02  # the net really edits the photo

  tiled = grading.grade_image(
    model, variables, image, tile_size=tile, tile_overlap=overlap, batch_tiles=batch_tiles
  )

  assert tiled.shape == whole.shape and tiled.dtype == np.float32
  print(f'tiled vs whole: {psnr(tiled, whole):.1f} dB')
  assert psnr(tiled, whole) >= 50.0
  # No colour shift from tiling: the mean colour agrees within half an 8-bit level.
  np.testing.assert_allclose(tiled.mean(axis=(0, 1)), whole.mean(axis=(0, 1)), atol=0.5 / 255)


@pytest.mark.slow
def test_global_context_is_the_whole_images_from_tile_cores():
  model = UNet(levels=3, base_channels=8, norm='batch', global_context=True)
  variables = random_variables(model)
  image = photo(*SIZE, seed=1)
  exact = _whole(model, variables, image, return_pooled_context=True)
  multiple, tile = 8, 48
  rows = tiling.tile_offsets(SIZE[0], tile, 16, multiple)
  cols = tiling.tile_offsets(SIZE[1], tile, 16, multiple)
  shared = grading._global_context(
    model,
    variables,
    tile_programs.TileBatches(image, tile, 2),
    [(r, c) for r in rows for c in cols],
    rows,
    cols,
    *SIZE,
    multiple,
  )
  assert np.linalg.norm(shared[0] - exact) < 0.1 * np.linalg.norm(exact)


@pytest.mark.slow
def test_small_image_is_one_padded_tile_and_no_new_compile():
  model = UNet(levels=2, base_channels=8, norm='batch')
  variables = random_variables(model, seed=3)
  tiling = dict(tile_size=32, tile_overlap=8)
  grading.grade_image(model, variables, photo(40, 70), **tiling)
  compiled = tile_programs.grade_tiles._cache_size()

  small = photo(20, 27)
  graded = grading.grade_image(model, variables, small, **tiling)
  tiny = grading.grade_image(model, variables, photo(1, 5), **tiling)

  assert tile_programs.grade_tiles._cache_size() == compiled
  assert graded.shape == (20, 27, 3) and tiny.shape == (1, 5, 3)
  assert np.isfinite(graded).all() and np.isfinite(tiny).all()
  # Whole-image inference pads with zeros past the bottom-right border where the tile reflects
  # the photo, so only the last rows and columns differ noticeably.
  whole = _whole(model, variables, small)
  print(
    f'small image: {psnr(graded, whole):.1f} dB, away from the reflected border '
    f'{psnr(graded[:12, :16], whole[:12, :16]):.1f} dB'
  )
  assert psnr(graded[:12, :16], whole[:12, :16]) >= 50.0


def test_bad_tile_size_names_the_option():
  model = UNet(levels=3, base_channels=4)
  with pytest.raises(ValueError, match=r'config\.predict\.tile_size=36'):
    grading.grade_image(model, {}, np.zeros((8, 8, 3), np.float32), tile_size=36, tile_overlap=4)
  with pytest.raises(ValueError, match=r'config\.predict\.tile_overlap=16'):
    grading.grade_image(model, {}, np.zeros((8, 8, 3), np.float32), tile_size=32, tile_overlap=16)


@pytest.mark.parametrize('size, tile, overlap, multiple', [(97, 32, 8, 4), (131, 48, 20, 16)])
def test_layout_is_aligned_and_weights_sum_to_one(size, tile, overlap, multiple):
  offsets = tiling.tile_offsets(size, tile, overlap, multiple)
  extent = -(-size // multiple) * multiple
  assert all(o % multiple == 0 for o in offsets)
  assert offsets[0] == 0 and offsets[-1] + tile == extent
  total = np.zeros(size)
  for offset, weight in zip(offsets, tiling.axis_weights(offsets, tile, size), strict=True):
    assert (weight > 0).all()
    total[offset : offset + weight.shape[0]] += weight
  np.testing.assert_allclose(total, 1.0, atol=1e-6)
  cores = tiling.axis_cores(offsets, tile, size, multiple)
  owned = sorted((o + a, o + b) for o, (a, b) in zip(offsets, cores, strict=True))
  assert owned[0][0] == 0 and owned[-1][1] == extent
  assert all(owned[i][1] == owned[i + 1][0] for i in range(len(owned) - 1))


# ---------------------------------------------------------------------------------------------
# Files. The plain init has a zero head, so with residual=True the model is exactly the
# identity: outputs can be compared pixel for pixel with the decoded inputs.


@pytest.fixture(scope='module')
def identity():
  config = get_base_config()
  config.model.levels, config.model.base_channels = 2, 4
  config.predict.tile_size, config.predict.tile_overlap = 32, 8
  model = UNet(levels=2, base_channels=4)
  variables = random_variables(model, head_scale=0.0)
  return config, model, variables


def _save(path, height: int, width: int, seed: int = 0, **kwargs) -> None:
  Image.fromarray((photo(height, width, seed) * 255).astype(np.uint8)).save(path, **kwargs)


def test_writes_files_like_their_inputs_and_keeps_earlier_outputs(identity, tmp_path):
  config, model, variables = identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  _save(source / 'a.png', 30, 45)
  _save(source / 'b.tif', 40, 20, seed=1)
  (source / 'notes.txt').write_text('not a photo')

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  assert sorted(os.path.basename(w['output']) for w in summary['written']) == ['a.png', 'b.tif']
  assert summary['failed'] == []
  for name in ('a.png', 'b.tif'):
    graded = np.asarray(Image.open(out / name), np.float32) / 255
    np.testing.assert_allclose(graded, data.load_image(source / name), atol=1 / 255)
  first = (out / 'a.png').read_bytes()

  again = files.predict_paths(config, model, variables, str(source / 'a.png'), str(out))

  assert [os.path.basename(w['output']) for w in again['written']] == ['a-1.png']
  assert (out / 'a.png').read_bytes() == first


def test_refuses_to_write_into_the_input_folder(identity, tmp_path):
  config, model, variables = identity
  source = tmp_path / 'in'
  source.mkdir()
  _save(source / 'a.png', 30, 45)
  before = (source / 'a.png').read_bytes()
  (tmp_path / 'link').symlink_to(source, target_is_directory=True)

  for output in (source, tmp_path / 'link', tmp_path / 'in' / '.' / '..' / 'in'):
    with pytest.raises(ValueError, match='input folder'):
      files.predict_paths(config, model, variables, str(source), str(output))
  # A single photo's own folder is its input folder too.
  with pytest.raises(ValueError, match='input folder'):
    files.predict_paths(config, model, variables, str(source / 'a.png'), str(tmp_path / 'link'))

  assert (source / 'a.png').read_bytes() == before
  assert sorted(os.listdir(source)) == ['a.png']


def test_refuses_an_output_that_is_an_input_file(identity, tmp_path):
  config, model, variables = identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  out.mkdir()
  _save(source / 'a.png', 30, 45)
  before = (source / 'a.png').read_bytes()
  (out / 'a.png').symlink_to(source / 'a.png')

  with pytest.raises(ValueError, match='would overwrite an input'):
    files.check_paths(str(source), str(out))
  assert (source / 'a.png').read_bytes() == before


def test_broken_file_is_reported_and_the_rest_written(identity, tmp_path):
  config, model, variables = identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  _save(source / 'a.png', 30, 45)
  (source / 'b.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
  _save(source / 'c.webp', 33, 33, seed=2)

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  assert sorted(os.listdir(out)) == ['a.png', 'c.webp', 'predict_summary.json']
  assert [os.path.basename(f['input']) for f in summary['failed']] == ['b.jpg']
  assert 'b.jpg' in summary['failed'][0]['reason']


def test_diverged_weights_write_nothing_and_are_reported(identity, tmp_path):
  # Finite but huge weights (what a run with a huge learning rate keeps) grade to NaN/Inf.
  config, model, _ = identity
  diverged = jax.tree.map(lambda x: np.full_like(x, 1e30), random_variables(model))
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  _save(source / 'a.png', 30, 45)

  summary = files.predict_paths(config, model, diverged, str(source), str(out))

  assert summary['written'] == []
  assert [os.path.basename(f['input']) for f in summary['failed']] == ['a.png']
  assert 'diverged' in summary['failed'][0]['reason']
  assert sorted(os.listdir(out)) == ['predict_summary.json']


def test_exif_rotated_jpeg_comes_out_upright(identity, tmp_path):
  config, model, variables = identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  exif = Image.Exif()
  exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise (portrait)
  _save(source / 'phone.jpg', 24, 40, exif=exif.tobytes(), quality=95)

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  graded = Image.open(summary['written'][0]['output'])
  assert graded.size == (24, 40)  # (width, height): portrait, as the photo is shown
  assert graded.format == 'JPEG' and graded.getexif()[0x0112] == 1  # upright pixels, upright tag
  upright = np.asarray(Image.open(source / 'phone.jpg').transpose(Image.Transpose.ROTATE_270))
  # JPEG again at quality 95 (a noisy photo): a few levels apart, under 2.5 on average.
  difference = np.abs(np.asarray(graded, np.float32) - upright)
  assert difference.max() <= 16 and difference.mean() < 2.5


def test_segmentation_writes_label_pngs(tmp_path):
  config = get_base_config()
  config.predict.tile_size, config.predict.tile_overlap = 32, 8
  model = UNet(levels=2, base_channels=4, head='segmentation', residual=False, num_classes=3)
  variables = random_variables(model, head_scale=0.0)
  source, out = tmp_path / 'in', tmp_path / 'out'
  source.mkdir()
  _save(source / 'a.png', 37, 50)

  files.predict_paths(config, model, variables, str(source), str(out))

  labels = Image.open(out / 'a.png')
  assert labels.mode == 'L' and labels.size == (50, 37)
  expected = grading.segment_image(
    model, variables, data.load_image(source / 'a.png'), tile_size=32, tile_overlap=8
  )
  np.testing.assert_array_equal(np.asarray(labels), expected)
