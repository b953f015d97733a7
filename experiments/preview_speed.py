"""The preview (`predict.lut_only`, `inference/preview.py`) against the grade's own parts: its
seconds on a large photo, and how far it is from them on real photos with trained weights.

  python -m experiments.preview_speed --width=6000 --height=4000 --repeats=3
  python -m experiments.preview_speed --workdir=RUN --input=PHOTOS --width=0

Speed: for each row of `experiments.parts_speed.ROWS` (the `configs/photo.py` model and its
optional parts, random weights: they do not change the cost), the seconds of the preview of a
synthetic photo, its metering included, beside the parts' own code run over the photo in
bands of rows (`model.apply(..., lut_only=True)`), with the whole-photo inputs read off
`whole_photo.metering_view` and off every pixel: the last is what `predict.lut_only` ran
before the preview. Rows and ways alternate call by call; the median of `--repeats` is kept.

Fidelity (`--workdir`): PSNR and largest difference of the preview against the parts' own
output on each photo of `--input`, read into the run's working space as predict reads it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import unet_jax
from experiments.parts_speed import ROWS, row_config, time_on
from experiments.synthetic_photo import synthetic_photo
from unet_jax import data, whole_photo
from unet_jax.inference import files, grading, lut, preview
from unet_jax.models import create_model
from unet_jax.whole_photo import WholePhotoInputs, photo_coords

# --config, --width (0: no speed rows), --height and --repeats are experiments.parts_speed's.
FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained run, for the fidelity rows.')
_INPUT = flags.DEFINE_string('input', None, 'Photos (a file or folder) for the fidelity rows.')


def grade_by_parts(model, variables, image: np.ndarray, rows_per_call: int = 256) -> np.ndarray:
  """The grade under the U-Net by its parts' own code, `rows_per_call` whole rows a call."""
  height, width = image.shape[:2]
  photo = grading.photo_inputs(model, image)
  reads_coords = WholePhotoInputs.from_model_config(model).coords
  band = min(rows_per_call, height)
  output = np.empty((height, width, 3), np.float32)
  for top in range(0, height, band):
    stop = min(top + band, height)
    rows = np.zeros((1, band, width, 3), np.float32)
    rows[0, : stop - top] = image[top:stop]
    coords = None
    if reads_coords:
      ys = np.minimum(np.arange(top, top + band), height - 1)
      coords = jnp.asarray(photo_coords(ys, np.arange(width), height, width)[None])
    graded = _parts(model, variables, jnp.asarray(rows), coords, photo)
    output[top:stop] = np.asarray(graded)[0, : stop - top]
  return output


@functools.partial(jax.jit, static_argnums=0)
def _parts(model, variables, rows, coords, photo):
  return model.apply(
    variables,
    rows,
    thumbnail=photo.get('thumbnail'),
    statistics=photo.get('statistics'),
    coords=coords,
    lut_only=True,
  )


def speed_rows() -> None:
  photo = np.asarray(synthetic_photo(FLAGS.height, FLAGS.width), np.float32) / 255.0
  ways = {}
  for name, options in ROWS.items():
    config = row_config(FLAGS.config, options)
    model = create_model(config.model, task=config.task)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    ways[name, 'preview'] = functools.partial(preview.grade_lut_only, model, variables)
    ways[name, 'parts'] = functools.partial(grade_by_parts, model, variables)
    ways[name, 'before'] = functools.partial(metered_whole, grade_by_parts, model, variables)
  first, seconds = time_on(ways, photo, FLAGS.repeats)
  megapixels = FLAGS.width * FLAGS.height / 1e6
  print(
    f'{jax.devices()[0].platform}: grade under the U-Net of a {megapixels:.0f} MP photo: the '
    'preview; the parts in bands; the parts in bands after metering every pixel (the code '
    'before the preview)'
  )
  for name in ROWS:
    fast, slow, before = (
      float(np.median(seconds[name, way])) for way in ('preview', 'parts', 'before')
    )
    print(
      f'  {name:26s} preview {fast:.2f} s   parts {slow:.2f} s   before {before:.2f} s   '
      f'({before / fast:.1f}x; first calls {first[name, "preview"]:.2f}, '
      f'{first[name, "parts"]:.2f}, {first[name, "before"]:.2f} s)'
    )


def metered_whole(grade, model, variables, image: np.ndarray) -> np.ndarray:
  """`grade(model, variables, image)` with the whole-photo inputs read off every pixel, as
  before `whole_photo.metering_view` (the limit raised past the photo for the call)."""
  limit = whole_photo.METERING_PIXELS
  whole_photo.METERING_PIXELS = image.shape[0] * image.shape[1]
  try:
    return grade(model, variables, image)
  finally:
    whole_photo.METERING_PIXELS = limit


def fidelity_rows() -> None:
  model = unet_jax.load(_WORKDIR.value)
  space = model.config.data.working_space
  print(f'preview against the parts of {_WORKDIR.value}:')
  for path in files.list_inputs(_INPUT.value):
    image = data.load_image(path, space)
    fast = preview.grade_lut_only(model.module, model.variables, image)
    exact = grade_by_parts(model.module, model.variables, image)
    fast, exact = np.clip(fast, 0, 1), np.clip(exact, 0, 1)
    difference = np.abs(fast - exact).max() * 255
    print(f'  {path}: {lut.psnr(fast, exact):.1f} dB, largest difference {difference:.2f} / 255')


def main(argv: list[str]) -> None:
  del argv
  if FLAGS.width:
    speed_rows()
  if _WORKDIR.value:
    fidelity_rows()


if __name__ == '__main__':
  app.run(main)
