"""configs/fivek.py, its split files and docs/fivek.md's steps, on a tiny fake FiveK release.

The fake release has the 480p release's layout (input/JPG/480p, expertC/JPG/480p) with a few
40x60 photos on both sides of the train/test boundary, some named by id alone and some with
FiveK's original suffix. The preparation commands are taken from docs/fivek.md and run as
written, so the documented steps are what is tested.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest

from configs import fivek
from tests.helpers import ROOT, random_pixels, save, tiny_config
from unet_jax.data import create_eval_iterator, create_train_iterator, paired_folders
from unet_jax.validation import ConfigError, validate_config

DOC = ROOT / 'docs' / 'fivek.md'
# id -> file name in the fake release (some as in the 480p release, some as exported from FiveK).
PHOTOS = {
  'a0001': 'a0001-jmac_DSC1459',
  'a0002': 'a0002',
  'a4500': 'a4500-fake_4500',
  'a4501': 'a4501',
  'a5000': 'a5000-fake_5000',
}
TRAIN_IDS = ['a0001', 'a0002', 'a4500']
TEST_IDS = ['a4501', 'a5000']


def read_ids(path) -> list[str]:
  lines = (line.split('#', 1)[0].strip() for line in path.read_text().splitlines())
  return [line for line in lines if line]


def prepare_commands() -> str:
  """The bash block of docs/fivek.md between its fivek-prepare markers, minus FIVEK= / ROOT=."""
  text = DOC.read_text()
  block = text.split('<!-- fivek-prepare:start -->')[1].split('<!-- fivek-prepare:end -->')[0]
  lines = block.strip().removeprefix('```bash').removesuffix('```').strip().splitlines()
  settings = [line for line in lines if line.startswith(('FIVEK=', 'ROOT='))]
  assert len(settings) == 2, 'docs/fivek.md sets FIVEK and ROOT on lines of their own'
  return '\n'.join(line for line in lines if line not in settings)


@pytest.fixture(scope='module')
def fivek_root(tmp_path_factory):
  """A fake release laid out by the documented commands; returns the folder they made."""
  if shutil.which('bash') is None:
    pytest.skip('the documented preparation steps need bash')
  base = tmp_path_factory.mktemp('fivek')
  release = base / 'fivek_480p'
  for index, (photo, name) in enumerate(PHOTOS.items()):
    # Portrait and landscape, like the real photos; 480p scaled down to 40 px.
    shape = (60, 40) if photo == 'a4501' else (40, 60)
    pixels = random_pixels(index, *shape)
    save(release / 'input' / 'JPG' / '480p' / f'{name}.jpg', pixels, quality=95)
    save(release / 'expertC' / 'JPG' / '480p' / f'{name}.jpg', 255 - pixels, quality=95)
  root = base / 'fivek_unet_jax'
  env = dict(os.environ, FIVEK=str(release), ROOT=str(root))
  subprocess.run(
    ['bash', '-euo', 'pipefail', '-c', prepare_commands()], cwd=ROOT, env=env, check=True
  )
  return root


def fivek_config(root, **overrides):
  config = fivek.get_config()
  config.data.dir = str(root)
  config.update_from_flattened_dict(overrides)
  return config


def test_split_files_are_the_4500_500_protocol():
  train = read_ids(fivek.SPLITS_DIR / 'train.txt')
  test = read_ids(fivek.SPLITS_DIR / 'test.txt')
  assert train == [f'a{i:04d}' for i in range(1, 4501)]
  assert test == [f'a{i:04d}' for i in range(4501, 5001)]


@pytest.mark.slow
def test_documented_steps_lay_out_a_paired_folder(fivek_root):
  for side, release_side in (('input', 'input'), ('target', 'expertC')):
    files = sorted(os.listdir(fivek_root / side))
    assert files == [f'{photo}.jpg' for photo in PHOTOS]
    for photo, name in PHOTOS.items():
      link = fivek_root / side / f'{photo}.jpg'
      assert link.resolve().parent.parent.parent.name == release_side
      assert link.resolve().name == f'{name}.jpg'
  for split in ('train', 'test'):
    assert (fivek_root / 'splits' / f'{split}.txt').read_text() == (
      fivek.SPLITS_DIR / f'{split}.txt'
    ).read_text()


@pytest.mark.slow
def test_config_validates_and_assigns_splits_by_protocol(fivek_root, tmp_path):
  config = fivek_config(fivek_root)
  assert (config.data.name, config.data.train_split, config.data.eval_split) == (
    'paired_folders',
    'train',
    'test',
  )
  # The lists name all 5000 photos and the fake folder has 5: an incomplete copy is refused,
  # naming what is missing.
  with pytest.raises(ConfigError, match=r"4995 bad pair\(s\)(.|\n)*lists 'a4502' but no file"):
    validate_config(config)
  # Leaving the missing photos out, the rest validates and lands in the protocol's splits.
  config = fivek_config(fivek_root, **{'data.bad_pair_policy': 'skip'})
  validate_config(config)
  prepared = paired_folders.prepare(str(fivek_root), str(tmp_path / 'tfds'), 'skip')
  assert [row[0] for row in prepared.records['train']] == TRAIN_IDS
  assert [row[0] for row in prepared.records['test']] == TEST_IDS
  assert len(prepared.problems) == 5000 - len(PHOTOS)


@pytest.mark.slow
def test_train_batch_and_eval_images_from_the_folder(fivek_root, tmp_path):
  # fivek.py's data settings at the sizes of configs/tiny.py, decoded in this process.
  config = tiny_config()
  config.data = fivek_config(fivek_root).data
  config.data.update({'crop_size': 32, 'num_workers': 0, 'bad_pair_policy': 'skip'})
  batches = create_train_iterator(
    config, process_index=0, process_count=1, data_dir=str(tmp_path / 'tfds')
  )
  batch = next(batches)
  for key in ('input', 'target'):
    assert batch[key].shape == (config.batch_size, 32, 32, 3)
    assert batch[key].dtype == np.float32
    assert batch[key].min() >= 0.0 and batch[key].max() <= 1.0
  examples = list(create_eval_iterator(config, data_dir=str(tmp_path / 'tfds')))
  assert [str(e['name']) for e in examples] == TEST_IDS
  # Full size (config.data.eval_size is None, as the published numbers are at 480p).
  assert [e['input'].shape for e in examples] == [(60, 40, 3), (40, 60, 3)]
  assert [e['target'].shape for e in examples] == [(60, 40, 3), (40, 60, 3)]


def test_doc_quotes_the_published_figures_with_their_sources():
  text = DOC.read_text()
  for needle in (
    '25.29',
    'Learning Image-adaptive 3D Lookup Tables for High Performance Photo Enhancement',
    'TPAMI 2020',
    '25.49',
    'AdaInt: Learning Adaptive Intervals for 3D Lookup Tables on Real-time Image Enhancement',
    'CVPR 2022',
  ):
    assert needle in text, needle
