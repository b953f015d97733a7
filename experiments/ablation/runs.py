"""The ablation's runs: one per (task, variant, seed), in an order that covers every claim
early, through the shared sweep runner (experiments/sweep.py), which trains and caches them."""

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments import sweep
from experiments.ablation.measures import image_measures
from experiments.ablation.presets import MIN_SEEDS, PERCEPTUAL, Preset, make_config
from unet_jax.models import count_params, create_model


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
  model = create_model(config.model, task=config.task)
  size = config.data.crop_size
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, size, size, 3)), train=False)
  )
  return count_params(shapes['params'])


def _summarise(run: sweep.Run, workdir: str, final: dict[str, Any]) -> dict[str, Any]:
  """What the ablation report reads of a run: scores, curves, timing and output measures."""
  log = _read_log(workdir)
  eval_dir = os.path.join(workdir, 'eval', f'step_{run.config.num_train_steps}')
  return {
    'task': run.group,
    'variant': run.row,
    'seed': run.seed,
    'params': _param_count(run.config),
    'step_time': _step_time(log, run.config),
    'model': final.get('model', {}),
    'identity': final.get('identity', {}),
    'curve': [(row['step'], row['eval/psnr']) for row in log if 'eval/psnr' in row],
    'train_loss': [(row['step'], row['train/loss']) for row in log if 'train/loss' in row],
    'measures': image_measures(eval_dir) if os.path.isdir(eval_dir) else {},
    'eval_dir': os.path.join(
      run.group, run.row, f'seed_{run.seed}', 'eval', f'step_{run.config.num_train_steps}'
    ),
  }


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


def sweep_runs(preset: Preset) -> list[sweep.Run]:
  """`planned_runs` with their configs, in the same order."""
  return [
    sweep.Run(task, variant, seed, make_config(preset, task, variant, seed))
    for task, variant, seed in planned_runs(preset)
  ]


def run_sweep(
  preset: Preset,
  runs_dir: str,
  budget_minutes: float | None = None,
  *,
  report_only: bool = False,
) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
  """Runs (or reloads) every planned run until the budget is spent: (results, skipped)."""
  budget = preset.budget_minutes if budget_minutes is None else budget_minutes
  results, skipped = sweep.run_sweep(
    sweep_runs(preset), runs_dir, _summarise, budget_minutes=budget, report_only=report_only
  )
  return results, [(run.group, run.row, run.seed) for run in skipped]
