"""Running the sweep: one `train_and_evaluate` per (task, variant, seed), resumable."""

import json
import logging
import math
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from ablation.measures import image_measures
from ablation.presets import MIN_SEEDS, PERCEPTUAL, Preset, make_config
from unet_jax.models import count_params, create_model
from unet_jax.training import loop


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


def json_safe(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_safe(v) for v in value]
  return value


def result_path(runs_dir: str, task: str, variant: str, seed: int) -> str:
  """Where a finished run's `result.json` lives (its workdir holds nothing else of use)."""
  return os.path.join(runs_dir, task, variant, f'seed_{seed}', 'result.json')


def load_result(runs_dir: str, task: str, variant: str, seed: int) -> dict[str, Any] | None:
  """A finished run's result, or None if that run has not finished."""
  path = result_path(runs_dir, task, variant, seed)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_one(preset: Preset, task: str, variant: str, seed: int, runs_dir: str) -> dict[str, Any]:
  """Trains and scores one (task, variant, seed); reuses its `result.json` if it exists."""
  finished = load_result(runs_dir, task, variant, seed)
  if finished is not None:
    return finished
  path = result_path(runs_dir, task, variant, seed)
  workdir = os.path.dirname(path)
  # A run that died half-way left a log that a restart would append to: start it afresh.
  shutil.rmtree(workdir, ignore_errors=True)
  config = make_config(preset, task, variant, seed)
  logging.info('Run %s/%s/seed_%d', task, variant, seed)
  started = time.perf_counter()
  error = None
  try:
    final = loop.train_and_evaluate(config, workdir)
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
  with open(path + '.tmp', 'w') as f:
    json.dump(json_safe(result), f, indent=1)
  os.replace(path + '.tmp', path)
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


def run_sweep(
  preset: Preset, runs_dir: str, budget_minutes: float | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
  """Runs (or reloads) every planned run until the budget is spent: (results, skipped)."""
  budget = preset.budget_minutes if budget_minutes is None else budget_minutes
  started = time.perf_counter()
  results, skipped = [], []
  for task, variant, seed in planned_runs(preset):
    over_budget = time.perf_counter() - started > 60.0 * budget
    if over_budget and not os.path.exists(result_path(runs_dir, task, variant, seed)):
      skipped.append((task, variant, seed))
      continue
    results.append(run_one(preset, task, variant, seed, runs_dir))
  return results, skipped
