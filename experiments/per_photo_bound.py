"""Trained rows against the per-photo LUT bound, photo by photo (issue 31's image-adaptive looks).

The report's `best_fit_lut` row is the mean over the held-out photos of a 17^3 LUT fitted to
each photo's own target. Where the editor left a photo as it was (ImageMagick's auto levels on a
photo that already spans black to white), that fit is exact to float precision (150 dB), and one
such photo lifts the mean far above what any model that is not bit-exact scores on it. This
prints, for each held-out photo, the bound, each trained row's score (from its runs'
`result.json`, seeds averaged) and the gap, with the mean and median of the gaps.

  python -m experiments.per_photo_bound --looks=im_auto_level,cv_grey_world \
    --rows=recipe_levels_fitted,levels_prefit_unet --runs_dir=runs/editor_looks/_runs_500
"""

import glob
import json
import os

import numpy as np
from absl import app, flags

from experiments import lut_fits
from unet_jax.data import load_image
from unet_jax.inference import lut as inference_lut
from unet_jax.models import lut as lut_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def photo_bounds(folder: str) -> dict[str, float]:
  """Each held-out photo's PSNR under a LUT fitted to its own target."""
  bounds = {}
  for path in sorted(glob.glob(os.path.join(folder, 'test', 'input', '*'))):
    image = load_image(path)
    target = load_image(os.path.join(folder, 'test', 'target', os.path.basename(path)))
    table = lut_fits.best_fit_lut(image, target)
    graded = np.asarray(lut_lib.apply_lut(table, image[None], 'gather')[0])
    bounds[os.path.splitext(os.path.basename(path))[0]] = inference_lut.psnr(graded, target)
  return bounds


def row_scores(runs_dir: str, look: str, row: str) -> dict[str, float]:
  """Each held-out photo's PSNR under a trained row, averaged over its seeds' runs."""
  scores: dict[str, list[float]] = {}
  for path in sorted(glob.glob(os.path.join(runs_dir, look, row, 'seed_*', 'result.json'))):
    with open(path) as f:
      for image in json.load(f)['images']:
        scores.setdefault(image['name'], []).append(image['model']['psnr'])
  return {name: float(np.mean(values)) for name, values in scores.items()}


def main(argv):
  del argv
  command = 'python -m experiments.per_photo_bound ' + ' '.join(
    f'--{name}={",".join(value) if isinstance(value, list) else value}'
    for name, value in (
      ('looks', FLAGS.looks),
      ('rows', FLAGS.rows),
      ('runs_dir', os.path.relpath(FLAGS.runs_dir, ROOT)),
      ('output', os.path.relpath(FLAGS.output, ROOT) if FLAGS.output else ''),
    )
    if value
  )
  lines = [
    '# Trained rows against the per-photo LUT bound, photo by photo',
    '',
    f'Command: `{command}`. PSNR dB of each held-out photo: a 17^3 LUT fitted to its own target '
    "(`best_fit_lut`), and each row's runs (their seeds' mean), with the gap to the bound.",
    '',
  ]
  results = {}
  for look in FLAGS.looks:
    bounds = photo_bounds(os.path.join(FLAGS.pairs_root, look))
    rows = {row: row_scores(FLAGS.runs_dir, look, row) for row in FLAGS.rows}
    rows = {row: scores for row, scores in rows.items() if scores}
    results[look] = {'best_fit_lut': bounds, **rows}
    lines += [f'## {look}', '', '| photo | best_fit_lut | ' + ' | '.join(rows) + ' |']
    lines.append('|---' * (2 + len(rows)) + '|')
    for name, bound in bounds.items():
      cells = [
        f'{s[name]:.2f} ({s[name] - bound:+.2f})' if name in s else '-' for s in rows.values()
      ]
      lines.append(f'| {name} | {bound:.2f} | ' + ' | '.join(cells) + ' |')
    for label, reduce in (('mean', np.mean), ('median', np.median)):
      cells = [
        f'{reduce([s[n] for n in bounds]):.2f} ({reduce([s[n] - bounds[n] for n in bounds]):+.2f})'
        if set(bounds) <= set(s)
        else '-'
        for s in rows.values()
      ]
      lines.append(f'| {label} | {reduce(list(bounds.values())):.2f} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  text = '\n'.join(lines)
  print(text)
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      f.write(text + '\n')
    with open(os.path.splitext(FLAGS.output)[0] + '.json', 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  # Defined here, not on import: the module's functions serve tests too.
  flags.DEFINE_string('pairs_root', os.path.join(ROOT, 'runs', 'editor_looks'), 'Looks folder.')
  flags.DEFINE_list('looks', ['im_auto_level', 'cv_grey_world'], 'Looks to compare.')
  flags.DEFINE_list('rows', [], 'Trained rows of experiments/color_head.py to compare.')
  flags.DEFINE_string('runs_dir', '', "Where color_head.py's runs are (--runs_dir there).")
  flags.DEFINE_string('output', '', 'Also write the table here (Markdown) and beside it as JSON.')
  app.run(main)
