"""`predict.lut_only`: the grade under the U-Net, with its colour parts baked into one table per
photo and its frame parts sliced a band of rows at a time, against the parts' own code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import PHOTO_SIZE, photo, psnr, random_variables
from unet_jax.config import get_base_config
from unet_jax.inference import grading, preview
from unet_jax.models import create_model
from unet_jax.models.global_grade import frame_field_planes, sample_frame_field
from unet_jax.whole_photo import photo_coords


def _model(**overrides):
  config = get_base_config().model
  config.update(levels=2, base_channels=8, lut_size=9, thumbnail='photo', **overrides)
  return create_model(config, task='enhance')


def _global_grade(model, variables, image: np.ndarray) -> np.ndarray:
  """The parts' own output for the whole photo: the model's `lut_only` pass."""
  inputs = grading.photo_inputs(model, image)
  apply = jax.jit(lambda v, x: model.apply(v, x, lut_only=True, **inputs))
  return np.asarray(apply(variables, jnp.asarray(image)[None]))[0]


def test_separable_slice_of_a_frame_field_is_the_pointwise_one():
  field = jax.random.normal(jax.random.key(0), (7, 7, 5))
  height, width = 23, 41
  coords = photo_coords(np.arange(height), np.arange(width), height, width)
  pointwise = sample_frame_field(field, jnp.asarray(coords))
  planes = frame_field_planes(field, jnp.asarray(coords[:, 0, 0]), jnp.asarray(coords[0, :, 1]))
  np.testing.assert_allclose(np.moveaxis(np.asarray(planes), 0, -1), pointwise, atol=1e-6)


@pytest.mark.parametrize(
  'detail',
  [{}, dict(local_grid_detail=True, local_grid_extremes=True)],
  ids=['grid', 'grid_weighing_detail'],
)
def test_a_lut_with_a_local_grid_and_a_frame_gain_is_graded_exactly(detail):
  # 65 - 1 is a multiple of 9 - 1: the baked table holds the colour head's LUT exactly, and
  # the frame parts are sliced as the model slices them. The last band is padded (97 rows).
  model = _model(color_head='lut', frame_gain=5, local_grid=8, thumbnail_size=32, **detail)
  variables = random_variables(model)
  image = photo(*PHOTO_SIZE, seed=8)
  exact = _global_grade(model, variables, image)
  graded = preview.grade_lut_only(model, variables, image, rows_per_call=40)
  assert np.abs(exact - image).max() > 0.05
  # Float32 rounding of outputs up to ~3 (random weights) in other orders: a few ulp.
  np.testing.assert_allclose(graded, exact, atol=5e-6)


@pytest.mark.parametrize(
  'overrides',
  [
    dict(color_head='adaptive_lut', exposure=True),
    pytest.param(
      dict(auto_levels=True, curves=8, local_grid=8, thumbnail_size=32), marks=pytest.mark.slow
    ),
  ],
)
def test_adaptive_colour_parts_are_within_the_tables_interpolation(overrides):
  model = _model(**overrides)
  variables = random_variables(model)
  image = photo(*PHOTO_SIZE, seed=8)
  exact = _global_grade(model, variables, image)
  graded = preview.grade_lut_only(model, variables, image, rows_per_call=40)
  assert np.abs(exact - image).max() > 0.01
  print(f'preview vs the parts: {psnr(graded, exact):.1f} dB')
  # Random weights make colour maps far rougher than trained ones (BENCHMARKS.md has those).
  assert psnr(graded, exact) > 40.0


def test_a_model_without_a_grade_under_the_unet_is_refused():
  with pytest.raises(ValueError, match='color_head'):
    preview.grade_lut_only(_model(), random_variables(_model()), photo(16, 16))
