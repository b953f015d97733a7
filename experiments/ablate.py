"""Ablation study of the design notes' claims, run through the library in-process.

Each variant is the baseline config with one option changed; every (task, variant, seed) run calls
`unet_jax.train.train_and_evaluate` in its own workdir, and the held-out photos of the built-in
dataset score it. The report (`ablations.md`), the learning curves and the before/after crops are
written from the per-run `result.json` files, so a sweep that stops half-way resumes where it
stopped (finished runs are skipped) and the report can be rebuilt from whatever has finished.

  python experiments/ablate.py --preset=quick            # minutes on 2 CPU cores (a smoke test)
  python experiments/ablate.py                           # the committed results (default preset)
  python experiments/ablate.py --report_only             # rebuild the report from finished runs

Runs go to `--runs_dir` (default `$UNET_JAX_CACHE/ablations/<preset>`), the report and plots to
`--output_dir` (default `experiments/results/`). The default preset orders its runs so that a
sweep stopped by `--budget_minutes` still covers every claim: the baseline at two seeds and
every other variant at one first, then the remaining seeds; verdicts judge differences against
the seed-to-seed spread pooled over a task's variants.

Tasks: `enhance` (the built-in `local_contrast` look: luminance detail above a 6 px Gaussian
doubled, a look with spatial variation) and `denoise` (Gaussian noise, sigma 25/255).
"""

import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from unet_jax import paths, train  # noqa: E402
from unet_jax.config import get_base_config  # noqa: E402
from unet_jax.models import count_params, create_model  # noqa: E402

METRICS = ('psnr', 'ssim', 'lpips', 'delta_e2000')
LOWER_IS_BETTER = {'lpips', 'delta_e2000', 'checkerboard', 'steps_to_target', 'step_time'}
TASKS = ('enhance', 'denoise')
ENHANCE_LOOK = 'local_contrast'
# Steps-to-target: the first eval step whose PSNR reaches identity + this fraction of the
# baseline's mean final gain over identity on the same task.
TARGET_FRACTION = 0.5
# A difference counts when it exceeds this many standard errors of the difference of two means.
SIGNIFICANCE_SE = 2.0


# ---------------------------------------------------------------------------------------------
# Variants and claims.


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  overrides: dict[str, Any]
  label: str


VARIANTS = {
  v.name: v
  for v in (
    Variant('baseline', {}, 'baseline: skip, residual, L1, maxpool, bilinear, BN'),
    Variant('no_skip', {'model.skip': 'none'}, 'plain encoder-decoder (no skips)'),
    Variant('direct', {'model.residual': False}, 'direct output (not residual)'),
    Variant('l2', {'loss.l1': 0.0, 'loss.l2': 1.0}, 'L2 loss'),
    Variant(
      'l1_perceptual_ssim',
      {
        'loss.perceptual': 0.1,
        'loss.ssim': 0.1,
        # relu1_2 only: the deeper VGG blocks would cost several U-Net steps each on a CPU.
        'loss.perceptual_layer_weights': (1.0, 0.0, 0.0, 0.0, 0.0),
      },
      'L1 + 0.1 perceptual + 0.1 (1 - SSIM)',
    ),
    Variant('strided', {'model.down': 'strided'}, 'strided-conv down-sampling'),
    Variant('transposed', {'model.up': 'transposed'}, 'transposed-conv up-sampling'),
    Variant('pixel_shuffle', {'model.up': 'pixel_shuffle'}, 'pixel-shuffle up-sampling'),
    Variant('group_norm', {'model.norm': 'group'}, 'GroupNorm'),
    Variant('no_norm', {'model.norm': 'none'}, 'no normalisation'),
    Variant('attention', {'model.attention_gates': True}, 'attention gates on skips'),
    Variant('levels_3', {'model.levels': 3}, '3 levels'),
    Variant('levels_5', {'model.levels': 5}, '5 levels'),
  )
}


@dataclasses.dataclass(frozen=True)
class Comparison:
  """`better` is claimed to beat `worse` on `metric` (see LOWER_IS_BETTER for the direction)."""

  better: str
  worse: str
  metric: str


@dataclasses.dataclass(frozen=True)
class Claim:
  key: str
  title: str
  claim: str
  variants: tuple[str, ...]
  comparisons: tuple[Comparison, ...]


