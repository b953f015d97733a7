"""Where training reports go: TensorBoard event files, a JSONL log, and a console line.

What is reported is aggregated with `clu.metrics` (the train step's metrics averaged over each
logging interval, eval scores averaged over images and processes) and the parameter table at
start comes from `clu.parameter_overview`. clu's `metric_writers` and `periodic_actions` import
TensorFlow, so they are never imported here: tensorboardX writes the event files.
"""

import functools
import importlib
import json
import logging
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from clu import metrics as clu_metrics
from clu import parameter_overview


def _import_tensorboardx() -> Any:
  """tensorboardX, imported without PyTorch.

  Its writer imports torch whenever it is installed, only to accept torch tensors: 2-3 s of
  every training start on a 2-core CPU where torch is installed (the reference benchmarks bring
  it). A `None` entry in `sys.modules` makes that import fail as if torch were absent; it is
  removed again, so a later `import torch` works. Where torch is already imported nothing is
  blocked."""
  if 'tensorboardX' in sys.modules or 'torch' in sys.modules:
    return importlib.import_module('tensorboardX')
  sys.modules['torch'] = None
  try:
    return importlib.import_module('tensorboardX')
  finally:
    del sys.modules['torch']


tensorboardx = _import_tensorboardx()

# Step outputs that are flags for the host, not numbers to average.
_NOT_AVERAGED = ('finite', 'finite_parts')


class MetricWriter:
  """Writes scalars and images from process 0; other processes write nothing."""

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._tensorboard = tensorboardx.SummaryWriter(os.path.join(workdir, 'tensorboard'))
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')  # noqa: SIM115

  def write_scalars(self, step: int, scalars: dict[str, Any], *, prefix: str = '') -> None:
    if not self._enabled:
      return
    values = {f'{prefix}{k}': float(v) for k, v in scalars.items()}
    for name, value in values.items():
      self._tensorboard.add_scalar(name, value, step)
    self._jsonl.write(json.dumps({'step': step, **values}) + '\n')
    self._jsonl.flush()

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """`images`: name -> `[H, W, 3]` float in [0, 1]."""
    if not self._enabled:
      return
    for name, image in images.items():
      self._tensorboard.add_image(name, np.clip(image, 0, 1), step, dataformats='HWC')

  def flush(self) -> None:
    if self._enabled:
      self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._tensorboard.close()
      self._jsonl.close()


def read_logged(workdir: str, name: str, *, up_to_step: int) -> list[float]:
  """The values of `name` (e.g. 'train/loss') in `workdir/metrics.jsonl` up to a step."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  values = []
  with open(path) as f:
    for line in f:
      try:
        entry = json.loads(line)
      except json.JSONDecodeError:  # a line cut short by kill -9
        continue
      if name in entry and entry.get('step', 0) <= up_to_step:
        values.append(float(entry[name]))
  return values


class Progress:
  """Images per second and ETA between reports, measured on the host's wall clock."""

  def __init__(self, total_steps: int, global_batch_size: int, start_step: int):
    self._total = total_steps
    self._batch = global_batch_size
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def report(self, step: int, loss: float) -> dict[str, float]:
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    seconds_per_step = (now - self._last_time) / steps
    self._last_step, self._last_time = step, now
    images_per_second = self._batch / max(seconds_per_step, 1e-9)
    eta = (self._total - step) * seconds_per_step
    logging.info(
      'step %d/%d  loss %.4f  %.1f images/s  ETA %s',
      step,
      self._total,
      loss,
      images_per_second,
      time.strftime('%H:%M:%S', time.gmtime(eta)),
    )
    return {'images_per_second': images_per_second, 'seconds_per_step': seconds_per_step}


@functools.cache
def _interval_steps(names: tuple[str, ...]):
  """Jitted (first, merge) of a Collection of one Average per name: one device call a step
  instead of a dozen small eager ones."""
  collection = clu_metrics.Collection.create(
    **{name: clu_metrics.Average.from_output(name) for name in names}
  )

  def first(outputs):
    return collection.single_from_model_output(**outputs)

  def merge(total, outputs):
    return total.merge(first(outputs))

  return jax.jit(first), jax.jit(merge)


class IntervalMetrics:
  """The train step's metrics averaged over the steps since the last report.

  A `clu.metrics.Collection` of one `Average` per metric the step returns; each `add` merges one
  step on the device (no host transfer), `compute_and_reset` reads the means and starts over.
  """

  def __init__(self):
    self._total = None

  def add(self, step_metrics: dict[str, Any]) -> None:
    outputs = {k: v for k, v in step_metrics.items() if k not in _NOT_AVERAGED}
    first, merge = _interval_steps(tuple(sorted(outputs)))
    self._total = first(outputs) if self._total is None else merge(self._total, outputs)

  def compute_and_reset(self) -> dict[str, float]:
    """name -> mean over the steps added since the last call ({} if none were)."""
    if self._total is None:
      return {}
    means = {k: float(v) for k, v in jax.device_get(self._total.compute()).items()}
    self._total = None
    return means


def log_parameter_overview(params: Any, workdir: str) -> str:
  """Writes clu's parameter table (shapes, sizes, mean and std at init) to
  `workdir/parameters.txt` from process 0, logs the total; returns the table."""
  table = parameter_overview.get_parameter_overview(jax.device_get(params))
  # clu counts in floats when the model holds a scalar parameter (847,125.0): logged as an int.
  total = int(parameter_overview.count_parameters(params))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, 'parameters.txt')
    with open(path, 'w') as f:
      f.write(table + '\n')
    logging.info('Model: %s parameters (table: %s)', f'{total:,}', path)
  return table
