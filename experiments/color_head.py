"""Ablation of the colour head, whole-photo context and coordinates on every built-in look.

Rows (each a short run of `configs/photo.py` with options changed, trained and cached by the
shared sweep runner `experiments/sweep.py`, scored on the 3 held-out built-in photos at full
size):

- `unet`: no colour head, no thumbnail, no coords (the default config's model, on the
  recipe's crops and steps);
- `default_config`: `configs/default.py` as it ships, with its own steps and crop size (what a
  user gets who points the default config at their pairs);
- `lut`: one learned 3D LUT under the U-Net;
- `adaptive_lut`: image-adaptive LUT whose weights read a thumbnail of the training crop;
- `adaptive_lut_thumb`: ... of the whole photo (and the U-Net's global context reads it too);
- `recipe` (`configs/photo.py`): one learned 33^3 LUT (not adaptive) under the curvature
  prior, the thumbnail driving the U-Net's global context, the photo's metering statistics, the
  exposure stage, the frame gain (its curvature term too), a 10x step for the global grade
  (100x for the exposure) and the global grade's own L1 term (0.1); `recipe_adaptive_lut` mixes
  its LUT per photo instead (the recipe until 2026-12-03), `recipe_coords` adds the coordinates
  to the U-Net's input, `recipe_crop_context` pools the U-Net's global context over the training
  crop instead of reading the whole photo's thumbnail (and so has no exposure stage and no
  metering figures), `recipe_exposure_lr10` steps the exposure like the rest of the grade
  (its step before 2026-12-04), `recipe_lut_17` is the recipe of color_head_600_lut17.md (a
  17^3 LUT under total variation, no curvature terms; its frame gain now centred), each
  `recipe_no_*` row takes one addition away, `recipe_grade_first` holds the U-Net still for the
  first 200 steps, and `grade_only` / `grade_only_adaptive_lut` never train it (what the global
  grade alone learns).

and rows that need no training (least-squares LUTs, `FITS`): `identity` (the input itself),
`best_fit_lut_joint`, one 17^3 LUT fitted to the held-out photos' own targets (the best any
single global grade of that size does on them: what the acceptance compares with),
`best_fit_lut_joint_33`, the same with 33^3 points (the recipe's size), `best_fit_lut`, one
17^3 LUT per held-out photo (an oracle that knows each photo's target), and `train_fit_lut` /
`train_fit_lut_33_curvature`, fitted to the training photos instead, with the weak pull towards
the identity or with the curvature prior: what a LUT learned from the training photos can do
on photos it has not seen. Runs resume: a finished run's
`result.json` is reused.

With `--pairs_root`, the looks are paired folders under it instead of built-in looks (the
editor looks of `experiments/editor_looks.py`: `--pairs_root=runs/editor_looks
--looks=im_auto_level,...`); their runs and the report follow the same rows, scored on each
folder's `test` split, and the fits to the training pairs use `--fit_pixels_per_photo` pixels
of each (all pixels of 128 photos of 0.7 megapixels would not fit in memory).

  nice -n 10 python -m experiments.color_head --steps=300 --seeds=0 --budget_minutes=45
  python -m experiments.color_head --report_only
"""

import json
import os
import re
import sys
import time

import numpy as np
from absl import app, flags