CLAIMS = (
  Claim(
    'skip',
    'Skip connections',
    'Skip connections beat the plain encoder-decoder on fine detail (PSNR, SSIM, sharpness).',
    ('baseline', 'no_skip'),
    (
      Comparison('baseline', 'no_skip', 'psnr'),
      Comparison('baseline', 'no_skip', 'ssim'),
    ),
  ),
  Claim(
    'residual',
    'Residual output',
    'Learning the edit (output = input + U-Net(input)) converges faster and ends better.',
    ('baseline', 'direct'),
    (
      Comparison('baseline', 'direct', 'steps_to_target'),
      Comparison('baseline', 'direct', 'psnr'),
    ),
  ),
  Claim(
    'loss',
    'Loss',
    'L2 is blurrier than L1; L1 + perceptual + SSIM is best perceptually (LPIPS).',
    ('baseline', 'l2', 'l1_perceptual_ssim'),
    (
      Comparison('baseline', 'l2', 'lpips'),
      Comparison('l1_perceptual_ssim', 'baseline', 'lpips'),
    ),
  ),
  Claim(
    'down',
    'Down-sampling',
    'Strided convolution "often works better" than max-pooling.',
    ('baseline', 'strided'),
    (Comparison('strided', 'baseline', 'psnr'),),
  ),
  Claim(
    'up',
    'Up-sampling',
    'Transposed convolution causes checkerboard artifacts; bilinear + conv is stable.',
    ('baseline', 'transposed', 'pixel_shuffle'),
    (
      Comparison('baseline', 'transposed', 'checkerboard'),
      Comparison('baseline', 'pixel_shuffle', 'checkerboard'),
      Comparison('baseline', 'transposed', 'psnr'),
    ),
  ),
  Claim(
    'norm',
    'Normalisation',
    'BatchNorm stabilises training (better than none; GroupNorm as the batch-free alternative).',
    ('baseline', 'group_norm', 'no_norm'),
    (
      Comparison('baseline', 'no_norm', 'psnr'),
      Comparison('baseline', 'group_norm', 'psnr'),
    ),
  ),
  Claim(
    'attention',
    'Attention gates',
    'Attention gates on the skips help the U-Net pick relevant features.',
    ('baseline', 'attention'),
    (Comparison('attention', 'baseline', 'psnr'),),
  ),
  Claim(
    'levels',
    'Depth',
    'More levels (4-5 rather than 3) give a better U-Net.',
    ('levels_3', 'baseline', 'levels_5'),
    (
      Comparison('baseline', 'levels_3', 'psnr'),
      Comparison('levels_5', 'baseline', 'psnr'),
    ),
  ),
)


# ---------------------------------------------------------------------------------------------
# Presets.


@dataclasses.dataclass(frozen=True)
class TaskSettings:
  eval_size: int | None  # None: full resolution (the scale the look is defined at)
  eval_every_steps: int
  tile_size: int
  variants: tuple[str, ...]
  num_train_steps: int | None = None  # None: the preset's


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  seeds: tuple[int, ...]
  num_train_steps: int
  levels: int
  base_channels: int
  group_norm_groups: int
  crop_size: int
  batch_size: int
  learning_rate: float
  warmup_steps: int
  log_every_steps: int
  tasks: dict[str, TaskSettings]
  budget_minutes: float  # no new run starts after this much wall clock (finished runs count)
  crop_px: int  # side of the before/after crop, in pixels of the eval image
  note: str


ALL_VARIANTS = tuple(VARIANTS)
PERCEPTUAL = ('l1_perceptual_ssim',)
MIN_SEEDS = 2

PRESETS = {
  'quick': Preset(
    name='quick',
    seeds=(0,),
    num_train_steps=2,
    levels=2,
    base_channels=4,
    group_norm_groups=2,
    crop_size=32,
    batch_size=8,
    learning_rate=2e-3,
    warmup_steps=1,
    log_every_steps=1,
    tasks={'enhance': TaskSettings(32, 1, 32, ('baseline', 'transposed'))},
    budget_minutes=30.0,
    crop_px=24,
    note=(
      'Smoke test of the pipeline: a few steps of a tiny net, one seed, a subset of variants, '
      'eval on downsized photos. The numbers mean nothing; the verdicts say so.'
    ),
  ),
  'default': Preset(
    name='default',
    seeds=(0, 1, 2),
    num_train_steps=150,
    levels=4,
    base_channels=8,
    group_norm_groups=4,
    crop_size=64,
    batch_size=8,
    learning_rate=2e-3,
    warmup_steps=15,
    log_every_steps=15,
    tasks={
      # local_contrast is defined on the 512 px photos (a 6 px Gaussian): resizing the eval
      # photos would change the look, so enhance is scored at full resolution, on fewer evals.
      # Full-resolution LPIPS makes each enhance eval cost about a minute on this machine, so
      # enhance covers the claims about detail and the output form; denoise covers them all.
      'enhance': TaskSettings(None, 75, 512, ('baseline', 'no_skip', 'direct')),
      'denoise': TaskSettings(
        128,
        25,
        128,
        tuple(v for v in ALL_VARIANTS if v not in PERCEPTUAL) + PERCEPTUAL,
        num_train_steps=100,
      ),
    },
    budget_minutes=65.0,
    crop_px=96,
    note=(
      'Small nets (base 8 channels) on 64 px crops for 100-150 steps: what a shared 2-core CPU '
      'affords in about an hour. Claims about large models trained for days are tested only as '
      'far as this scale reaches: the nets are far from converged.'
    ),
  ),
}


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  target = config
  *parents, leaf = dotted.split('.')
  for parent in parents:
    target = target[parent]
  target[leaf] = value


