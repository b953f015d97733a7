"""Seconds to grade a large photo with the grade under the U-Net alone (`predict.lut_only`, the
preview a photographer scrolls through), for a config with and without the optional parts.

  python -m experiments.preview_speed --config=configs/photo.py --width=6000 --height=4000

Times `grading.grade_lut_only` on a decoded synthetic photo (the metering of the whole photo and
the grade, in bands): once to compile, then the median of `--repeats` calls. Each row is the
config with some model options changed; rows alternate call by call, so other load on the
machine hits them alike. Random-init weights: they do not change the cost.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.synthetic_photo import synthetic_photo
from unet_jax.inference import grading
from unet_jax.models import create_model

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/photo.py', 'Model config.')
_WIDTH = flags.DEFINE_integer('width', 6000, 'Photo width (px).')
_HEIGHT = flags.DEFINE_integer('height', 4000, 'Photo height (px).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per row (the median is kept).')

# Each row: the model options it changes from --config.
ROWS = {
  'config': {},
  'tone_curves': {'curves': 16},
  'local_grid': {'local_grid': 32, 'thumbnail_size': 128},
  'tone_curves_and_local_grid': {'curves': 16, 'local_grid': 32, 'thumbnail_size': 128},
}


def grader(config, options: dict):
  model_config = config.model.copy_and_resolve_references()
  model_config.update(options)
  model = create_model(model_config, task=config.task)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return lambda image: grading.grade_lut_only(model, variables, image)


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  photo = np.asarray(synthetic_photo(_HEIGHT.value, _WIDTH.value), np.float32) / 255.0
  graders = {name: grader(config, options) for name, options in ROWS.items()}
  compile_seconds, times = {}, {name: [] for name in ROWS}
  for name, grade in graders.items():
    start = time.perf_counter()
    grade(photo)
    compile_seconds[name] = time.perf_counter() - start
  for _ in range(_REPEATS.value):
    for name, grade in graders.items():
      start = time.perf_counter()
      grade(photo)
      times[name].append(time.perf_counter() - start)
  megapixels = _WIDTH.value * _HEIGHT.value / 1e6
  print(f'{megapixels:.0f} MP photo, {jax.devices()[0].platform}, lut_only preview:')
  base = float(np.median(times['config']))
  for name in ROWS:
    median = float(np.median(times[name]))
    print(
      f'  {name:28s} {median:6.2f} s (first call {compile_seconds[name]:.2f} s), '
      f'{median / base:.2f}x the config'
    )


if __name__ == '__main__':
  app.run(main)
