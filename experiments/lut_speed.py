"""LUT application speed: gather vs one-hot matmul side by side, and LUT-only predict at 24 MP.

  python -m experiments.lut_speed                  # both, on the default backend
  python -m experiments.lut_speed --megapixels=24 --methods=gather

Prints one JSON line. The method ratio comes from one run on one machine (both timed in
alternation, best of `--repeats`); the 24 MP figure is `preview.grade_lut_only` on a random
6000 x 4000 photo with an `adaptive_lut` model (random weights: the time does not depend on
them), the thumbnail included, after one warm-up call that compiles.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import configs.photo
from unet_jax import options
from unet_jax.inference import preview
from unet_jax.models import create_model
from unet_jax.models import lut as lut_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_float('method_megapixels', 1.0, 'Image size for the gather vs matmul race.')
flags.DEFINE_float('megapixels', 24.0, 'Photo size for LUT-only predict (0 skips it).')
flags.DEFINE_list('methods', list(options.LUT_METHODS[1:]), 'LUT methods to race.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per method (best counts).')
flags.DEFINE_integer('lut_size', 33, 'Lattice points per axis (configs/photo.py: 33).')


def _best(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def race_methods(megapixels: float, size: int, repeats: int) -> dict:
  side = int(np.sqrt(megapixels * 1e6))
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.random((1, side, side, 3), dtype=np.float32))
  tables = jnp.asarray(rng.random((1, size, size, size, 3), dtype=np.float32))
  compiled = {
    m: jax.jit(lambda t, x, m=m: lut_lib.apply_lut(t, x, m)).lower(tables, image).compile()
    for m in FLAGS.methods
  }
  seconds = {m: [] for m in compiled}
  for _ in range(repeats):  # alternate so that load changes hit both alike
    for m, fn in compiled.items():
      seconds[m].append(_best(lambda fn=fn: fn(tables, image), 1))
  best = {m: min(v) for m, v in seconds.items()}
  out = {'pixels': side * side, 'seconds': best}
  if len(best) == 2:
    out['matmul_over_gather'] = best['matmul'] / best['gather']
  return out


def lut_only_predict(megapixels: float) -> dict:
  config = configs.photo.get_config()
  config.model.color_head = 'adaptive_lut'  # the costlier head: its CNN reads the thumbnail
  model = create_model(config.model, task=config.task)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
    lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32), shapes
  )
  height, width = 4000, int(round(megapixels * 1e6 / 4000))
  photo = rng.random((height, width, 3), dtype=np.float32)
  warm = preview.grade_lut_only(model, variables, photo[:512])  # compiles this width
  del warm
  start, cpu_start = time.perf_counter(), time.process_time()
  preview.grade_lut_only(model, variables, photo)
  # On a shared machine the wall clock counts other jobs' time too; the CPU seconds this
  # process used (all its threads) bound what an idle machine of the same cores would take.
  return {
    'height': height,
    'width': width,
    'seconds': time.perf_counter() - start,
    'cpu_seconds': time.process_time() - cpu_start,
    'cpu_count': os.cpu_count(),
  }


def main(argv):
  del argv
  report = {
    'backend': jax.default_backend(),
    'auto_method': lut_lib.resolve_method('auto'),
    'methods': race_methods(FLAGS.method_megapixels, FLAGS.lut_size, FLAGS.repeats),
  }
  if FLAGS.megapixels > 0:
    report['lut_only_predict'] = lut_only_predict(FLAGS.megapixels)
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