import configs.default
import configs.photo
from experiments import local_grid_fit, sweep
from experiments.lut_fits import best_fit_lut, fit_lut
from unet_jax import data, metrics, paths
from unet_jax.models import lut as lut_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOKS = ('warm_film', 'local_contrast', 'vignette', 'auto_exposure')
# What the rows before the recipe's later additions switch off, so each keeps its meaning.
_WITHOUT_ADDITIONS = {
  'model.color_head': 'adaptive_lut',
  'model.thumbnail_stats': False,
  'model.frame_gain': 0,
  'model.exposure': False,
  'loss.lut_smoothness': 1e-4,
  'loss.lut_curvature': 0.0,
  'loss.frame_gain_curvature': 0.0,
  'model.lut_size': 17,
}
# The tone curves and local grid of `recipe_curves_local`, which the rows after it build on.
_CURVES_LOCAL = {'model.curves': 16, 'model.local_grid': 32, 'model.thumbnail_size': 128}
# The auto levels with their 8-bit offset, fitted alone before training and held.
_LEVELS_PREFIT = {
  'model.auto_levels': True,
  'model.auto_levels_offset': True,
  'optimizer.auto_levels_prefit': True,
}
# ... and no other part of the recipe's grade under the U-Net.
_LEVELS_ALONE = {
  **_LEVELS_PREFIT,
  'model.exposure': False,
  'model.color_head': 'none',
  'model.frame_gain': 0,
  'model.global_context': 'none',
  'model.thumbnail_stats': False,
}
ROWS = {
  'recipe': (
    'exposure + one 33^3 LUT + frame gain, thumbnail context and statistics (configs/photo.py)',
    {},
  ),
  'recipe_adaptive_lut': (
    'recipe with an image-adaptive LUT (3 bases mixed per photo)',
    {'model.color_head': 'adaptive_lut'},
  ),
  'recipe_coords': ('recipe, the coordinates also as U-Net input', {'model.coords': True}),
  'recipe_crop_context': (
    'recipe, its global context pooled over the training crop, not the whole photo',
    # The exposure and the metering figures read the whole photo's thumbnail: they go with it.
    {
      'model.global_context': 'pooled',
      'model.thumbnail': 'crop',
      'model.exposure': False,
      'model.thumbnail_stats': False,
    },
  ),
  'recipe_exposure_lr10': (
    "recipe, the exposure at the global grade's 10x step",
    {'optimizer.exposure_lr_factor': 1.0},
  ),
  'recipe_grade_loss_1': ('recipe, global grade loss weight 1', {'loss.global_grade': 1.0}),
  'recipe_no_exposure': ('recipe without the exposure stage', {'model.exposure': False}),
  'recipe_lut_17': (
    'recipe with a 17^3 LUT under total variation 1.0, no curvature terms (as before 2026-12-04)',
    {
      'model.lut_size': 17,
      'loss.lut_smoothness': 1.0,
      'loss.lut_curvature': 0.0,
      'loss.frame_gain_curvature': 0.0,
    },
  ),
  'recipe_no_lut_curvature': (
    'recipe, total variation 1.0 in place of the LUT curvature',
    {'loss.lut_smoothness': 1.0, 'loss.lut_curvature': 0.0},
  ),
  'recipe_no_frame_gain_curvature': (
    "recipe without the frame gain's curvature term",
    {'loss.frame_gain_curvature': 0.0},
  ),
  'recipe_lut_smoothness_1e-4': (
    'recipe plus the LUT total variation of Zeng et al. (1e-4, the base config)',
    {'loss.lut_smoothness': 1e-4},
  ),
  'recipe_no_frame_gain': ('recipe without the frame gain', {'model.frame_gain': 0}),
  'recipe_no_stats': ('recipe without the thumbnail statistics', {'model.thumbnail_stats': False}),
  'recipe_no_grade_loss': (
    'recipe without the global grade loss',
    {'loss.global_grade': 0.0},
  ),
  'recipe_no_grade_loss_lr1': (
    'recipe without the global grade loss, the global grade at the base learning rate',
    {
      'loss.global_grade': 0.0,
      'optimizer.global_grade_lr_factor': 1.0,
      'optimizer.exposure_lr_factor': 1.0,
    },
  ),
  'recipe_grade_first': (
    'recipe, the U-Net held still for the first 200 steps',
    {'optimizer.grade_first_steps': 200},
  ),
  'recipe_lut_curvature_100': ('recipe, LUT curvature weight 100', {'loss.lut_curvature': 100.0}),
  'recipe_curves': (
    "recipe plus per-photo tone curves read off each photo's histogram (model.curves=16)",
    {'model.curves': 16},
  ),
  'recipe_local': (
    'recipe plus the local affine grid (model.local_grid=32 off a 128 px thumbnail)',
    {'model.local_grid': 32, 'model.thumbnail_size': 128},
  ),
  'recipe_curves_local': (
    'recipe plus tone curves and the local affine grid',
    dict(_CURVES_LOCAL),
  ),
  'recipe_levels': (
    "recipe plus per-photo auto levels read off each photo's histogram (model.auto_levels)",
    {'model.auto_levels': True},
  ),
  'recipe_levels_no_exposure': (
    'recipe with auto levels in place of the exposure stage',
    {'model.auto_levels': True, 'model.exposure': False},
  ),
  'recipe_levels_curves_local': (
    'recipe plus auto levels, tone curves and the local affine grid',
    {
      'model.auto_levels': True,
      'model.curves': 16,
      'model.local_grid': 32,
      'model.thumbnail_size': 128,
    },
  ),
  'recipe_levels_fitted': (
    'recipe_levels_curves_local with the auto levels also fitted alone to the target '
    '(loss.auto_levels=1)',
    {
      'model.auto_levels': True,
      'model.curves': 16,
      'model.local_grid': 32,
      'model.thumbnail_size': 128,
      'loss.auto_levels': 1.0,
    },
  ),
  'recipe_levels_prefit': (
    'recipe_levels_curves_local with the auto levels and their 8-bit offset fitted alone to the '
    'training pairs first, then held (optimizer.auto_levels_prefit, model.auto_levels_offset)',
    {**_LEVELS_PREFIT, **_CURVES_LOCAL},
  ),
  'recipe_levels_prefit_grade_only': (
    'recipe_levels_prefit with the U-Net held still: the grade alone',
    {**_LEVELS_PREFIT, **_CURVES_LOCAL, 'optimizer.grade_first_steps': 10**9},
  ),
  'recipe_levels_prefit_no_exposure': (
    'recipe_levels_prefit without the exposure stage',
    {**_LEVELS_PREFIT, **_CURVES_LOCAL, 'model.exposure': False},
  ),
  'levels_prefit_unet': (
    'the prefitted auto levels under the U-Net, no other part of the grade',
    _LEVELS_ALONE,
  ),
  'levels_prefit_unet_lut': (
    "levels_prefit_unet with the recipe's 33^3 LUT",
    {**_LEVELS_ALONE, 'model.color_head': 'lut'},
  ),
  'levels_prefit_unet_curves': (
    'levels_prefit_unet with tone curves',
    {**_LEVELS_ALONE, 'model.curves': 16},
  ),
  'levels_prefit_unet_grid': (
    'levels_prefit_unet with the local affine grid',
    {**_LEVELS_ALONE, 'model.local_grid': 32, 'model.thumbnail_size': 128},
  ),
  'levels_prefit_unet_grid_stats_whole': (
    'levels_prefit_unet_grid with the local statistics and the whole-photo term',
    {
      **_LEVELS_ALONE,
      'model.local_grid': 32,
      'model.thumbnail_size': 128,
      'model.local_grid_statistics': True,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'levels_prefit_unet_frame_gain': (
    "levels_prefit_unet with the recipe's frame gain",
    {**_LEVELS_ALONE, 'model.frame_gain': 9},
  ),
  'recipe_curves_local_mixed': (
    'recipe_curves_local, half the training examples whole photos squeezed into the crop '
    "(data.sampling='mixed')",
    {
      **_CURVES_LOCAL,
      'data.sampling': 'mixed',
    },
  ),
  'recipe_curves_local_whole': (
    'recipe_curves_local, the grade also fitted to each whole photo at thumbnail size '
    '(loss.whole_photo_grade=1)',
    {
      **_CURVES_LOCAL,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'recipe_curves_local_whole_10': (
    'recipe_curves_local_whole with the whole-photo term at weight 10',
    {
      **_CURVES_LOCAL,
      'loss.whole_photo_grade': 10.0,
    },
  ),
  'recipe_curves_local_stats': (
    "recipe_curves_local, the grid's network also reading the thumbnail's local means and "
    'spreads (model.local_grid_statistics)',
    {
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
    },
  ),
  'recipe_curves_local_stats_whole': (
    'recipe_curves_local_stats with the whole-photo term (loss.whole_photo_grade=1)',
    {
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'recipe_curves_local_extremes_whole': (
    "recipe_curves_local_stats_whole, the grid's network also reading the local extremes "
    '(model.local_grid_extremes)',
    {
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
      'model.local_grid_extremes': True,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'recipe_curves_local_detail_whole': (
    "recipe_curves_local_stats_whole, each pixel's local transform also weighing its detail "
    'against the local means (model.local_grid_detail)',
    {
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
      'model.local_grid_detail': True,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'recipe_curves_local_detail_extremes_whole': (
    'recipe_curves_local_detail_whole with the local extremes: the detail also measured '
    'between them (model.local_grid_extremes)',
    {
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
      'model.local_grid_extremes': True,
      'model.local_grid_detail': True,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'recipe_curves_local_detail_prefit': (
    'recipe_curves_local_detail_extremes_whole with the local grid fitted as one transform '
    'before training (optimizer.local_grid_prefit)',
    {
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
      'model.local_grid_extremes': True,
      'model.local_grid_detail': True,
      'loss.whole_photo_grade': 1.0,
      'optimizer.local_grid_prefit': True,
    },
  ),
  'recipe_levels_prefit_local_stats_whole': (
    'recipe_curves_local_stats_whole with the prefitted auto levels and their offset under it',
    {
      **_LEVELS_PREFIT,
      **_CURVES_LOCAL,
      'model.local_grid_statistics': True,
      'loss.whole_photo_grade': 1.0,
    },
  ),
  'local_grade_only': (
    'recipe_curves_local with the U-Net held still: the global grade, curves and local grid alone',
    {
      **_CURVES_LOCAL,
      'optimizer.grade_first_steps': 10**9,
    },
  ),
  'local_grade_only_mixed': (
    "local_grade_only with data.sampling='mixed'",
    {
      **_CURVES_LOCAL,
      'optimizer.grade_first_steps': 10**9,
      'data.sampling': 'mixed',
    },
  ),
  'recipe_curves_local_no_exposure': (
    'recipe plus tone curves and the local affine grid, without the exposure stage',
    {
      **_CURVES_LOCAL,
      'model.exposure': False,
    },
  ),
  'grade_only': (
    "the recipe's global grade alone (the U-Net never learns)",
    {'optimizer.grade_first_steps': 10**9},
  ),
  'grade_only_adaptive_lut': (
    'the global grade alone with an image-adaptive LUT',
    {'optimizer.grade_first_steps': 10**9, 'model.color_head': 'adaptive_lut'},
  ),
  'unet': (
    'U-Net alone (default model)',
    {
      **_WITHOUT_ADDITIONS,
      'model.color_head': 'none',
      'model.thumbnail': 'crop',
      'model.global_context': 'none',
      'model.coords': False,
    },
  ),
  'default_config': ('configs/default.py as it ships (its own steps and crop size)', {}),
  'lut': (
    'one learned LUT + U-Net',
    {
      **_WITHOUT_ADDITIONS,
      'model.color_head': 'lut',
      'model.thumbnail': 'crop',
      'model.global_context': 'none',
      'model.coords': False,
    },
  ),
  'adaptive_lut_thumb': (
    'adaptive LUT + thumbnail context, no coords',
    {**_WITHOUT_ADDITIONS, 'model.coords': False},
  ),
  'adaptive_lut': (
    'adaptive LUT reading the crop (no thumbnail context, no coords)',
    {
      **_WITHOUT_ADDITIONS,
      'model.thumbnail': 'crop',
      'model.global_context': 'none',
      'model.coords': False,
    },
  ),
}
# Rows trained from another config than `configs/photo.py`: they keep that config's own steps and
# crop size instead of --steps and --crop_size, so they measure the config as a user gets it.
ROW_CONFIGS = {'default_config': configs.default}
METRIC_NAMES = ('psnr', 'ssim', 'delta_e2000', 'lpips')
# The curvature weight of the least-squares LUT fitted to the training photos (`FITS`).
TRAIN_FIT_CURVATURE = 0.01

FLAGS = flags.FLAGS
flags.DEFINE_integer('steps', 300, 'Training steps per run.')
flags.DEFINE_integer('crop_size', 64, 'Training crop.')
flags.DEFINE_list('seeds', ['0'], 'Seeds.')
flags.DEFINE_list('looks', list(LOOKS), 'Built-in looks.')
flags.DEFINE_list('rows', list(ROWS), 'Rows to train, in order.')
flags.DEFINE_float('budget_minutes', 45.0, 'No new run starts after this much wall clock.')
flags.DEFINE_string(
  'runs_dir', None, 'Default: $UNET_JAX_CACHE/color_head (<pairs_root>/_runs with --pairs_root).'
)
flags.DEFINE_string('output_dir', os.path.join(ROOT, 'experiments', 'results'), 'Report folder.')
flags.DEFINE_string('report_name', 'color_head', 'Report files: <output_dir>/<name>.md and .json.')
flags.DEFINE_bool('report_only', False, 'Rebuild the report from finished runs.')
flags.DEFINE_bool('eval_lpips', True, "Score the trained rows' evals with LPIPS too (slow on CPU).")
flags.DEFINE_bool('baseline_lpips', True, 'Score the baselines with LPIPS too (slow on CPU).')
flags.DEFINE_string(
  'pairs_root',
  None,
  'Looks are paired folders <pairs_root>/<look> (editor_looks.py), not built-in.',
)
flags.DEFINE_bool(
  'baselines', True, 'Fit and score the rows without training first (looks not yet in the cache).'
)
flags.DEFINE_list(
  'fits', None, 'Least-squares LUT rows to compute (default: all of FITS); 33^3 ones cost minutes.'
)
flags.DEFINE_integer(
  'fit_pixels_per_photo', 0, 'LUT fits to the training photos: this many pixels of each (0: all).'
)


def make_config(
  look: str, row: str, seed: int, steps: int, crop_size: int, pairs_root: str | None = None
):
  """The row's config on `look`: a built-in look, or the paired folder `pairs_root/look`."""
  if row in ROW_CONFIGS:
    config = ROW_CONFIGS[row].get_config()
    steps = config.num_train_steps
  else:
    config = configs.photo.get_config()
    config.data.crop_size = crop_size
    config.num_train_steps = steps
  config.seed = seed
  if pairs_root:
    config.data.name = 'paired_folders'
    config.data.dir = os.path.join(os.path.abspath(pairs_root), look)
    # Prepared once per look for every run, beside the looks (not inside each run's workdir).
    config.data.tfds_data_dir = os.path.join(os.path.abspath(pairs_root), '_tfds')
  else:
    config.data.look = look
  config.optimizer.warmup_steps = min(50, steps // 10)
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  config.keep_checkpoints = 1
  config.log_every_steps = max(1, steps // 10)
  config.num_image_summaries = 1
  # Locked while the row's options go in: a misspelt option raises (naming the key) instead of
  # adding a key that nothing reads, which would train the recipe unchanged under the row's name.
  config.lock()
  for dotted, value in ROWS[row][1].items():
    section, key = dotted.split('.')
    config[section][key] = value
  return config.unlock()


def _summarise(run: sweep.Run, workdir: str, final: dict) -> dict:
  """What the report reads of a run (its scores on the held-out photos)."""
  return {
    'look': run.group,
    'row': run.row,
    'seed': run.seed,
    'steps': run.config.num_train_steps,
    'crop_size': run.config.data.crop_size,
    'model': final.get('model', {}),
    'identity': final.get('identity', {}),
    'images': final.get('images', []),
  }


def planned_runs() -> list[sweep.Run]:
  """Every (look, row, seed) of the flags, a seed's rows before the next seed's, with configs."""
  runs = []
  for seed in (int(s) for s in FLAGS.seeds):
    for row in FLAGS.rows:
      for look in FLAGS.looks:
        config = make_config(look, row, seed, FLAGS.steps, FLAGS.crop_size, FLAGS.pairs_root)
        # LPIPS of six 1 MP photos and their inputs takes longer than the training on 2 cores.
        config.eval_lpips = FLAGS.eval_lpips
        runs.append(sweep.Run(look, row, seed, config))
  return runs


# The fits without training (`baselines`): name -> (fitted on, lattice points, curvature).
FITS = {
  'best_fit_lut_joint': ('test', 17, 0.0),
  'best_fit_lut_joint_33': ('test', 33, 0.0),
  'train_fit_lut': ('train', 17, 0.0),
  'train_fit_lut_33': ('train', 33, 0.0),
  'train_fit_lut_33_curvature': ('train', 33, TRAIN_FIT_CURVATURE),
}
# The local grid of the rows that have one (`model.local_grid`), fitted to each held-out photo's
# own target (experiments/local_grid_fit.py): the bound of that representation.
GRID_BOUND = 'best_fit_local_grid'
GRID_BOUND_CELLS = 32
BASELINES = ('identity', 'best_fit_lut', GRID_BOUND, *FITS)


def _pixel_sample(
  image: np.ndarray, target: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """The same `count` pixels (fixed by `seed`) of a photo and its target, as `[count, 3]`."""
  pixels, wanted = image.reshape(-1, 3), target.reshape(-1, 3)
  if len(pixels) <= count:
    return pixels, wanted
  keep = np.random.default_rng(seed).choice(len(pixels), count, replace=False)
  return pixels[keep], wanted[keep]


def _photos(look: str, splits: tuple[str, ...]) -> dict[str, tuple[list, list]]:
  """split -> (inputs, targets) of the look's photos as eval reads them (whole, float)."""
  config = make_config(look, 'recipe', 0, FLAGS.steps, FLAGS.crop_size, FLAGS.pairs_root)
  photos = {}
  for split in splits:
    config.data.eval_split = split
    inputs, targets = [], []
    for index, example in enumerate(data.create_eval_iterator(config)):
      image, target = example['input'], example['target']
      if split == 'train' and FLAGS.fit_pixels_per_photo:
        image, target = _pixel_sample(image, target, FLAGS.fit_pixels_per_photo, index)
      inputs.append(image)
      targets.append(target)
    photos[split] = (inputs, targets)
  return photos


def _score(output: np.ndarray, target: np.ndarray, lpips_params) -> dict[str, float]:
  values = metrics.image_metrics(np.asarray(output)[None], target[None], lpips_params)
  return {k: float(np.asarray(v).reshape(())) for k, v in values.items()}


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
  return {m: float(np.mean([s[m] for s in rows])) for m in METRIC_NAMES if m in rows[0]}


def grid_bound(look: str) -> dict[str, float]:
  """Mean scores of `GRID_BOUND` on the look's held-out photos."""
  lpips_params = metrics.load_lpips_params() if FLAGS.baseline_lpips else None
  scores = []
  for image, target in zip(*_photos(look, ('test',))['test'], strict=True):
    grid = local_grid_fit.fit_local_grid(image, target, GRID_BOUND_CELLS)
    scores.append(_score(local_grid_fit.grade_with_grid(image, grid), target, lpips_params))
  return _means(scores)


def baselines(look: str) -> dict:
  """Scores of the rows that need no training (`BASELINES`) on the held-out photos."""
  photos = _photos(look, ('test', 'train'))
  lpips_params = metrics.load_lpips_params() if FLAGS.baseline_lpips else None
  chosen = FLAGS.fits or list(FITS)
  tables = {
    name: fit_lut(*photos[split], size, curvature)
    for name, (split, size, curvature) in FITS.items()
    if name in chosen
  }
  scores = {name: [] for name in ('identity', 'best_fit_lut', *tables)}
  for image, target in zip(*photos['test'], strict=True):
    graded = {'identity': image, 'best_fit_lut': best_fit_lut(image, target)}
    graded.update(tables)
    for name, table in graded.items():
      output = table if name == 'identity' else lut_lib.apply_lut(table, image[None], 'gather')[0]
      scores[name].append(_score(output, target, lpips_params))
  return {name: _means(rows) for name, rows in scores.items()} | {GRID_BOUND: grid_bound(look)}


def _steps_note(runs: list[dict]) -> str:
  """The runs' training steps where they differ from --steps (runs of several invocations)."""
  steps = sorted({r['steps'] for r in runs})
  return '' if steps == [FLAGS.steps] or not FLAGS.pairs_root else f' ({steps} steps)'


def _mean_std(values: list[float]) -> str:
  if len(values) == 1:
    return f'{values[0]:.2f}'
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def _plain(text: str) -> str:
  """`text` without terminal colour codes (G'MIC colours its version line) or their leftovers."""
  return re.sub(r'\x1b?\[[0-9;]*m', '', text)


def _identity_per_photo() -> list[str]:
  """PSNR of doing nothing on each held-out photo, read from the pair files: how strong each
  look is, and which photos a look leaves exactly as they are (infinite PSNR, which makes the
  identity row's mean infinite)."""
  from PIL import Image

  lines = ['', 'Identity PSNR (dB) per held-out photo, from the files:', '']
  for look in FLAGS.looks:
    folder = os.path.join(FLAGS.pairs_root, look, 'test')
    if not os.path.isdir(os.path.join(folder, 'target')):
      continue
    cells = []
    for name in sorted(os.listdir(os.path.join(folder, 'target'))):
      with (
        Image.open(os.path.join(folder, 'input', name)) as a,
        Image.open(os.path.join(folder, 'target', name)) as b,
      ):
        error = np.mean((np.asarray(a, np.float64) / 255 - np.asarray(b, np.float64) / 255) ** 2)
      cells.append((os.path.splitext(name)[0], 10 * np.log10(1 / error) if error else np.inf))
    finite = [v for _, v in cells if np.isfinite(v)]
    listed = ', '.join(f'{n} {v:.2f}' for n, v in cells)
    lines.append(f'- {look}: {listed} (mean of the finite ones: {np.mean(finite):.2f})')
  return lines


def _editor_looks_header(command: str, seeds: list[int]) -> list[str]:
  """The report's opening for the paired folders of `--pairs_root` (their manifests)."""
  default = configs.default.get_config()
  lines = [
    '# Edits by real editing software on real photos (issue 31): baselines and trained rows',
    '',
    f'Command: `{command}` (the pairs: `python -m experiments.editor_looks`). Each look: '
    '128 training pairs (16 photos of Debian wallpaper packages, whole and 7 sub-frames each, '
    'long side 1024 px) and 6 held-out photos never seen in training, scored whole (long side '
    '1024 px). Rows without training: `identity` (the input), `train_fit_lut` (one 17^3 LUT '
    'least-squares fitted on the training pairs; `_33`: 33^3 points; `_33_curvature`: under the '
    "curvature prior), `best_fit_lut` (a 17^3 LUT fitted to each held-out photo's own target: "
    'the bound for any global method), `best_fit_lut_joint` (one 17^3 LUT fitted to the 6 '
    'held-out targets together: the best single global grade), `best_fit_local_grid` (the '
    f'{GRID_BOUND_CELLS}^2 grid of affine colour transforms of `model.local_grid` fitted to '
    "each held-out photo's own target, experiments/local_grid_fit.py: the bound of that "
    'representation). LUT solver: '
    '`unet_jax.inference.lut.fit_lut` (conjugate gradients). The training fits use '
    f'{FLAGS.fit_pixels_per_photo or "all"} pixels of each training pair (a fixed random draw). '
    + (
      f"Trained rows: `configs/photo.py` with the row's options, {FLAGS.steps} steps of "
      f'{FLAGS.crop_size} px crops, batch 8, seeds {seeds} (`default_config`: its own '
      f'{default.num_train_steps} steps of {default.data.crop_size} px crops). A 2-core CPU.'
      if seeds
      else 'Trained rows: none finished (rows below without a trained line were not run).'
    ),
    '',
    '| look | family | tool | command |',
    '|---|---|---|---|',
  ]
  photos = []
  for look in FLAGS.looks:
    path = os.path.join(FLAGS.pairs_root, look, 'manifest.json')
    if not os.path.exists(path):
      lines.append(f'| {look} | not built | - | - |')
      continue
    with open(path) as f:
      manifest = json.load(f)
    photos = manifest['photos']
    command_line = ' '.join(
      f"'{part}'" if ' ' in part or ';' in part else part for part in manifest['command']
    )
    lines.append(
      f'| {look} | {manifest["family"]} | {_plain(manifest["tool_version"])} | `{command_line}` |'
    )
  lines += _identity_per_photo()
  for split, heading in (('train', 'Training photos'), ('test', 'Held-out photos')):
    listed = ', '.join(
      f'{p["stem"]} ({p["package"]} {p["package_version"] or ""}: {p["path"]})'.replace(' :', ':')
      for p in photos
      if p['split'] == split
    )
    lines += ['', f'{heading}: {listed}.']
  return lines + ['']


# The rows issue 31's bars are checked for beside the recipe: what might replace it.
CANDIDATES = (
  'recipe_curves_local',
  'recipe_curves_local_whole',
  'recipe_curves_local_stats_whole',
  'recipe_curves_local_extremes_whole',
  'recipe_curves_local_detail_whole',
  'recipe_curves_local_detail_extremes_whole',
  'recipe_curves_local_detail_prefit',
  'recipe_levels_curves_local',
  'recipe_levels_fitted',
  'recipe_levels_prefit',
  'recipe_levels_prefit_local_stats_whole',
  'levels_prefit_unet',
  'levels_prefit_unet_grid_stats_whole',
)


def _editor_looks_acceptance(summary: dict, base: dict) -> list[str]:
  """Issue 31's bars, for the recipe and the candidates (`CANDIDATES`): over the training-pairs
  LUT and the U-Net alone on every look, the gap to the per-photo LUT bound, and each
  candidate's gain over the recipe; and the gap to the per-photo local grid bound."""
  lines = ['## Acceptance (issue 31)', '']
  for look in FLAGS.looks:
    runs = summary.get(look, {})
    rows = [row for row in ('recipe', *CANDIDATES) if row in runs]
    if not rows or look not in base:
      lines.append(f'- {look}: neither the recipe nor a candidate was run')
      continue
    fits = ('train_fit_lut', 'train_fit_lut_33', 'train_fit_lut_33_curvature')
    lut = max(base[look][n]['psnr'] for n in fits if n in base[look])
    for row in rows:
      score = runs[row]
      parts = [
        f'{row} {score:.2f} dB; vs the best LUT fitted on the training pairs '
        f'{score - lut:+.2f} dB ({"holds" if score > lut else "does not hold"})'
      ]
      if 'unet' in runs:
        gap = score - runs['unet']
        parts.append(
          f'vs the U-Net alone {gap:+.2f} dB ({"holds" if gap > 0 else "does not hold"})'
        )
      else:
        parts.append('U-Net alone not run')
      parts.append(
        f'vs the per-photo LUT bound {score - base[look]["best_fit_lut"]["psnr"]:+.2f} dB'
      )
      # Not where the grid makes every held-out photo exactly (infinite PSNR, a global look).
      if np.isfinite(base[look].get(GRID_BOUND, {}).get('psnr', np.inf)):
        grid_gap = score - base[look][GRID_BOUND]['psnr']
        parts.append(f'vs the per-photo local grid bound {grid_gap:+.2f} dB')
      if row != 'recipe' and 'recipe' in runs:
        parts.append(f'vs the recipe {score - runs["recipe"]:+.2f} dB')
      lines.append(f'- {look}: ' + '; '.join(parts))
  return lines


def write_report(results: list[dict], base: dict, command: str) -> str:
  default = configs.default.get_config()
  seeds = sorted({r['seed'] for r in results})
  lines = [
    '# Colour head ablation (built-in looks, held-out photos at full size)',
    '',
    f"Command: `{command}`. Each run: `configs/photo.py` with the row's options, "
    f'{FLAGS.steps} steps of {FLAGS.crop_size} px crops, batch 8, seeds '
    f'{seeds} (`default_config`: its own '
    f'{default.num_train_steps} steps of {default.data.crop_size} px crops); scored on '
    'chelsea, coffee and china (the 3 held-out photos) graded whole by tiled predict. A 2-core '
    'CPU: short runs, not converged. `best_fit_lut_joint`: one 17^3 LUT fitted to the three '
    'held-out targets (the best single global grade, what the acceptance compares with; '
    '`_33`: 33^3 points); '
    '`best_fit_lut`: one per photo (an oracle that knows each target); `train_fit_lut`: '
    'fitted to the training photos (`_33_curvature`: 33^3 points under the curvature prior), '
    'the most a LUT learned from them does on the held-out photos.',
    '',
  ]
  if FLAGS.pairs_root:
    lines = _editor_looks_header(command, seeds)
  summary = {}
  for look in FLAGS.looks:
    lines += [
      f'## {look}',
      '',
      '| row | PSNR dB | SSIM | ΔE2000 | LPIPS | runs |',
      '|---|---|---|---|---|---|',
    ]
    for name in BASELINES:
      if name in base.get(look, {}):
        s = base[look][name]
        lpips = f'{s["lpips"]:.4f}' if 'lpips' in s else '-'
        lines.append(
          f'| {name} | {s["psnr"]:.2f} | {s["ssim"]:.4f} | {s["delta_e2000"]:.2f} | {lpips} | - |'
        )
    for row in ROWS:
      runs = [r for r in results if r['look'] == look and r['row'] == row]
      if not runs:
        continue
      cell = {m: [r['model'][m] for r in runs if m in r['model']] for m in METRIC_NAMES}
      summary.setdefault(look, {})[row] = float(np.mean(cell['psnr']))
      lpips = f'{np.mean(cell["lpips"]):.4f}' if cell['lpips'] else '-'
      lines.append(
        f'| {row}: {ROWS[row][0]}{_steps_note(runs)} | {_mean_std(cell["psnr"])} | '
        f'{np.mean(cell["ssim"]):.4f} | {np.mean(cell["delta_e2000"]):.2f} | '
        f'{lpips} | {len(runs)} |'
      )
    lines.append('')
  if FLAGS.pairs_root:
    lines += _editor_looks_acceptance(summary, base)
    return _write(lines, results, base)
  lines += ['## Acceptance (recipe vs the best-fit global LUT, fitted on the held-out photos)', '']
  targets = {
    'warm_film': ('within 1 dB of', lambda d: d >= -1.0),
    'local_contrast': ('beats by >= 3 dB', lambda d: d >= 3.0),
    'vignette': ('beats by >= 3 dB', lambda d: d >= 3.0),
    'auto_exposure': ('beats', lambda d: d > 0.0),
  }
  for look, (wanted, holds) in targets.items():
    if look not in summary or 'recipe' not in summary[look] or look not in base:
      lines.append(f'- {look}: not run')
      continue
    recipe = summary[look]['recipe']
    delta = recipe - base[look]['best_fit_lut_joint']['psnr']
    verdict = 'holds' if holds(delta) else 'does not hold'
    extra = f'; vs the per-photo oracle LUT {recipe - base[look]["best_fit_lut"]["psnr"]:+.2f} dB'
    if 'best_fit_lut_joint_33' in base[look]:
      finer = recipe - base[look]['best_fit_lut_joint_33']['psnr']
      extra += f'; vs the 33^3 LUT fitted on the held-out photos {finer:+.2f} dB'
    if 'unet' in summary[look]:
      extra += f'; vs the U-Net alone {recipe - summary[look]["unet"]:+.2f} dB'
    if look == 'auto_exposure':
      # The acceptance asks here for the default config beaten too, as it ships.
      if 'default_config' in summary[look]:
        over_default = recipe - summary[look]['default_config']
        beaten = 'holds' if over_default > 0 else 'does not hold'
        extra += f'; beats configs/default.py? {over_default:+.2f} dB: {beaten}'
      else:
        extra += '; configs/default.py not run'
    lines.append(f'- {look}: recipe {wanted} the LUT? {delta:+.2f} dB: {verdict}{extra}')
  return _write(lines, results, base)


def _write(lines: list[str], results: list[dict], base: dict) -> str:
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  path = os.path.join(FLAGS.output_dir, f'{FLAGS.report_name}.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(FLAGS.output_dir, f'{FLAGS.report_name}.json'), 'w') as f:
    json.dump({'runs': results, 'baselines': base}, f, indent=1)
  return path


def main(argv):
  del argv
  if FLAGS.pairs_root:
    runs_dir = FLAGS.runs_dir or os.path.join(FLAGS.pairs_root, '_runs')
  else:
    runs_dir = FLAGS.runs_dir or str(paths.cache_dir('color_head'))
  unknown = sorted(set(FLAGS.fits or ()) - set(FITS))
  if unknown:
    sys.exit(f'Error: --fits: unknown {unknown}; known: {list(FITS)}')
  started = time.perf_counter()
  base_path = os.path.join(runs_dir, 'baselines.json')
  base = {}
  if os.path.exists(base_path):
    with open(base_path) as f:
      base = json.load(f)
  if not FLAGS.report_only and FLAGS.baselines:
    # The baselines first: cheap, and what every row is judged against.
    for look in FLAGS.looks:
      if look not in base:
        base[look] = baselines(look)
      elif GRID_BOUND not in base[look]:  # a cache from before the grid bound
        base[look][GRID_BOUND] = grid_bound(look)
      else:
        continue
      os.makedirs(runs_dir, exist_ok=True)
      with open(base_path, 'w') as f:
        json.dump(base, f, indent=1)
  # The shared runner validates every row's config first, trains, and keeps each result.json.
  results, _ = sweep.run_sweep(
    planned_runs(),
    runs_dir,
    _summarise,
    budget_minutes=FLAGS.budget_minutes - (time.perf_counter() - started) / 60,
    report_only=FLAGS.report_only,
  )
  # A run the non-finite guard stopped has no scores to report.
  results = [r for r in results if not r.get('error')]
  # The command that produces these numbers: without --report_only, which only re-reads them.
  rereading = ('--report_only', '--noreport_only')
  flags_given = [a for a in sys.argv[1:] if a.split('=')[0] not in rereading]
  command = 'python -m experiments.color_head ' + ' '.join(flags_given)
  print(write_report(results, base, command.strip()))


if __name__ == '__main__':
  app.run(main)
