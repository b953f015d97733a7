"""A short training run through the library, reported as numbers: images/s and held-out PSNR.

  python -m experiments.train_check --config=configs/res256.py --config.num_train_steps=500 \
    --workdir=/tmp/res256_check --json-out=/tmp/train_check.json

Runs `unet_jax.training.loop.train_and_evaluate` (the same path as `python -m unet_jax.main`) in
a fresh workdir and reads its own progress reports: images/s is the median of the rates logged after
the first report (which includes compilation), so it is the steady rate of the jitted step with
the input pipeline in the loop. The held-out PSNR is the final eval's, next to the identity
baseline (doing nothing).
"""

import json
import logging
import pathlib
import shutil
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from unet_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/res256.py', 'Training config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Fresh folder for the run (emptied first).')
_JSON_OUT = flags.DEFINE_string('json-out', None, 'Write the figures to this JSON file.')
flags.mark_flag_as_required('workdir')


class _ProgressRates(logging.Handler):
  """Collects the images/s of each progress report the training loop logs."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.rates: list[float] = []

  def emit(self, record: logging.LogRecord) -> None:
    if isinstance(record.msg, str) and 'images/s' in record.msg and record.args:
      self.rates.append(float(record.args[3]))


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  workdir = pathlib.Path(_WORKDIR.value)
  shutil.rmtree(workdir, ignore_errors=True)
  logging.getLogger().setLevel(logging.INFO)
  rates = _ProgressRates()
  logging.getLogger().addHandler(rates)
  start = time.perf_counter()
  results = loop.train_and_evaluate(config, str(workdir))
  seconds = time.perf_counter() - start
  steady = rates.rates[1:] or rates.rates
  figures = {
    'config': config.to_dict(),
    'backend': jax.default_backend(),
    'device_kind': jax.devices()[0].device_kind,
    'steps': config.num_train_steps,
    'batch_size': config.batch_size,
    'crop_size': config.data.crop_size,
    'wall_seconds': seconds,
    'images_per_second': statistics.median(steady) if steady else None,
    'images_per_second_reports': rates.rates,
    'eval': results.get('model', {}),
    'eval_identity': results.get('identity', {}),
    'eval_images': results.get('num_images'),
  }
  line = loop.log_final_comparison(results)
  rate = figures['images_per_second']
  print(
    f'{config.num_train_steps} steps in {seconds:.1f} s (compile and eval included), '
    f'{rate:.1f} images/s steady. {line}'
    if rate
    else f'{config.num_train_steps} steps in {seconds:.1f} s. {line}',
    flush=True,
  )
  if _JSON_OUT.value:
    pathlib.Path(_JSON_OUT.value).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == '__main__':
  app.run(main)
