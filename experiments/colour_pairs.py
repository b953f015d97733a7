"""Does a 16-bit Adobe RGB export teach the same grade as the same pairs made sRGB 8-bit first?

The built-in photos and their graded targets (sRGB, look 'local_contrast') are exported twice:
- `adobe16/`: input and target as 16-bit Adobe RGB (1998) TIFFs with the profile embedded,
  what Lightroom writes;
- `srgb8/`: those same TIFFs converted to 8-bit sRGB PNGs beforehand (LittleCMS, relative
  colorimetric), what a user without colour management would feed in.
Both train the same config (`configs/default.py`, fewer steps) with `working_space='srgb'`, same
seed and data order. Each model is then scored on the held-out 16-bit pairs (read into sRGB by
the decoder, the same data for both) and on its own held-out pairs; PSNR is in the working
space. The claim holds if the two models are within 0.3 dB.

  python -m experiments.colour_pairs --steps=400
  python -m experiments.colour_pairs --small --steps=100   # experiments/results/colour_pairs.json
"""

import json
import pathlib
import shutil
import tempfile

import numpy as np
import pyvips
from absl import app, flags

from configs import default
from unet_jax import data
from unet_jax.data import builtin, colour_spaces, load_image
from unet_jax.inference import (
  evaluate,
  restore,
)
from unet_jax.training import loop

_STEPS = flags.DEFINE_integer('steps', 400, 'Training steps per run.')
_SMALL = flags.DEFINE_bool(
  'small', False, 'A 2-level, 8-channel U-Net on 32 px crops: minutes on a busy 2-core machine.'
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where to keep the runs (default: a temp dir).')
_RESULT = flags.DEFINE_string('result', None, 'Also write the numbers to this JSON file.')


def _rgb16(pixels: np.ndarray) -> pyvips.Image:
  """float `[H, W, 3]` in [0, 1] -> a 16-bit libvips image."""
  codes = np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
  return pyvips.Image.new_from_array(codes).copy(interpretation='rgb16')


def export_pairs(root: pathlib.Path) -> None:
  """Writes `root/adobe16` and `root/srgb8` from the built-in pairs (both splits)."""
  source = builtin.build_folder('local_contrast')
  adobe = colour_spaces.profile_path('adobe_rgb')
  for path in sorted(source.glob('*/*/*.png')):
    split, side = path.parent.parent.name, path.parent.name
    srgb = load_image(path)
    exported = _rgb16(srgb).icc_transform(adobe, input_profile='srgb', depth=16)
    exported = exported.copy()
    exported.set_type(
      pyvips.GValue.blob_type, 'icc-profile-data', colour_spaces.profile_bytes('adobe_rgb')
    )
    tiff = root / 'adobe16' / split / side / f'{path.stem}.tif'
    tiff.parent.mkdir(parents=True, exist_ok=True)
    exported.tiffsave(str(tiff), compression='deflate', predictor='horizontal')
    eight = pyvips.Image.new_from_file(str(tiff)).icc_transform('srgb', embedded=True, depth=8)
    png = root / 'srgb8' / split / side / f'{path.stem}.png'
    png.parent.mkdir(parents=True, exist_ok=True)
    eight.copy(interpretation='srgb').pngsave(str(png), keep='none')


def _config(pairs: pathlib.Path, steps: int):
  config = default.get_config()
  config.data.name = 'paired_folders'
  config.data.dir = str(pairs)
  config.data.working_space = 'srgb'
  config.num_train_steps = steps
  if _SMALL.value:
    config.model.levels, config.model.base_channels = 2, 8
    config.data.crop_size = 32
    config.predict.tile_size, config.predict.tile_overlap = 128, 16
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  return config


def _score(workdir: pathlib.Path, pairs: pathlib.Path) -> float:
  """Held-out PSNR (dB, in the working space) of the model in `workdir` on `pairs`."""
  config, model, variables, _ = restore.load_trained_model(str(workdir))
  config.data.dir = str(pairs)
  results = evaluate.evaluate(
    config, model, variables, data_dir=data.tfds_dir(config, str(workdir))
  )
  return float(results['model']['psnr'])


def main(argv):
  del argv
  root = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix='colour_pairs_'))
  try:
    run(root)
  finally:
    if _WORKDIR.value is None:
      shutil.rmtree(root, ignore_errors=True)


def run(root: pathlib.Path) -> None:
  export_pairs(root / 'pairs')
  adobe, srgb = root / 'pairs' / 'adobe16', root / 'pairs' / 'srgb8'
  for name, pairs in (('adobe16', adobe), ('srgb8', srgb)):
    config = _config(pairs, _STEPS.value)
    print(data.dataset_summary(config, data_dir=data.tfds_dir(config, str(root / name))))
    loop.train_and_evaluate(config, str(root / name))
  scores = {
    'adobe16_model_on_adobe16': _score(root / 'adobe16', adobe),
    'srgb8_model_on_adobe16': _score(root / 'srgb8', adobe),
    'srgb8_model_on_srgb8': _score(root / 'srgb8', srgb),
    'adobe16_model_on_srgb8': _score(root / 'adobe16', srgb),
  }
  gap = scores['adobe16_model_on_adobe16'] - scores['srgb8_model_on_adobe16']
  scores['gap_on_adobe16_db'] = gap
  scores['steps'] = _STEPS.value
  print(json.dumps(scores, indent=2))
  verdict = 'holds' if abs(gap) <= 0.3 else 'does not hold'
  print(f'Same mapping within 0.3 dB: {verdict} (gap {gap:+.3f} dB on the 16-bit held-out pairs).')
  if _RESULT.value:
    pathlib.Path(_RESULT.value).write_text(json.dumps(scores, indent=2))


if __name__ == '__main__':
  app.run(main)
