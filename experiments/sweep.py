"""The one sweep runner of the studies in experiments/: rows -> validated configs -> runs ->
cached results -> report.

A study lists its runs (`Run`: a group such as a task or a look, a row, a seed, and the config
that makes it) and says what to keep of each (`summarise`). `run_sweep` validates every config
before anything trains, so a bad row fails in seconds rather than hours into the sweep; then it
trains each run in its own workdir (`unet_jax.training.loop.train_and_evaluate`) and keeps the
summary as `<runs_dir>/<group>/<row>/seed_<seed>/result.json`. A finished run is never trained
again: a sweep cut short (budget, crash, Ctrl-C) resumes where it stopped, and the study's
report is rebuilt from whatever has finished (`report_only`). Used by `experiments.ablate` and
`experiments.color_head`.
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from unet_jax.training import loop
from unet_jax.validation import validate_config

# What a finished run's workdir no longer needs: the report reads result.json (and eval/).
_BULKY = ('checkpoints', 'best', 'tensorboard', 'tfds')


@dataclasses.dataclass(frozen=True)
class Run:
  group: str
  row: str
  seed: int
  # None where only the run's folder is wanted (a report reading result.json files).
  config: ml_collections.ConfigDict | None = dataclasses.field(
    default=None, compare=False, repr=False
  )

  def workdir(self, runs_dir: str) -> str:
    return os.path.join(runs_dir, self.group, self.row, f'seed_{self.seed}')

  def result_path(self, runs_dir: str) -> str:
    return os.path.join(self.workdir(runs_dir), 'result.json')


# (run, its workdir, train_and_evaluate's last eval or {} after a non-finite stop) -> the fields
# the study keeps.
Summarise = Callable[[Run, str, dict[str, Any]], dict[str, Any]]


def json_safe(value: Any) -> Any:
  """`value` with NaN and infinities as None, so that result.json is strict JSON."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_safe(v) for v in value]
  return value


def load_result(run: Run, runs_dir: str) -> dict[str, Any] | None:
  """A finished run's result, or None if that run has not finished."""
  path = run.result_path(runs_dir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def validate(runs: Sequence[Run]) -> None:
  """Checks every run's config before the first one trains (ConfigError names the option)."""
  for run in runs:
    try:
      validate_config(run.config, check_data_files=False)
    except ValueError as error:
      raise type(error)(f'{run.group}/{run.row}/seed_{run.seed}: {error}') from None


def train_one(run: Run, runs_dir: str, summarise: Summarise) -> dict[str, Any]:
  """Trains and summarises `run`, or reads its result.json if it has finished before.

  A non-finite stop (the library's guard) is a result with its `error`, not a crash.
  """
  finished = load_result(run, runs_dir)
  if finished is not None:
    return finished
  workdir = run.workdir(runs_dir)
  # A run that died half-way left a log that a restart would append to: start it afresh.
  shutil.rmtree(workdir, ignore_errors=True)
  logging.info('Run %s/%s/seed_%d', run.group, run.row, run.seed)
  started = time.perf_counter()
  error = None
  try:
    final = loop.train_and_evaluate(run.config, workdir)
  except FloatingPointError as exc:
    final, error = {}, str(exc)
  result = {
    **summarise(run, workdir, final),
    'wall_seconds': time.perf_counter() - started,
    'error': error,
  }
  path = run.result_path(runs_dir)
  with open(path + '.tmp', 'w') as f:
    json.dump(json_safe(result), f, indent=1)
  os.replace(path + '.tmp', path)
  for folder in _BULKY:
    shutil.rmtree(os.path.join(workdir, folder), ignore_errors=True)
  return result


def run_sweep(
  runs: Sequence[Run],
  runs_dir: str,
  summarise: Summarise,
  *,
  budget_minutes: float = math.inf,
  report_only: bool = False,
) -> tuple[list[dict[str, Any]], list[Run]]:
  """Trains (or reloads) `runs` in order: (results, the runs skipped).

  No new run starts after `budget_minutes` of wall clock; with `report_only` none starts at
  all. Finished runs are always read back.
  """
  if not report_only:
    validate(runs)
  started = time.perf_counter()
  results, skipped = [], []
  for run in runs:
    over_budget = time.perf_counter() - started > 60.0 * budget_minutes
    if (report_only or over_budget) and load_result(run, runs_dir) is None:
      skipped.append(run)
      continue
    results.append(train_one(run, runs_dir, summarise))
  return results, skipped


def use_compilation_cache(path: str | None) -> None:
  """Keeps compiled programs in `path` across runs and invocations (the seeds of a row, or the
  rows of one shape, compile the same programs); None or '' leaves the cache off."""
  if path:
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