def make_config(preset: Preset, task: str, variant: str, seed: int) -> ml_collections.ConfigDict:
  """The baseline of `preset` for `task`, with `variant`'s overrides and `seed`."""
  settings = preset.tasks[task]
  config = get_base_config()
  config.seed = seed
  config.task = task
  config.data.name = 'builtin'
  config.data.look = ENHANCE_LOOK
  config.data.eval_size = settings.eval_size
  config.data.crop_size = preset.crop_size
  config.model.levels = preset.levels
  config.model.base_channels = preset.base_channels
  config.model.group_norm_groups = preset.group_norm_groups
  config.batch_size = preset.batch_size
  config.num_train_steps = settings.num_train_steps or preset.num_train_steps
  config.optimizer.learning_rate = preset.learning_rate
  config.optimizer.warmup_steps = preset.warmup_steps
  # The library's EMA (0.999, no bias correction) would still hold most of the initial weights
  # after a few hundred steps; evaluate the trained weights themselves.
  config.optimizer.ema_decay = 0.0
  config.loss.l1 = 1.0
  config.loss.ssim = 0.0
  config.loss.perceptual = 0.0
  config.log_every_steps = preset.log_every_steps
  config.eval_every_steps = settings.eval_every_steps
  config.checkpoint_every_steps = config.num_train_steps
  config.keep_checkpoints = 1
  config.num_image_summaries = 1
  config.predict.tile_size = settings.tile_size
  config.predict.tile_overlap = min(32, settings.tile_size // 4)
  for key, value in VARIANTS[variant].overrides.items():
    _set(config, key, value)
  return config


# ---------------------------------------------------------------------------------------------
# Measures on the predicted held-out images.


def _even_crop(image: np.ndarray) -> np.ndarray:
  height, width = image.shape[:2]
  return image[: height - height % 2, : width - width % 2]


def checkerboard_energy(image: np.ndarray) -> float:
  """Fraction of the (mean-removed) spectral energy on the period-2 frequencies.

  `image`: `[H, W, C]`. The period-2 frequencies are the Nyquist row and column of the 2-D DFT
  (ky = H/2 or kx = W/2), where a stride-2 pattern puts its energy.
  """
  image = _even_crop(np.asarray(image, np.float64))
  height, width = image.shape[:2]
  centred = image - image.mean(axis=(0, 1), keepdims=True)
  power = np.abs(np.fft.fft2(centred, axes=(0, 1))) ** 2
  nyquist = np.zeros((height, width), bool)
  nyquist[height // 2, :] = True
  nyquist[:, width // 2] = True
  return float(power[nyquist].sum() / max(power.sum(), 1e-20))


def high_frequency_energy(image: np.ndarray) -> float:
  """Mean squared 4-neighbour Laplacian: how much fine detail an image holds."""
  image = np.asarray(image, np.float64)
  laplacian = (
    4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:]
  )
  return float(np.mean(laplacian**2))


def _split_panel(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """An eval panel `input | output | target` (what `evaluate` writes) as three float images."""
  panel = np.asarray(Image.open(path).convert('RGB'), np.float32) / 255.0
  width = panel.shape[1] // 3
  return panel[:, :width], panel[:, width : 2 * width], panel[:, 2 * width : 3 * width]


def eval_panels(eval_dir: str) -> list[str]:
  """The `input | output | target` panels of an eval folder, one per image of its metrics.json."""
  with open(os.path.join(eval_dir, 'metrics.json')) as f:
    names = sorted(image['name'] for image in json.load(f)['images'])
  return [os.path.join(eval_dir, f'{name}.png') for name in names]


def image_measures(eval_dir: str) -> dict[str, float]:
  """Checkerboard and sharpness of the final predictions, each relative to the target's own.

  `checkerboard` > 1: more energy at the period-2 frequencies than the true image has;
  `sharpness` < 1: less fine detail (blurrier) than the target.
  """
  ratios = {'checkerboard': [], 'sharpness': []}
  for path in eval_panels(eval_dir):
    _, output, target = _split_panel(path)
    ratios['checkerboard'].append(checkerboard_energy(output) / checkerboard_energy(target))
    ratios['sharpness'].append(high_frequency_energy(output) / high_frequency_energy(target))
  return {k: float(np.mean(v)) for k, v in ratios.items() if v}


# ---------------------------------------------------------------------------------------------
# Running.


def _read_log(workdir: str) -> list[dict[str, Any]]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def _step_time(log: list[dict[str, Any]], config: ml_collections.ConfigDict) -> float:
  """Median seconds per training step over the logging intervals that hold neither the compile
  (the first interval) nor an eval (which runs between two logged steps)."""
  logged = [row for row in log if 'train/seconds_per_step' in row]
  clean = []
  for previous, row in zip(logged, logged[1:], strict=False):
    evals_inside = any(
      s % config.eval_every_steps == 0 for s in range(previous['step'], row['step'])
    )
    if not evals_inside:
      clean.append(row['train/seconds_per_step'])
  if not clean:
    clean = [row['train/seconds_per_step'] for row in logged[1:]] or [math.nan]
  return float(np.median(clean))


def _param_count(config: ml_collections.ConfigDict) -> int:
  model = create_model(config.model)
  size = config.data.crop_size
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, size, size, 3)), train=False)
  )
  return count_params(shapes['params'])


def _json_safe(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_json_safe(v) for v in value]
  return value


