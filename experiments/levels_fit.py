"""The auto-levels stage alone, fitted on a look's training pairs: how much of an image-adaptive
global look its family can learn from the pairs, apart from the rest of the model.

`model.auto_levels` (models/auto_levels.py) holds an editor's auto rules as a few weights. This
fits those weights alone, by Adam on the L1 loss or by Levenberg-Marquardt on the squared error
(`--solver`; the latter is `optimizer.auto_levels_prefit`'s fit) over a fixed sample of each
training pair's pixels (their whole-photo figures taken of the whole photo, as in training),
with or without the stage's 8-bit offset (`--offset`, `model.auto_levels_offset`), then grades each
held-out photo whole and scores it against its target: as the report's trained rows are scored
(float output) and after rounding the output to 8 bits, as a user's 8-bit file has it. It is the
`train_fit_lut` of the levels: the most this part learns from the pairs, and the figure to
compare the trained recipe's row with (experiments/results/editor_looks.md).

  python -m experiments.levels_fit --looks=im_auto_level,cv_grey_world [--steps=1000]
  python -m experiments.levels_fit --solver=levenberg_marquardt --offset --sample_side=40
"""

import glob
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from unet_jax import whole_photo
from unet_jax.data import load_image
from unet_jax.inference import lut as inference_lut
from unet_jax.models import auto_levels
from unet_jax.training import levels_prefit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string('pairs_root', os.path.join(ROOT, 'runs', 'editor_looks'), 'Looks folder.')
flags.DEFINE_list('looks', ['im_auto_level', 'cv_grey_world'], 'Looks to fit.')
flags.DEFINE_integer('steps', 1000, 'Adam steps (full batch, cosine decay).')
flags.DEFINE_float('learning_rate', 1e-2, 'Peak step size.')
flags.DEFINE_integer('sample_side', 96, 'Each training pair gives sample_side^2 random pixels.')
flags.DEFINE_bool('offset', False, "Fit the stage's 8-bit offset too (model.auto_levels_offset).")
flags.DEFINE_enum(
  'solver',
  'adam',
  ['adam', 'levenberg_marquardt'],
  'adam: --steps of full-batch Adam on the L1 loss; levenberg_marquardt: least squares to '
  'convergence, as optimizer.auto_levels_prefit fits the stage (training/levels_prefit.py).',
)
flags.DEFINE_string('output', '', 'Write the figures here as JSON too.')


def _pairs(folder: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
  pairs = []
  for path in sorted(glob.glob(os.path.join(folder, 'input', '*'))):
    name = os.path.basename(path)
    target = load_image(os.path.join(folder, 'target', name))
    pairs.append((os.path.splitext(name)[0], load_image(path), target))
  return pairs


def fit_look(
  folder: str,
  *,
  steps: int,
  learning_rate: float = 1e-2,
  sample_side: int = 96,
  offset: bool = False,
  solver: str = 'adam',
) -> dict:
  """Fits the stage on the training pairs of a look's `folder` (`train/`, `test/`, each with
  `input/` and `target/`); scores each held-out photo."""
  train = _pairs(os.path.join(folder, 'train'))
  rng = np.random.default_rng(0)
  inputs, targets, figures = [], [], []
  side = sample_side
  for _, image, target in train:
    figures.append(whole_photo.photo_figures(image, True, np))
    rows = rng.integers(0, image.shape[0], (side, side))
    cols = rng.integers(0, image.shape[1], (side, side))
    inputs.append(image[rows, cols])
    targets.append(target[rows, cols])
  inputs, targets, figures = (jnp.asarray(np.stack(a)) for a in (inputs, targets, figures))
  model = auto_levels.AutoLevels(offset)
  params = model.init(jax.random.key(0), inputs[:1], figures[:1])['params']
  start = time.perf_counter()
  if solver == 'levenberg_marquardt':
    pixels = lambda a: np.asarray(a).reshape(len(train), -1, 3)
    params = levels_prefit.fit_auto_levels(
      params, offset, pixels(inputs), pixels(targets), np.asarray(figures)
    )[0]
  else:
    params = _adam_fit(model, params, inputs, targets, figures, steps, learning_rate)
  seconds = time.perf_counter() - start
  apply = jax.jit(model.apply)
  photos = {}
  for name, image, target in _pairs(os.path.join(folder, 'test')):
    figure = whole_photo.photo_figures(image, True, np)[None]
    graded = np.clip(np.asarray(apply({'params': params}, image[None], figure))[0], 0, 1)
    photos[name] = {
      'identity': inference_lut.psnr(image, target),
      'float': inference_lut.psnr(graded, target),
      '8bit': inference_lut.psnr(np.round(graded * 255) / 255, target),
    }
  return {'fit_seconds': seconds, 'pairs': len(train), 'photos': photos}


def _adam_fit(model, params, inputs, targets, figures, steps: int, learning_rate: float) -> dict:
  """Full-batch Adam on the L1 loss, cosine decay."""
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
  state = optimizer.init(params)

  def loss(params):
    return jnp.mean(jnp.abs(model.apply({'params': params}, inputs, figures) - targets))

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params


def _mean(values: list[float]) -> float:
  finite = [v for v in values if np.isfinite(v)]
  return float(np.mean(finite)) if finite else float('inf')


def main(argv):
  del argv
  results = []
  for look in FLAGS.looks:
    folder = os.path.join(FLAGS.pairs_root, look)
    result = {
      'look': look,
      **fit_look(
        folder,
        steps=FLAGS.steps,
        learning_rate=FLAGS.learning_rate,
        sample_side=FLAGS.sample_side,
        offset=FLAGS.offset,
        solver=FLAGS.solver,
      ),
    }
    results.append(result)
    photos = result['photos']
    print(
      f'{look}: {result["pairs"]} training pairs, {FLAGS.solver} in '
      f'{result["fit_seconds"]:.0f} s; held-out PSNR dB (mean of the finite ones): '
      + ', '.join(
        f'{kind} {_mean([p[kind] for p in photos.values()]):.2f}'
        for kind in ('identity', 'float', '8bit')
      )
    )
    for name, scores in photos.items():
      print(f'  {name}: ' + ', '.join(f'{k} {v:.2f}' for k, v in scores.items()))
  if FLAGS.output:
    settings = {'steps': FLAGS.steps, 'offset': FLAGS.offset, 'solver': FLAGS.solver}
    with open(FLAGS.output, 'w') as f:
      json.dump({**settings, 'results': results}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
