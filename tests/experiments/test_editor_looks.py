"""experiments/editor_looks.py: pairs, splits and manifest, with a stand-in editor (no gmic or
ImageMagick needed), and the errors a user meets when a tool or photo is missing."""

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_python

ROOT = pathlib.Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location(
  'editor_looks', ROOT / 'experiments' / 'editor_looks.py'
)
editor_looks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(editor_looks)

# A stand-in editor run as a process, as the real ones are: the photographic negative.
_INVERT = (
  'import sys; from PIL import Image, ImageOps; '
  'ImageOps.invert(Image.open(sys.argv[1]).convert("RGB")).save(sys.argv[2])'
)
_STAND_IN = editor_looks.Tool('stand-in', (sys.executable,), 'pip install pillow', ('--version',))
_LOOK = editor_looks.Look(
  'adaptive global', 'negative', _STAND_IN, ('{tool}', '-c', _INVERT, '{input}', '{output}')
)


def _photos(folder: pathlib.Path) -> list:
  rng = np.random.default_rng(0)
  photos = []
  for stem, split, size in (
    ('a', 'train', (120, 80)),
    ('b', 'train', (60, 90)),
    ('c', 'test', (100, 70)),
  ):
    path = folder / f'{stem}.jpg'
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    photos.append(editor_looks.Photo(stem, str(path), 'some-wallpapers', split))
  return photos


def test_build_writes_exact_pairs_splits_and_manifest(tmp_path):
  photos = _photos(tmp_path)
  out = tmp_path / 'looks'
  written = editor_looks.build(
    {'negative': _LOOK}, photos, str(out), long_side=64, sub_frame_count=2
  )
  manifest = json.loads(pathlib.Path(written['negative']).read_text())
  # Training photos give their whole frame and 2 sub-frames each; held-out photos only the whole.
  train = sorted(p.name for p in (out / 'negative' / 'train' / 'input').iterdir())
  assert train == ['a.png', 'a_sub1.png', 'a_sub2.png', 'b.png', 'b_sub1.png', 'b_sub2.png']
  assert sorted(p.name for p in (out / 'negative' / 'test' / 'target').iterdir()) == ['c.png']
  assert manifest['splits'] == {'train': 6, 'test': 1}
  assert {p['photo'] for p in manifest['pairs'] if p['split'] == 'test'} == {'c'}
  for pair in manifest['pairs']:
    folder = out / 'negative' / pair['split']
    image = np.asarray(Image.open(folder / 'input' / f'{pair["name"]}.png'))
    target = np.asarray(Image.open(folder / 'target' / f'{pair["name"]}.png'))
    # The editor ran on the input file itself: the pair is exact.
    np.testing.assert_array_equal(target, 255 - image)
    assert max(image.shape[:2]) <= 64 and list(image.shape[1::-1]) == pair['size']
    left, top, right, bottom = pair['box']
    source = next(p for p in photos if p.stem == pair['photo'])
    width, height = Image.open(source.path).size
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
  assert manifest['command'] == [
    pathlib.Path(sys.executable).name,
    '-c',
    _INVERT,
    '{input}',
    '{output}',
  ]
  assert manifest['tool_version'].startswith('Python')
  assert manifest['photos'][0]['sha256'] and manifest['photos'][0]['package'] == 'some-wallpapers'
  # Sub-frames are fixed by the photo's name: a rebuild gives the same pairs.
  assert editor_looks.sub_frames('a', 120, 80, 2) == [
    tuple(p['box']) for p in manifest['pairs'][1:3]
  ]


def test_missing_tool_names_the_package_before_any_work(tmp_path):
  missing = editor_looks.Tool('gmic', ('no-such-editor-31',), 'apt-get install gmic', ())
  look = editor_looks.Look('preset', 'x', missing, ('{tool}', '{input}', '{output}'))
  with pytest.raises(editor_looks.EditorLooksError, match='apt-get install gmic'):
    editor_looks.build({'x': look}, _photos(tmp_path), str(tmp_path / 'looks'))
  assert not (tmp_path / 'looks').exists()


def test_missing_photo_names_its_package(tmp_path):
  photos = [*_photos(tmp_path), editor_looks.Photo('d', str(tmp_path / 'no.jpg'), 'pkg-x', 'train')]
  with pytest.raises(editor_looks.EditorLooksError, match='pkg-x'):
    editor_looks.build({'negative': _LOOK}, photos, str(tmp_path / 'looks'))


def test_failing_editor_names_the_look_and_file(tmp_path):
  failing = editor_looks.Look(
    'preset', 'fails', _STAND_IN, ('{tool}', '-c', 'import sys; sys.exit(3)', '{input}', '{output}')
  )
  with pytest.raises(editor_looks.EditorLooksError, match=r'broken: the editor failed on .*a\.png'):
    editor_looks.build({'broken': failing}, _photos(tmp_path), str(tmp_path / 'looks'))


def test_looks_cover_the_three_families_twice_with_real_tools():
  families = [look.family for look in editor_looks.LOOKS.values()]
  for family in ('adaptive global', 'large-radius local', 'preset'):
    assert families.count(family) >= 2, family
  for name, look in editor_looks.LOOKS.items():
    joined = ' '.join(look.argv)
    assert '{input}' in joined and '{output}' in joined, name
    assert look.tool is not _STAND_IN
  photos = editor_looks.PHOTOS
  assert len({p.stem for p in photos}) == len(photos)
  assert 10 <= sum(p.split == 'train' for p in photos) <= 20
  assert not any('mate' in p.package or 'rawtherapee' in p.path.lower() for p in photos)


@pytest.mark.slow
def test_unknown_look_exits_2_with_an_error_line():
  done = run_python(str(ROOT / 'experiments' / 'editor_looks.py'), '--looks=nope')
  assert done.returncode == 2
  assert done.stderr.startswith("Error: --looks: unknown ['nope']")