def run_one(preset: Preset, task: str, variant: str, seed: int, runs_dir: str) -> dict[str, Any]:
  """Trains and scores one (task, variant, seed); reuses its `result.json` if it exists."""
  workdir = os.path.join(runs_dir, task, variant, f'seed_{seed}')
  result_path = os.path.join(workdir, 'result.json')
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  # A run that died half-way left a log that a restart would append to: start it afresh.
  shutil.rmtree(workdir, ignore_errors=True)
  config = make_config(preset, task, variant, seed)
  logging.info('Run %s/%s/seed_%d', task, variant, seed)
  started = time.perf_counter()
  error = None
  try:
    final = train.train_and_evaluate(config, workdir)
  except FloatingPointError as exc:  # the library's NaN guard: a result, not a crash
    final, error = {}, str(exc)
  wall = time.perf_counter() - started
  log = _read_log(workdir)
  curve = [(row['step'], row['eval/psnr']) for row in log if 'eval/psnr' in row]
  eval_dir = os.path.join(workdir, 'eval', f'step_{config.num_train_steps}')
  result = {
    'task': task,
    'variant': variant,
    'seed': seed,
    'params': _param_count(config),
    'step_time': _step_time(log, config),
    'wall_seconds': wall,
    'error': error,
    'model': final.get('model', {}),
    'identity': final.get('identity', {}),
    'curve': curve,
    'train_loss': [(row['step'], row['train/loss']) for row in log if 'train/loss' in row],
    'measures': image_measures(eval_dir) if os.path.isdir(eval_dir) else {},
    'eval_dir': os.path.relpath(eval_dir, runs_dir),
  }
  with open(result_path + '.tmp', 'w') as f:
    json.dump(_json_safe(result), f, indent=1)
  os.replace(result_path + '.tmp', result_path)
  # Checkpoints are not needed for the report; keep the runs folder small.
  for folder in ('checkpoints', 'best', 'tensorboard'):
    shutil.rmtree(os.path.join(workdir, folder), ignore_errors=True)
  return result


def planned_runs(preset: Preset) -> list[tuple[str, str, int]]:
  """The baseline at `MIN_SEEDS` seeds and every other variant at one seed first, then the
  other seeds, so that a sweep cut short by its budget still covers every claim (a variant with
  one seed is judged by the seed-to-seed spread pooled over the variants of its task)."""
  first = []
  for task, settings in preset.tasks.items():
    cheap = [v for v in settings.variants if v not in PERCEPTUAL]
    for variant in cheap:
      seeds = preset.seeds[:MIN_SEEDS] if variant == 'baseline' else preset.seeds[:1]
      first.extend((task, variant, seed) for seed in seeds)
  # The perceptual loss costs several times a plain step: after the other variants.
  first += [
    (t, v, preset.seeds[0]) for t, s in preset.tasks.items() for v in s.variants if v in PERCEPTUAL
  ]
  rest = [
    (task, variant, seed)
    for seed in preset.seeds[1:]
    for task, settings in preset.tasks.items()
    for variant in sorted(settings.variants, key=lambda v: v in PERCEPTUAL)
    if (task, variant, seed) not in first
  ]
  return first + rest


def _result_exists(runs_dir: str, task: str, variant: str, seed: int) -> bool:
  return os.path.exists(os.path.join(runs_dir, task, variant, f'seed_{seed}', 'result.json'))


