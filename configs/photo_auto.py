"""The CPU recipe for pairs whose editor set each photo's tones with its auto tools (auto levels,
auto gamma, a grey-world or auto white balance): per-photo levels read off the whole photo's
histogram, fitted alone to the training pairs before the first step and held, under the U-Net's
local edits. About 4 minutes on 2 CPU cores for 128 pairs. Why: the `levels_prefit_unet` row
of experiments/results/editor_looks_prefit.md; for any other look use configs/photo.py.

  python -m unet_jax.main --config=configs/photo_auto.py --workdir=runs/photo_auto \
    --config.data.name=paired_folders --config.data.dir=/path/to/pairs
"""

import importlib.util
import pathlib


def _photo_config():
  """configs/photo.py's config, read beside this file (wherever it is run from)."""
  spec = importlib.util.spec_from_file_location(
    'photo', pathlib.Path(__file__).with_name('photo.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config():
  config = _photo_config()
  # The levels alone carry the look; the recipe's LUT and tone curves cost 3 dB each on such
  # looks, its exposure 2 (the report's rows), so they are off.
  config.model.auto_levels = True
  config.model.auto_levels_offset = True
  config.optimizer.auto_levels_prefit = True
  config.model.exposure = False
  config.model.color_head = 'none'
  config.model.frame_gain = 0
  config.model.global_context = 'none'
  config.model.thumbnail_stats = False
  return config
