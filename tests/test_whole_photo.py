"""`WholePhotoInputs`: one decision, from the model's options, of what a model reads of the
whole photo; the model, the data pipeline and predict all take it from there."""

import numpy as np
import pytest

from tests.helpers import photo
from unet_jax import whole_photo
from unet_jax.config import get_base_config
from unet_jax.models import create_model
from unet_jax.whole_photo import WholePhotoInputs


def _model_config(**options):
  config = get_base_config().model
  config.update(levels=2, base_channels=8, thumbnail_size=16, **options)
  return config


@pytest.mark.parametrize(
  ('options', 'reads', 'batches'),
  [
    ({}, (0, False, False), (0, False, False)),
    # The adaptive LUT reads a thumbnail; with thumbnail='crop', the crop's, in the graph.
    ({'color_head': 'adaptive_lut'}, (16, False, False), (0, False, False)),
    (
      {'color_head': 'adaptive_lut', 'thumbnail': 'photo', 'thumbnail_stats': True},
      (16, True, False),
      (16, True, False),
    ),
    (
      {'color_head': 'lut', 'thumbnail': 'photo', 'exposure': True},
      (16, True, False),
      (16, True, False),
    ),
    # Coordinates are always the photo's: the pipeline adds them.
    ({'color_head': 'lut', 'frame_gain': 3}, (0, False, True), (0, False, True)),
    ({'coords': True}, (0, False, True), (0, False, True)),
    ({'global_context': 'pooled'}, (0, False, False), (0, False, False)),
    (
      {'global_context': 'thumbnail', 'thumbnail': 'photo'},
      (16, False, False),
      (16, False, False),
    ),
  ],
)
def test_what_a_model_reads_and_what_training_batches_carry(options, reads, batches):
  config = _model_config(**options)
  inputs = WholePhotoInputs.from_model_config(config)
  training = inputs.in_training_batches()
  assert (inputs.thumbnail_size, inputs.statistics, inputs.coords) == reads
  assert (training.thumbnail_size, training.statistics, training.coords) == batches
  assert create_model(config, task='enhance').whole_photo == inputs  # the model decides the same


def test_of_photo_makes_what_the_model_reads():
  inputs = WholePhotoInputs(thumbnail_size=8, statistics=True, coords=True)
  photo = np.random.default_rng(0).random((30, 50, 3)).astype(np.float32)
  made = inputs.of_photo(photo)
  assert {k: v.shape for k, v in made.items()} == {
    'thumbnail': (8, 8, 3),
    'statistics': (8,),
    'coords': (30, 50, 2),
  }
  assert made['coords'][0, 0].tolist() == pytest.approx([-1 + 1 / 30, -1 + 1 / 50])
  assert set(inputs.of_photo(photo, coords=False)) == {'thumbnail', 'statistics'}
  assert WholePhotoInputs().of_photo(photo) == {}


def test_a_thumbnail_with_extremes_keeps_each_pixels_darkest_and_brightest_values():
  config = _model_config(thumbnail='photo', local_grid=4, local_grid_extremes=True)
  inputs = WholePhotoInputs.from_model_config(config)
  assert inputs.extremes and create_model(config, task='enhance').whole_photo == inputs
  # Texture finer than the thumbnail's pixels: 4 px squares of 0.2 and 0.8, under a gentle ramp.
  rows, cols = np.mgrid[0:64, 0:128]
  squares = (rows // 4 + cols // 4) % 2 == 0
  image = np.where(squares, 0.2, 0.8)[..., None] + 0.0005 * cols[..., None]
  image = np.repeat(image, 3, axis=-1).astype(np.float32)
  thumbnail = inputs.thumbnail_of(image)
  assert thumbnail.shape == (16, 16, 9)
  np.testing.assert_allclose(thumbnail[..., :3], whole_photo.make_thumbnail(image, 16))
  # The colours average the texture away; the extremes keep its range.
  assert np.ptp(thumbnail[..., :3]) < 0.15
  assert thumbnail[..., 3:6].max() < 0.35 and thumbnail[..., 6:9].min() > 0.65
  fine = whole_photo.make_thumbnail(image, 64)
  np.testing.assert_allclose(thumbnail[2, 5, 3:6], fine[8:12, 20:24].min(axis=(0, 1)))
  np.testing.assert_allclose(thumbnail[2, 5, 6:9], fine[8:12, 20:24].max(axis=(0, 1)))
  assert fine.shape == (64, 64, 3)
  # In the graph (a call that passes no thumbnail) the same, to the resizes' difference.
  in_graph = inputs.fill_in(image[None], None, None, None)[0][0]
  np.testing.assert_allclose(in_graph, thumbnail, atol=0.02)
  # The colours alone, for the whole-photo term's target; and models without the option.
  assert inputs.colour_thumbnail_of(image).shape == (16, 16, 3)
  plain = _model_config(thumbnail='photo', local_grid=4)
  assert WholePhotoInputs.from_model_config(plain).thumbnail_of(image).shape == (16, 16, 3)


def test_a_photo_past_the_metering_limit_is_read_through_a_stride():
  """Its thumbnail and figures come off every 2nd row and column, close to all its pixels'."""
  image = photo(2000, 1400, seed=3)  # 2.8 MP
  view = whole_photo.metering_view(image)
  assert view.shape == (1000, 700, 3) and np.shares_memory(view, image)
  small = image[:1500, :1400]  # 2.1 MP: read whole
  assert whole_photo.metering_view(small) is small
  inputs = WholePhotoInputs(thumbnail_size=32, statistics=True, tones=True).of_photo(image)
  np.testing.assert_array_equal(inputs['statistics'], whole_photo.photo_figures(view, True, np))
  every_pixel = whole_photo.photo_figures(image, True, np)
  np.testing.assert_allclose(inputs['statistics'], every_pixel, atol=0.01)
  full_thumbnail = whole_photo.make_thumbnail(image, 32)
  np.testing.assert_allclose(inputs['thumbnail'], full_thumbnail, atol=0.02)
