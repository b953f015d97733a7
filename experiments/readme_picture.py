"""The README's picture: `input | output | target` panels of the built-in held-out photos.

Trains `configs/default.py` (fewer steps by default, so it takes minutes rather than the full
run's ten) into `--workdir` unless that workdir already holds an evaluated run, then stacks the
panels of its latest eval (`eval/step_N/<photo>.png`, one row per held-out photo) into one small
JPEG with a header row naming the three columns.

  nice -n 10 python -m experiments.readme_picture --workdir=runs/readme --steps=300
  python -m experiments.readme_picture --workdir=runs/demo          # reuse an evaluated run

A run stopped early (Ctrl-C saves a checkpoint) is evaluated first with
`python -m unet_jax.main --mode=eval --workdir=runs/readme`, which writes the panels.
"""

import json
import pathlib

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from configs import default
from unet_jax.training import loop

_WORKDIR = flags.DEFINE_string('workdir', 'runs/readme', 'The run to read (trained if needed).')
_STEPS = flags.DEFINE_integer(
  'steps', 300, 'Training steps when the workdir has no finished run (configs/default.py: 800).'
)
_OUTPUT = flags.DEFINE_string('output', 'docs/readme_picture.jpg', 'The JPEG to write.')
_WIDTH = flags.DEFINE_integer('width', 900, 'Width of the picture in pixels.')
_QUALITY = flags.DEFINE_integer('quality', 82, 'JPEG quality.')

_HEADER = 28  # pixels of the header row


def latest_eval_dir(workdir: pathlib.Path) -> pathlib.Path | None:
  """The eval folder (with its metrics.json) of the run's latest evaluated step, or None."""
  folders = [
    folder
    for folder in (workdir / 'eval').glob('step_*')
    if (folder / 'metrics.json').exists() and folder.name.removeprefix('step_').isdigit()
  ]
  return max(folders, key=lambda f: int(f.name.removeprefix('step_')), default=None)


def panels(folder: pathlib.Path) -> list[Image.Image]:
  """The `input | output | target` panels of an eval folder, in name order."""
  paths = sorted(
    path for path in folder.glob('*.png') if not path.stem.endswith(('_graded', '_labels'))
  )
  if not paths:
    raise FileNotFoundError(f'No input | output | target panels in {folder}.')
  return [Image.open(path).convert('RGB') for path in paths]


def compose(rows: list[Image.Image], width: int) -> Image.Image:
  """Scales every panel to `width`, stacks them under a header naming the three columns."""
  scaled = [
    row.resize((width, round(row.height * width / row.width)), Image.LANCZOS) for row in rows
  ]
  gap = 4
  height = _HEADER + sum(row.height for row in scaled) + gap * (len(scaled) - 1)
  picture = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(picture)
  for column, label in enumerate(('input', 'output (the model)', 'target (the look)')):
    left = column * width // 3
    draw.text((left + width // 6, _HEADER // 2), label, fill='black', anchor='mm', font_size=16)
  top = _HEADER
  for row in scaled:
    picture.paste(row, (0, top))
    top += row.height + gap
  return picture


def main(argv: list[str]) -> None:
  del argv
  workdir = pathlib.Path(_WORKDIR.value)
  folder = latest_eval_dir(workdir)
  if folder is None:
    config = default.get_config()
    config.num_train_steps = _STEPS.value
    config.eval_every_steps = _STEPS.value
    config.checkpoint_every_steps = min(config.checkpoint_every_steps, _STEPS.value)
    results = loop.train_and_evaluate(config, str(workdir))
    loop.log_final_comparison(results)
    folder = latest_eval_dir(workdir)
  metrics = json.loads((folder / 'metrics.json').read_text())
  picture = compose(panels(folder), _WIDTH.value)
  output = pathlib.Path(_OUTPUT.value)
  output.parent.mkdir(parents=True, exist_ok=True)
  picture.save(output, quality=_QUALITY.value, optimize=True)
  size_kb = output.stat().st_size / 1024
  pixels = np.asarray(picture).shape
  print(f'Wrote {output} ({pixels[1]}x{pixels[0]}, {size_kb:.0f} KB) from {folder}')
  print(json.dumps(metrics, indent=1))


if __name__ == '__main__':
  app.run(main)