def run_sweep(
  preset: Preset, runs_dir: str, budget_minutes: float | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
  """Runs (or reloads) every planned run until the budget is spent: (results, skipped)."""
  budget = preset.budget_minutes if budget_minutes is None else budget_minutes
  started = time.perf_counter()
  results, skipped = [], []
  for task, variant, seed in planned_runs(preset):
    over_budget = time.perf_counter() - started > 60.0 * budget
    if over_budget and not _result_exists(runs_dir, task, variant, seed):
      skipped.append((task, variant, seed))
      continue
    results.append(run_one(preset, task, variant, seed, runs_dir))
  return results, skipped


# ---------------------------------------------------------------------------------------------
# Statistics and verdicts.


def _values(results, task, variant, key) -> list[float]:
  out = []
  for r in results:
    if r['task'] != task or r['variant'] != variant or r['error']:
      continue
    value = r.get(key)
    if value is None:
      value = r['model'].get(key, r['measures'].get(key))
    if value is not None and math.isfinite(value):
      out.append(float(value))
  return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  if not values:
    return math.nan, math.nan
  std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
  return float(np.mean(values)), std


def steps_to_target(curve: Sequence[Sequence[float]], target: float) -> float:
  """The first eval step whose PSNR reaches `target` (inf if none does)."""
  for step, psnr in curve:
    if psnr is not None and psnr >= target:
      return float(step)
  return math.inf


def add_steps_to_target(results: list[dict[str, Any]]) -> dict[str, float]:
  """Sets `steps_to_target` on each result; returns the target PSNR per task."""
  targets = {}
  for task in TASKS:
    baseline = [r for r in results if r['task'] == task and r['variant'] == 'baseline']
    baseline = [r for r in baseline if 'psnr' in r['model'] and 'psnr' in r['identity']]
    if not baseline:
      continue
    identity = float(np.mean([r['identity']['psnr'] for r in baseline]))
    gain = float(np.mean([r['model']['psnr'] for r in baseline])) - identity
    targets[task] = identity + TARGET_FRACTION * max(gain, 0.0)
  for r in results:
    if r['task'] in targets and r['curve']:
      steps = steps_to_target(r['curve'], targets[r['task']])
      r['steps_to_target'] = steps
      # For the verdicts, a run that never reached the target counts as reaching it one eval
      # interval after its last eval (a lower bound on what it needed).
      last = r['curve'][-1][0]
      interval = last - r['curve'][-2][0] if len(r['curve']) > 1 else last
      r['steps_censored'] = steps if math.isfinite(steps) else float(last + interval)
  return targets


def pooled_std(groups: Sequence[Sequence[float]]) -> float:
  """Seed-to-seed std pooled over every group with two or more seeds (nan if none has)."""
  dof = sum(len(g) - 1 for g in groups if len(g) > 1)
  if not dof:
    return math.nan
  return math.sqrt(sum((len(g) - 1) * np.var(g, ddof=1) for g in groups if len(g) > 1) / dof)


def compare(
  better: list[float], worse: list[float], metric: str, noise_std: float | None = None
) -> dict[str, Any]:
  """Tests "`better` beats `worse` on `metric`": supported / contradicted / not supported.

  `noise_std`: the seed-to-seed std to judge the difference by (pooled over the variants of a
  task, so that a variant run with one seed can still be judged); None pools the two groups.
  """
  sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
  if not better or not worse:
    return {'verdict': 'not measured', 'gain': math.nan, 'se': math.nan}
  gain = float(sign * (np.mean(better) - np.mean(worse)))
  std = pooled_std([better, worse]) if noise_std is None else noise_std
  if not math.isfinite(std):
    return {'verdict': 'not supported at this scale (one seed: no spread)', 'gain': gain, 'se': 0}
  se = std * math.sqrt(1.0 / len(better) + 1.0 / len(worse))
  if gain > SIGNIFICANCE_SE * se and gain > 0:
    verdict = 'supported'
  elif -gain > SIGNIFICANCE_SE * se and gain < 0:
    verdict = 'contradicted'
  else:
    verdict = 'not supported at this scale (within seed noise)'
  return {'verdict': verdict, 'gain': gain, 'se': float(se)}


def claim_verdicts(claim: Claim, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  rows = []
  for task in TASKS:
    variants = sorted({r['variant'] for r in results if r['task'] == task})
    for c in claim.comparisons:
      key = 'steps_censored' if c.metric == 'steps_to_target' else c.metric
      better = _values(results, task, c.better, key)
      worse = _values(results, task, c.worse, key)
      # The two groups' own spread; the task's pooled spread only when neither has two seeds.
      noise = pooled_std([better, worse])
      if not math.isfinite(noise):
        noise = pooled_std([_values(results, task, v, key) for v in variants])
      outcome = compare(better, worse, c.metric, noise)
      rows.append({'task': task, 'comparison': c, **outcome})
  return rows


def summarise_verdict(rows: list[dict[str, Any]]) -> str:
  measured = [r for r in rows if r['verdict'] != 'not measured']
  if not measured:
    return 'not run in this preset'
  kinds = {r['verdict'].split(' (')[0] for r in measured}
  if kinds == {'supported'}:
    return 'supported'
  if kinds == {'contradicted'}:
    return 'contradicted'
  if {'supported', 'contradicted'} <= kinds:
    return 'mixed: parts supported, parts contradicted'
  if 'supported' in kinds or 'contradicted' in kinds:
    return 'partly supported' if 'supported' in kinds else 'partly contradicted'
  return 'not supported at this scale'


# ---------------------------------------------------------------------------------------------
# Report: table, plots, before/after crops.


def _fmt(mean: float, std: float, digits: int) -> str:
  if not math.isfinite(mean):
    return '—'
  if not math.isfinite(std):
    return f'{mean:.{digits}f}'
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _steps_cell(results, task, variant) -> str:
  values = _values(results, task, variant, 'steps_to_target')
  runs = [r for r in results if r['task'] == task and r['variant'] == variant and not r['error']]
  if not runs:
    return '—'
  reached = [v for v in values if math.isfinite(v)]
  cell = _fmt(*_mean_std(reached), 0) if reached else 'never'
  if len(reached) < len(runs):
    cell += f' ({len(reached)}/{len(runs)} reached)'
  return cell


def _claims_of(variant: str) -> list[str]:
  return [c.title for c in CLAIMS if variant in c.variants]


def _plot_curves(results, claim: Claim, path: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6), squeeze=False)
  for ax, task in zip(axes[0], TASKS, strict=True):
    identity = None
    for index, variant in enumerate(claim.variants):
      runs = [r for r in results if r['task'] == task and r['variant'] == variant and r['curve']]
      for seed_index, r in enumerate(runs):
        steps, psnr = zip(*r['curve'], strict=True)
        ax.plot(
          steps,
          psnr,
          color=f'C{index}',
          marker='o',
          markersize=3,
          alpha=0.85,
          label=variant if seed_index == 0 else None,
        )
        identity = r['identity'].get('psnr', identity)
    if identity is not None:
      ax.axhline(identity, color='gray', linestyle=':', label='identity (input)')
    ax.set_title(f'{claim.title}: {task}')
    ax.set_xlabel('training step')
    ax.set_ylabel('held-out PSNR (dB)')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _crop_box(image: np.ndarray, size: int) -> tuple[int, int, int]:
  """The `size` square with the most detail (so that artifacts and blur show)."""
  height, width = image.shape[:2]
  size = min(size, height, width)
  gray = image.mean(axis=-1)
  detail = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1]
  best, box = -1.0, (0, 0)
  stride = max(size // 4, 1)
  for top in range(0, height - size + 1, stride):
    for left in range(0, width - size + 1, stride):
      score = detail[top : top + size - 1, left : left + size - 1].sum()
      if score > best:
        best, box = score, (top, left)
  return box[0], box[1], size


def _plot_crops(results, task, variants, runs_dir, crop_px, path) -> bool:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  chosen = []
  for variant in variants:
    runs = [r for r in results if r['task'] == task and r['variant'] == variant]
    runs = sorted(runs, key=lambda r: r['seed'])
    panels = eval_panels(os.path.join(runs_dir, runs[0]['eval_dir'])) if runs else []
    if panels:
      chosen.append((variant, panels[0]))
  if not chosen:
    return False
  reference_input, _, reference_target = _split_panel(chosen[0][1])
  top, left, size = _crop_box(reference_target, crop_px)

  def crop(image):
    return np.clip(image[top : top + size, left : left + size], 0, 1)

  columns = len(chosen) + 2
  fig, axes = plt.subplots(1, columns, figsize=(1.6 * columns, 2.0))
  tiles = [('input', reference_input)] + [(v, _split_panel(p)[1]) for v, p in chosen]
  tiles.append(('target', reference_target))
  for ax, (title, image) in zip(axes, tiles, strict=True):
    ax.imshow(crop(image), interpolation='nearest')
    ax.set_title(title, fontsize=7)
    ax.axis('off')
  name = os.path.basename(chosen[0][1])[: -len('.png')]
  fig.suptitle(
    f'{task}: {name}, {size} px crop (seed {min(r["seed"] for r in results)})', fontsize=8
  )
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)
  return True


