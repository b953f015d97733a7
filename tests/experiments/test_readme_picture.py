"""experiments/readme_picture.py: the README's picture from a run's latest eval panels.

Run as a command in a process of its own: the script defines absl flags (--workdir, --output)
that other modules define too.
"""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_python

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADER = 28  # readme_picture._HEADER


def _eval_folder(workdir: pathlib.Path, step: int, colour: int) -> None:
  folder = workdir / 'eval' / f'step_{step}'
  folder.mkdir(parents=True)
  (folder / 'metrics.json').write_text(json.dumps({'model': {'psnr': 30.0}}))
  for name, height in (('a', 40), ('b', 60)):
    panel = np.full((height, 3 * 50, 3), colour, np.uint8)
    Image.fromarray(panel).save(folder / f'{name}.png')
    Image.fromarray(panel[:, :50]).save(folder / f'{name}_graded.png')


@pytest.mark.slow
def test_picture_stacks_the_panels_of_the_latest_eval(tmp_path):
  _eval_folder(tmp_path, 100, colour=10)
  _eval_folder(tmp_path, 300, colour=200)
  (tmp_path / 'eval' / 'step_400').mkdir()  # an eval that never finished has no metrics.json
  output = tmp_path / 'picture.jpg'
  result = run_python(
    '-m', 'experiments.readme_picture', f'--workdir={tmp_path}', f'--output={output}', '--width=300'
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step_300' in result.stdout  # the latest finished eval, and no training
  picture = np.asarray(Image.open(output).convert('RGB')).astype(np.float64)
  # Two 150 px panels (the *_graded.png files left out) doubled to 300 px, 4 px apart.
  assert picture.shape == (HEADER + 80 + 4 + 120, 300, 3)
  body = picture[HEADER + 5 : HEADER + 75]
  assert abs(body.mean() - 200) < 3  # step_300's panels, not step_100's
  assert picture[:HEADER].min() < 128  # the column labels are drawn
