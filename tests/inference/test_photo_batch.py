"""Predict on a photographer's folder: files written like their inputs, resumable batches."""

import json
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests import photo_files as pf
from tests.helpers import identity_model, run_python
from unet_jax.data import load_photo
from unet_jax.inference import files, predict_summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def adobe_identity():
  return identity_model('adobe_rgb')


def _folder(root):
  """A phone's P3 JPEG (stored sideways) and a 16-bit Adobe RGB TIFF export, both with EXIF."""
  pf.write(
    root / 'phone.jpg',
    pf.colourful(40, 24, 8),
    profile=pf.profile('display_p3'),
    exif=pf.exif_block(orientation=6, make='Apple'),
    Q=95,
  )
  values = pf.colourful(30, 44, 16, seed=1)
  pf.write(root / 'export.tif', values, profile=pf.profile('adobe_rgb'), exif=pf.exif_block())
  return values


def test_folder_is_written_like_its_photos(adobe_identity, tmp_path):
  config, model, variables = adobe_identity
  source, out = tmp_path / 'in', tmp_path / 'out'
  values = _folder(source)

  summary = files.predict_paths(config, model, variables, str(source), str(out))

  assert sorted(os.listdir(out)) == ['export.tif', 'phone.jpg', predict_summary.SUMMARY_FILE]
  tiff = load_photo(out / 'export.tif', 'adobe_rgb')
  assert (tiff.container, tiff.bits, tiff.profile) == ('tiff', 16, pf.profile('adobe_rgb'))
  written = np.round(tiff.pixels.astype(np.float64) * 65535)
  assert np.abs(written - values).max() <= 2  # the identity round trip, within 2/65535
  tags = Image.open(out / 'export.tif').getexif()
  assert tags[0x010F] == 'Canon' and tags.get_ifd(0x8769)[0x829A] == 0.004
  jpeg = Image.open(out / 'phone.jpg')
  assert jpeg.format == 'JPEG' and jpeg.size == (40, 24)  # upright
  assert jpeg.info['icc_profile'] == pf.profile('display_p3')
  assert jpeg.getexif()[0x0112] == 1 and jpeg.getexif()[0x010F] == 'Apple'
  on_disk = json.loads((out / predict_summary.SUMMARY_FILE).read_text())
  assert on_disk['complete'] and on_disk['working_space'] == 'adobe_rgb'
  rows = {os.path.basename(w['input']): w for w in summary['written']}
  assert rows['export.tif']['bits'] == 16 and rows['export.tif']['exif']
  assert rows['phone.jpg']['profile'] == 'Display P3 (unet_jax)'


def test_recursive_mirrors_sub_folders(adobe_identity, tmp_path):
  config, model, variables = adobe_identity
  source = tmp_path / 'shoot'
  pf.write(source / 'a.png', pf.colourful(16, 16, 8))
  pf.write(source / 'day2' / 'b.png', pf.colourful(16, 16, 8, seed=1))
  out = source / 'graded'  # inside the input folder: never read as input

  flat = files.check_paths(str(source), str(out))
  summary = files.predict_paths(config, model, variables, str(source), str(out), recursive=True)

  assert [os.path.basename(p) for p in flat] == ['a.png']
  assert sorted(os.path.relpath(w['output'], out) for w in summary['written']) == [
    'a.png',
    os.path.join('day2', 'b.png'),
  ]
  again = files.predict_paths(
    config, model, variables, str(source), str(out), recursive=True, skip_existing=True
  )
  assert again['written'] == [] and len(again['skipped']) == 2


_KILLED_RUN = """
import os, signal, sys
from tests.helpers import identity_model
from unet_jax.inference import files

config, model, variables = identity_model('srgb')
calls = []
original = files.write_new_file  # looked up in files (run_batch), so patched there

def write_then_die(path, data, **kwargs):
  calls.append(path)
  if len(calls) == 3:  # killed while the third photo is being written
    name = f'.{os.path.basename(path)}.partial-{os.getpid()}'
    tmp = os.path.join(os.path.dirname(path), name)
    with open(tmp, 'wb') as f:
      f.write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
  return original(path, data, **kwargs)

files.write_new_file = write_then_die
files.predict_paths(config, model, variables, sys.argv[1], sys.argv[2])
"""


@pytest.mark.slow
def test_killed_run_finishes_with_one_output_per_photo(tmp_path):
  source, out = tmp_path / 'in', tmp_path / 'out'
  names = [f'p{i}.png' for i in range(5)]
  for i, name in enumerate(names):
    pf.write(source / name, pf.colourful(16, 16, 8, seed=i))
  script = textwrap.dedent(_KILLED_RUN)
  run = run_python('-c', script, str(source), str(out))
  assert run.returncode == -9, run.stderr[-2000:]
  left = sorted(os.listdir(out))
  assert [n for n in left if not n.startswith('.')] == [
    'p0.png',
    'p1.png',
    predict_summary.SUMMARY_FILE,
  ]
  assert any(n.startswith('.p2.png.partial-') for n in left)  # the half-written photo

  config, model, variables = identity_model('srgb')
  summary = files.predict_paths(config, model, variables, str(source), str(out), skip_existing=True)

  assert sorted(os.listdir(out)) == sorted([*names, predict_summary.SUMMARY_FILE])
  assert [os.path.basename(s['input']) for s in summary['skipped']] == ['p0.png', 'p1.png']
  for name in names:  # every output whole: decodes, same pixels as its input (identity)
    np.testing.assert_array_equal(load_photo(out / name).pixels, load_photo(source / name).pixels)
