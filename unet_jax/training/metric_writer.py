"""Where training reports go: TensorBoard event files, a JSONL log, and a console line."""

import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
  """Writes scalars and images from process 0; other processes write nothing."""

  def __init__(self, workdir: str):
    self._enabled = jax.process_index() == 0
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._tensorboard = SummaryWriter(os.path.join(workdir, 'tensorboard'))
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


def side_by_side(*images: np.ndarray) -> np.ndarray:
  """Concatenates `[H, W, C]` images left to right (input | output | target)."""
  height = max(image.shape[0] for image in images)
  padded = [np.pad(image, ((0, height - image.shape[0]), (0, 0), (0, 0))) for image in images]
  return np.concatenate(padded, axis=1)


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
