"""Ablation study of the design notes' claims, run through the library in-process.

Each variant is the baseline config with one option changed; every (task, variant, seed) run
calls `unet_jax.training.loop.train_and_evaluate` in its own workdir, and the held-out photos of
the built-in dataset score it. The report (`ablations.md`), the learning curves and the
before/after crops are written from the per-run `result.json` files, so a sweep that stops
half-way resumes where it stopped (finished runs are skipped) and the report can be rebuilt
from whatever has finished.

  python -m experiments.ablate --preset=quick            # minutes on 2 CPU cores (a smoke test)
  python -m experiments.ablate                           # the committed results (default preset)
  python -m experiments.ablate --report_only             # rebuild the report from finished runs

Runs go to `--runs_dir` (default `$UNET_JAX_CACHE/ablations/<preset>`), the report and plots to
`--output_dir` (default `experiments/results/`). The default preset orders its runs so that a
sweep stopped by `--budget_minutes` still covers every claim: the baseline at two seeds and
every other variant at one first, then the remaining seeds; verdicts judge differences against
the seed-to-seed spread pooled over a task's variants.

The pieces live in `experiments/ablation/`: `claims` (what is tested and by which variants),
`presets` (sweep sizes, the config of a run), `runs` (the runs and what each keeps; they train
and resume through the shared runner `experiments/sweep.py`), `measures`
(checkerboard and sharpness of the outputs), `verdicts` (statistics over seeds), `report`.

Tasks: `enhance` (the built-in `local_contrast` look: luminance detail above a 6 px Gaussian
doubled, a look with spatial variation) and `denoise` (Gaussian noise, sigma 25/255).
"""

import logging
import os
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from experiments import sweep
from experiments.ablation.presets import PRESETS
from experiments.ablation.report import write_report
from experiments.ablation.runs import run_sweep
from unet_jax import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  results, skipped = run_sweep(preset, runs_dir, budget_minutes, report_only=report_only)
  wall = time.perf_counter() - started
  return write_report(
    preset,
    results,
    skipped,
    output_dir,
    runs_dir,
    wall_seconds=wall,
    command=(
      f'python -m experiments.ablate --preset={preset.name}`, then the report rebuilt from its '
      f'runs with `{command}'
      if report_only and command
      else command or f'python -m experiments.ablate --preset={preset.name}'
    ),
  )


def main(argv: Sequence[str]) -> None:
  del argv
  sweep.use_compilation_cache(_COMPILATION_CACHE.value)
  command = ' '.join(['python -m experiments.ablate', *sys.argv[1:]])
  runs_dir = _RUNS_DIR.value or str(paths.cache_dir('ablations', _PRESET.value))
  output_dir = _OUTPUT_DIR.value
  if output_dir is None and _PRESET.value == 'default':
    output_dir = os.path.join(ROOT, 'experiments', 'results')
  elif output_dir is None:
    output_dir = os.path.join(runs_dir, 'report')
  path = run_ablation(
    _PRESET.value,
    output_dir,
    runs_dir,
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
