"""experiments/readme_picture.py: the README's picture from a run's latest eval panels."""

import importlib.util
import json
import pathlib

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location(
  'readme_picture', ROOT / 'experiments' / 'readme_picture.py'
)
readme_picture = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(readme_picture)


def _eval_folder(workdir: pathlib.Path, step: int, colour: int) -> None:
  folder = workdir / 'eval' / f'step_{step}'
  folder.mkdir(parents=True)
  (folder / 'metrics.json').write_text(json.dumps({'psnr': 30.0}))
  for name, height in (('a', 40), ('b', 60)):
    panel = np.full((height, 3 * 50, 3), colour, np.uint8)
    Image.fromarray(panel).save(folder / f'{name}.png')
    Image.fromarray(panel[:, :50]).save(folder / f'{name}_graded.png')


def test_picture_stacks_the_panels_of_the_latest_eval(tmp_path):
  assert readme_picture.latest_eval_dir(tmp_path) is None  # nothing evaluated: it would train
  _eval_folder(tmp_path, 100, colour=10)
  _eval_folder(tmp_path, 300, colour=200)
  (tmp_path / 'eval' / 'step_400').mkdir()  # an eval that never finished has no metrics.json
  folder = readme_picture.latest_eval_dir(tmp_path)
  assert folder.name == 'step_300'

  rows = readme_picture.panels(folder)
  assert [row.size for row in rows] == [(150, 40), (150, 60)]  # the *_graded.png files are left out
  picture = np.asarray(readme_picture.compose(rows, width=300))
  # Each 150 px panel doubled to 300 px, stacked under the header with a 4 px gap.
  assert picture.shape == (readme_picture._HEADER + 80 + 4 + 120, 300, 3)
  body = picture[readme_picture._HEADER + 5 : readme_picture._HEADER + 75]
  assert abs(float(body.mean()) - 200) < 2
  header = picture[: readme_picture._HEADER]
  assert header.min() < 128  # the column labels are drawn
