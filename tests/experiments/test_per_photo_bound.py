"""experiments/per_photo_bound.py: trained rows against each held-out photo's own LUT bound."""

import json

import numpy as np
from PIL import Image

from experiments import per_photo_bound


def test_bounds_and_row_scores_photo_by_photo(tmp_path):
  rng = np.random.default_rng(0)
  for folder in ('input', 'target'):
    (tmp_path / 'look' / 'test' / folder).mkdir(parents=True)
  for name, look in (('kept', lambda x: x), ('warmed', lambda x: x * (1.0, 0.9, 0.7))):
    image = rng.random((20, 24, 3))
    for folder, pixels in (('input', image), ('target', look(image))):
      codes = np.round(pixels * 255).astype(np.uint8)
      Image.fromarray(codes).save(tmp_path / 'look' / 'test' / folder / f'{name}.png')
  bounds = per_photo_bound.photo_bounds(str(tmp_path / 'look'))
  # A photo the editor left as it was is fitted to float precision, far above any other.
  assert set(bounds) == {'kept', 'warmed'}
  assert bounds['kept'] > 100 and 35 < bounds['warmed'] < 100, bounds
  for seed, scores in ((0, (50.0, 40.0)), (1, (52.0, 42.0))):
    run = tmp_path / 'runs' / 'look' / 'row' / f'seed_{seed}'
    run.mkdir(parents=True)
    images = [
      {'name': n, 'model': {'psnr': s}} for n, s in zip(('kept', 'warmed'), scores, strict=True)
    ]
    (run / 'result.json').write_text(json.dumps({'images': images}))
  assert per_photo_bound.row_scores(str(tmp_path / 'runs'), 'look', 'row') == {
    'kept': 51.0,
    'warmed': 41.0,
  }
