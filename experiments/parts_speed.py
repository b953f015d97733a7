"""What the optional parts of the grade under the U-Net cost (`model.curves`, `model.local_grid`):
seconds per train step, and seconds of the preview of a large photo with that grade alone
(`predict.lut_only`, what a photographer scrolls through), against the config without them.

  python -m experiments.parts_speed --config=configs/photo.py --width=6000 --height=4000

Train step: the library's jitted step (`experiments.step_timing.JaxStep`) on a fixed batch of
`config.batch_size` crops with the whole-photo inputs each row reads. Preview:
`preview.grade_lut_only` on a decoded synthetic photo (the metering of the whole photo and the
grade, in bands). Each is timed once to compile, then the median of `--repeats` calls; rows
alternate call by call, so other load on the machine hits them alike, and the ratio to the
config is the figure. Random-init weights: they do not change the cost.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.step_timing import JaxStep, time_alternating
from experiments.synthetic_photo import synthetic_photo
from unet_jax.inference import preview
from unet_jax.models import create_model
from unet_jax.whole_photo import WholePhotoInputs

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/photo.py', 'Model config.')
_WIDTH = flags.DEFINE_integer('width', 6000, 'Preview photo width (px).')
_HEIGHT = flags.DEFINE_integer('height', 4000, 'Preview photo height (px).')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed previews per row (the median is kept).')
_STEPS = flags.DEFINE_integer('steps', 15, 'Timed train steps per row (the median is kept).')

# Each row: the model options it changes from --config.
ROWS = {
  'config': {},
  'tone_curves': {'curves': 16},
  'local_grid': {'local_grid': 32, 'thumbnail_size': 128},
  'tone_curves_and_local_grid': {'curves': 16, 'local_grid': 32, 'thumbnail_size': 128},
  'auto_levels_curves_grid': {
    'auto_levels': True,
    'curves': 16,
    'local_grid': 32,
    'thumbnail_size': 128,
  },
}


def row_config(config, options: dict):
  config = config.copy_and_resolve_references()
  config.model.update(options)
  return config


def train_step(config) -> JaxStep:
  """The jitted step on random crops from random 128 x 160 photos, with their whole-photo inputs."""
  rng = np.random.default_rng(0)
  crop, count = config.data.crop_size, config.batch_size
  inputs = WholePhotoInputs.from_model_config(config.model).in_training_batches()
  photos = [rng.random((128, 160, 3), np.float32) for _ in range(count)]
  examples = [inputs.of_photo(photo) for photo in photos]
  batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
  if 'coords' in batch:
    batch['coords'] = batch['coords'][:, :crop, :crop]
  batch['input'] = np.stack([photo[:crop, :crop] for photo in photos])
  batch['target'] = rng.random(batch['input'].shape, np.float32)
  return JaxStep(config, batch)


def previewer(config):
  model = create_model(config.model, task=config.task)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return lambda image: preview.grade_lut_only(model, variables, image)


def timed(call, *args) -> float:
  start = time.perf_counter()
  call(*args)
  return time.perf_counter() - start


def time_on(calls: dict, photo: np.ndarray, repeats: int) -> tuple[dict, dict]:
  """Seconds of each `call(photo)`: its first call (the compile) and `repeats` more, the calls
  alternating round by round (`step_timing.time_alternating`), so other load hits them alike."""
  rounds = {key: functools.partial(timed, call, photo) for key, call in calls.items()}
  times = time_alternating(rounds, 0, repeats + 1)
  return {key: t[0] for key, t in times.items()}, {key: t[1:] for key, t in times.items()}


def main(argv: list[str]) -> None:
  del argv
  configs = {name: row_config(_CONFIG.value, options) for name, options in ROWS.items()}
  steps = time_alternating({n: train_step(c) for n, c in configs.items()}, 3, _STEPS.value)
  photo = np.asarray(synthetic_photo(_HEIGHT.value, _WIDTH.value), np.float32) / 255.0
  previews = {name: previewer(config) for name, config in configs.items()}
  first, seconds = time_on(previews, photo, _REPEATS.value)
  megapixels = _WIDTH.value * _HEIGHT.value / 1e6
  step_base = float(np.median(steps['config']))
  preview_base = float(np.median(seconds['config']))
  print(
    f'{jax.devices()[0].platform}: train step (batch {_CONFIG.value.batch_size}, '
    f'{_CONFIG.value.data.crop_size} px crops) and lut_only preview of a {megapixels:.0f} MP photo'
  )
  for name in ROWS:
    step, shown = float(np.median(steps[name])), float(np.median(seconds[name]))
    print(
      f'  {name:28s} step {step:.3f} s ({step / step_base:.2f}x)   preview {shown:.2f} s '
      f'({shown / preview_base:.2f}x; first call {first[name]:.2f} s)'
    )


if __name__ == '__main__':
  app.run(main)