def _sweep_span(results: list[dict[str, Any]], runs_dir: str) -> float:
  """Seconds from the start of the earliest run to the end of the latest (result.json times)."""
  starts, ends = [], []
  for r in results:
    path = os.path.join(runs_dir, r['task'], r['variant'], f'seed_{r["seed"]}', 'result.json')
    if os.path.exists(path):
      end = os.path.getmtime(path)
      starts.append(end - r['wall_seconds'])
      ends.append(end)
  return max(ends) - min(starts) if ends else 0.0


def _machine() -> str:
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
    model = next(
      (line.split(':', 1)[1].strip() for line in out.splitlines() if 'Model name' in line), '?'
    )
  except (OSError, subprocess.CalledProcessError):
    model = platform.processor() or '?'
  return f'{model}, {os.cpu_count()} CPU cores, {platform.system()} ({jax.devices()[0].platform})'


def write_report(
  preset: Preset,
  results: list[dict[str, Any]],
  skipped: list[tuple[str, str, int]],
  output_dir: str,
  runs_dir: str,
  *,
  wall_seconds: float,
  command: str,
) -> str:
  """Writes `ablations.md`, `curves_<claim>.png` and `crops_<task>.png`; returns the md path."""
  os.makedirs(output_dir, exist_ok=True)
  for r in results:
    # Recomputed from the saved panels, so that the report follows this file's measures.
    eval_dir = os.path.join(runs_dir, r['eval_dir'])
    if os.path.exists(os.path.join(eval_dir, 'metrics.json')):
      r['measures'] = image_measures(eval_dir)
  targets = add_steps_to_target(results)
  failed = [r for r in results if r['error']]
  lines = [
    f"# Ablations of the design notes' claims (preset `{preset.name}`)",
    '',
    f'- Command: `{command}`',
    f'- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC',
    f'- Machine: {_machine()}; shared with other jobs, so step times are indicative only.',
    f"- Wall clock: {_sweep_span(results, runs_dir) / 60:.1f} min from the first run's start "
    f"to the last run's end, {sum(r['wall_seconds'] for r in results) / 60:.1f} min of it in "
    f'the {len(results)} runs themselves; the invocation that wrote this report took '
    f'{wall_seconds / 60:.1f} min (it reuses runs that an earlier one finished).',
    f'- {preset.note}',
    '',
    '## Set-up',
    '',
    f'- Data: the built-in dataset (9 train photos, 3 held-out: chelsea, coffee, china). '
    f'`enhance`: look `{ENHANCE_LOOK}` (luminance detail above a 6 px Gaussian doubled, '
    'saturation +15 %); `denoise`: Gaussian noise sigma 25/255 added to the clean photo.',
  ]
  for task, settings in preset.tasks.items():
    size = (
      'full resolution (longer side 512 px)'
      if settings.eval_size is None
      else (f'resized to a longer side of {settings.eval_size} px')
    )
    lines.append(
      f'- `{task}`: {settings.num_train_steps or preset.num_train_steps} training steps; eval '
      f'on the 3 held-out photos {size}, every {settings.eval_every_steps} steps.'
    )
  lines += [
    f'- Baseline: {preset.levels} levels, base {preset.base_channels} channels, max-pool down, '
    'bilinear + conv up, concatenated skips, BatchNorm, residual output, L1 loss; '
    f'{preset.crop_size} px random crops with flips, batch {preset.batch_size}, '
    'AdamW (peak lr '
    f'{preset.learning_rate}, '
    f'{preset.warmup_steps} warm-up steps, cosine decay), no EMA. GroupNorm uses '
    f'{preset.group_norm_groups} groups. Each variant changes one option of the baseline.',
    f'- Seeds: {", ".join(map(str, preset.seeds))} (initialisation and data order); cells are '
    'mean ± sample std over the seeds that ran.',
    '- Params: trainable parameters. Step time: median seconds per training step (jitted, 1 '
    'CPU device), leaving out the intervals with the compile or an eval.',
    "- PSNR / SSIM / LPIPS / ΔE2000: the library's eval at the last step, mean over the "
    'held-out photos; the `identity` row scores the untouched input.',
    '- Steps to target: first eval step whose PSNR reaches the target = identity PSNR + '
    f"{TARGET_FRACTION:.0%} of the baseline's mean final gain over identity"
    + (
      ' (' + '; '.join(f'{task}: {value:.2f} dB' for task, value in targets.items()) + ')'
      if targets
      else ''
    )
    + '. Resolution: the eval interval.',
    '- Checkerboard: energy on the period-2 frequencies (the Nyquist row and column of the 2-D '
    'DFT, mean removed) as a fraction of the total, of the predicted held-out images, divided by '
    'the same fraction for the target (1 = as much as the true photo; > 1 = extra period-2 '
    "pattern). Sharpness: mean squared Laplacian of the prediction over the target's (< 1: "
    'blurrier). Both from the 8-bit eval PNGs of the last step. For `denoise` both also count '
    'the noise a model leaves in (white noise has energy at every frequency).',
    f'- Verdicts: a comparison counts when the mean difference exceeds {SIGNIFICANCE_SE:g} '
    'standard errors, SE = s * sqrt(1/n_a + 1/n_b), where s is the seed-to-seed std pooled over '
    'the two variants compared (over all variants of the task if neither has two seeds); '
    'otherwise "not supported at this scale". With 2-3 seeds this is a loose test (3 vs 3 seeds: '
    'two-sided p of about 0.12 at the threshold). A claim is supported when all its comparisons '
    'that ran are.',
    '- Caveats: (1) `enhance` is scored at full resolution because `config.data.eval_size` '
    'resizes input and target after the look was applied, which turns the 6 px local-contrast '
    'look into a ~1.5 px one at 128 px: a model trained on full-scale crops would be scored on '
    'a different look. Full-resolution LPIPS is the costly part of an eval here, so `enhance` '
    "has two evals per run and fewer variants. (2) EMA is off: the library's EMA (decay 0.999, "
    'no bias correction) would still be mostly the initial weights after a few hundred steps. '
    '(3) The perceptual term uses VGG16 relu1_2 only (weights 1, 0, 0, 0, 0) to fit a CPU; '
    'LPIPS, the metric, uses all five layers.',
  ]
  if skipped:
    lines.append(
      '- Planned but not run (the time budget was reached or the sweep was stopped): '
      + ', '.join(f'{t}/{v}/seed {s}' for t, v, s in skipped)
      + '.'
    )
  if failed:
    lines.append(
      '- Diverged (the library stopped on a non-finite loss): '
      + ', '.join(f'{r["task"]}/{r["variant"]}/seed {r["seed"]}' for r in failed)
      + '.'
    )

  header = (
    '| variant | claim tested | seeds | params | step time (s) | PSNR (dB) | SSIM | LPIPS | '
    'ΔE2000 | steps to target | checkerboard (× target) | sharpness (× target) |'
  )
  for task, settings in preset.tasks.items():
    lines += ['', f'## Results: `{task}`', '', header, '|' + '---|' * 12]
    identity = [r['identity'] for r in results if r['task'] == task and r['identity']]
    if identity:
      cells = [_fmt(float(np.mean([i[m] for i in identity])), math.nan, 4) for m in METRICS]
      lines.append(f'| identity (input) | — | — | 0 | — | {" | ".join(cells)} | — | — | — |')
    for variant in settings.variants:
      runs = [r for r in results if r['task'] == task and r['variant'] == variant]
      if not runs:
        continue
      ok = [r for r in runs if not r['error']]
      digits = {'psnr': 2, 'ssim': 4, 'lpips': 4, 'delta_e2000': 3}
      metric_cells = [
        _fmt(*_mean_std(_values(results, task, variant, m)), digits[m]) for m in METRICS
      ]
      seeds = f'{len(ok)}' + (f' ({len(runs) - len(ok)} diverged)' if len(ok) < len(runs) else '')
      lines.append(
        f'| {variant} | {", ".join(_claims_of(variant))} | {seeds} | {runs[0]["params"]:,} | '
        f'{_fmt(*_mean_std(_values(results, task, variant, "step_time")), 3)} | '
        f'{" | ".join(metric_cells)} | {_steps_cell(results, task, variant)} | '
        f'{_fmt(*_mean_std(_values(results, task, variant, "checkerboard")), 2)} | '
        f'{_fmt(*_mean_std(_values(results, task, variant, "sharpness")), 2)} |'
      )

  lines += ['', '## Verdicts', '']
  lines += [
    '| claim | notes say | comparison | enhance | denoise | verdict |',
    '|---|---|---|---|---|---|',
  ]
  for claim in CLAIMS:
    rows = claim_verdicts(claim, results)
    verdict = summarise_verdict(rows)
    for index, c in enumerate(claim.comparisons):
      cells = []
      for task in TASKS:
        row = next(r for r in rows if r['task'] == task and r['comparison'] == c)
        if row['verdict'] == 'not measured':
          cells.append('not run')
        else:
          unit = {'psnr': ' dB', 'steps_to_target': ' steps'}.get(c.metric, '')
          cells.append(f'{row["gain"]:+.4g}{unit} ± {row["se"]:.2g}: {row["verdict"]}')
      first = index == 0
      lines.append(
        f'| {claim.title if first else ""} | {claim.claim if first else ""} | '
        f'{c.better} vs {c.worse} on {c.metric} | {cells[0]} | {cells[1]} | '
        f'{("**" + verdict + "**") if first else ""} |'
      )
  lines += [
    '',
    'Gains are signed so that positive means the claimed-better variant is better (for LPIPS, '
    'steps, checkerboard: lower), ± the standard error of the difference.',
    '',
    '## Plots',
    '',
  ]
  for claim in CLAIMS:
    name = f'curves_{claim.key}.png'
    _plot_curves(results, claim, os.path.join(output_dir, name))
    lines.append(f'- {claim.title}: held-out PSNR during training, one line per seed: ![]({name})')
  for task, settings in preset.tasks.items():
    name = f'crops_{task}.png'
    if _plot_crops(
      results, task, settings.variants, runs_dir, preset.crop_px, os.path.join(output_dir, name)
    ):
      lines.append(f'- Before/after crop, `{task}` (input, each variant, target): ![]({name})')
  path = os.path.join(output_dir, 'ablations.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(output_dir, 'ablations.json'), 'w') as f:
    json.dump(_json_safe(results), f)
  return path


def run_ablation(
  preset_name: str,
  output_dir: str,
  runs_dir: str | None = None,
  *,
  budget_minutes: float | None = None,
  report_only: bool = False,
  command: str | None = None,
) -> str:
  """Runs the sweep of `preset_name` (or reloads it) and writes the report; its path."""
  preset = PRESETS[preset_name]
  runs_dir = runs_dir or str(paths.cache_dir('ablations', preset.name))
  started = time.perf_counter()
  if report_only:
    results = []
    skipped = []
    for task, variant, seed in planned_runs(preset):
      path = os.path.join(runs_dir, task, variant, f'seed_{seed}', 'result.json')
      if os.path.exists(path):
        with open(path) as f:
          results.append(json.load(f))
      else:
        skipped.append((task, variant, seed))
  else:
    results, skipped = run_sweep(preset, runs_dir, budget_minutes)
  wall = time.perf_counter() - started
  return write_report(
    preset,
    results,
    skipped,
    output_dir,
    runs_dir,
    wall_seconds=wall,
    command=(
      f'python experiments/ablate.py --preset={preset.name}`, then the report rebuilt from its '
      f'runs with `{command}'
      if report_only and command
      else command or f'python experiments/ablate.py --preset={preset.name}'
    ),
  )


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  if _COMPILATION_CACHE.value:
    # Seeds of a variant compile the same programs: keep them across runs and invocations.
    jax.config.update('jax_compilation_cache_dir', _COMPILATION_CACHE.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  command = 'python ' + ' '.join(sys.argv)
  output_dir = _OUTPUT_DIR.value
  if output_dir is None and _PRESET.value == 'default':
    output_dir = os.path.join(ROOT, 'experiments', 'results')
  elif output_dir is None:
    runs_dir = _RUNS_DIR.value or str(paths.cache_dir('ablations', _PRESET.value))
    output_dir = os.path.join(runs_dir, 'report')
  path = run_ablation(
    _PRESET.value,
    output_dir,
    _RUNS_DIR.value,
    budget_minutes=_BUDGET.value,
    report_only=_REPORT_ONLY.value,
    command=command,
  )
  print(f'Wrote {path}', flush=True)


_PRESET = flags.DEFINE_enum('preset', 'default', list(PRESETS), 'Which sweep to run.')
_OUTPUT_DIR = flags.DEFINE_string(
  'output_dir',
  None,
  'Where the report and plots go; default: experiments/results/ for the default preset (the '
  'committed results), next to the runs for the others.',
)
_RUNS_DIR = flags.DEFINE_string(
  'runs_dir', None, 'Per-run workdirs and result.json files; default: the unet_jax cache.'
)
_BUDGET = flags.DEFINE_float(
  'budget_minutes', None, "No new run starts after this many minutes (default: the preset's)."
)
_COMPILATION_CACHE = flags.DEFINE_string(
  'compilation_cache_dir',
  str(paths.cache_dir('jax_compilation_cache')),
  'Persistent XLA compilation cache (empty: off).',
)
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Rebuild the report from finished runs.')


if __name__ == '__main__':
  logging.getLogger().setLevel(logging.INFO)
  app.run(main)
