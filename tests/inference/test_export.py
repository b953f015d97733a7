"""Export of a trained run (StableHLO, ONNX, safetensors, .cube) and the `unet_jax.load` API.

One workdir per module: the tiny config's state with random, non-identity weights saved as the
run's best checkpoint (training it would cost minutes), exported once.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import colour
import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime
import orbax.checkpoint as ocp
import pytest
from PIL import Image

import unet_jax
from tests import helpers as data_helpers
from tests import photo_files as pf
from unet_jax import data
from unet_jax.data.images import to_uint8
from unet_jax.inference import export, export_files, files, lut, lut_export
from unet_jax.models import UNet, create_model
from unet_jax.training import run_record
from unet_jax.training.train_state import create_optimizer, create_train_state

STEP = 4
TILE = 32  # configs/tiny.py: predict.tile_size
# model.onnx needs the `export` extra (jax2onnx); .ci/run runs this file again with it installed.
HAS_JAX2ONNX = importlib.util.find_spec('jax2onnx') is not None


def _photo(height: int, width: int, seed: int) -> np.ndarray:
  """Smooth colour fields in [0, 1] with a little noise: flat areas and edges, like a photo."""
  rng = np.random.default_rng(seed)
  coarse = (rng.random((height // 8 + 2, width // 8 + 2, 3)) * 255).astype(np.uint8)
  smooth = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
  noisy = np.asarray(smooth, np.float32) / 255 + 0.03 * rng.standard_normal((height, width, 3))
  return np.clip(noisy, 0, 1).astype(np.float32)


def _randomised(state, seed: int = 0):
  """The state with random weights and BatchNorm statistics: a net that really edits colours
  (the zero-initialised residual head would make it the identity)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    names = [getattr(p, 'key', '') for p in path]
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    if 'head' in names:
      return 0.1 * noise
    if names[-1] == 'kernel':
      return noise / np.sqrt(np.prod(leaf.shape[:-1]))
    if names[-1] in ('bias', 'mean'):
      return 0.1 * noise
    return 1 + 0.3 * np.abs(noise)

  params = jax.tree_util.tree_map_with_path(draw, state.params)
  stats = jax.tree_util.tree_map_with_path(draw, state.batch_stats)
  return state.replace(
    step=jnp.array(STEP, jnp.int32), params=params, ema_params=params, batch_stats=stats
  )


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A workdir as training leaves it (config, best checkpoint, metrics.jsonl), and photos."""
  root = tmp_path_factory.mktemp('export')
  workdir = str(root / 'run')
  config = data_helpers.tiny_config()
  run_record.Run(config, workdir, resuming=False).commit(0)
  model = create_model(config.model, task=config.task)
  state = create_train_state(config, model, create_optimizer(config), jax.random.key(0))
  state = _randomised(state)
  manager = ocp.CheckpointManager(os.path.join(workdir, 'best'), item_names=('state',))
  manager.save(STEP, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  manager.close()
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': STEP, 'eval/psnr': 31.25, 'eval/ssim': 0.9}) + '\n')
    f.write(json.dumps({'step': STEP, 'eval_identity/psnr': 27.5, 'eval_identity/ssim': 0.8}))
  photos = root / 'photos'
  photos.mkdir()
  for seed, size in enumerate([(TILE, TILE), (45, 70), (64, 48)]):
    Image.fromarray(to_uint8(_photo(*size, seed))).save(photos / f'photo_{seed}.png')
  return {'root': root, 'workdir': workdir, 'photos': str(photos), 'model': model}


@pytest.fixture(scope='module')
def exported(run):
  output = str(run['root'] / 'exported')
  summary = export.export_workdir(run['workdir'], output, input_path=run['photos'])
  return {'dir': pathlib.Path(output), 'summary': summary}


@pytest.fixture(scope='module')
def loaded(run):
  return unet_jax.load(run['workdir'])


@pytest.mark.slow
def test_export_writes_the_folder_and_never_overwrites(run, exported):
  folder = exported['dir']
  written = [
    'MODEL.md',
    'config.json',
    'grade_tile.jax',
    'look.cube',
    'model.safetensors',
    'model.sha256',
  ]
  if HAS_JAX2ONNX:
    written.append('model.onnx')
  else:  # the rest is written, and the card says how to get the ONNX file
    assert "pip install '.[export]'" in ' '.join(exported['summary']['notes'])
  assert sorted(p.name for p in folder.iterdir()) == sorted(written)
  card = (folder / 'MODEL.md').read_text()
  assert f'step {STEP} of 4' in card and 'EMA' in card
  assert '| psnr | 31.2500 | 27.5000 |' in card  # held-out model vs identity, from metrics.jsonl
  assert json.loads((folder / 'config.json').read_text())['model']['levels'] == 2

  before = {p.name: p.read_bytes() for p in folder.iterdir()}
  with pytest.raises(ValueError, match='is not empty'):
    export.export_workdir(run['workdir'], str(folder))
  assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
  assert not [p for p in folder.parent.iterdir() if p.name.startswith('.export-')]


@pytest.mark.slow
def test_safetensors_hold_the_ema_weights_and_load_back(run, exported, loaded):
  from_export = unet_jax.load(exported['dir'])
  flat = export_files.flatten_variables(loaded.variables)
  assert 'params/head/kernel' in flat and any(k.startswith('batch_stats/encoder_0/') for k in flat)
  expected = jax.device_get(loaded.variables)
  jax.tree.map(np.testing.assert_array_equal, from_export.variables, expected)
  image = _photo(45, 70, seed=7)
  np.testing.assert_array_equal(from_export.grade(image), loaded.grade(image))


@pytest.mark.slow
def test_the_weights_sha256_is_recorded_and_checked_on_load(exported, tmp_path):
  # Issue 32: a same-size tampered model.safetensors graded garbage without a word.
  import hashlib

  folder = exported['dir']
  digest = hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()
  assert (folder / 'model.sha256').read_text() == f'{digest}  model.safetensors\n'
  assert f'SHA-256 `{digest}`' in (folder / 'MODEL.md').read_text()
  copy = tmp_path / 'copy'
  shutil.copytree(folder, copy)
  data = bytearray((copy / 'model.safetensors').read_bytes())
  data[-4] ^= 0x40  # one bit of one weight, same size
  (copy / 'model.safetensors').write_bytes(bytes(data))
  with pytest.raises(ValueError, match=rf'model.safetensors: its SHA-256 is .*not the {digest}'):
    unet_jax.load(copy)
  (copy / 'model.safetensors').unlink()
  with pytest.raises(ValueError, match='incomplete export: missing model.safetensors'):
    unet_jax.load(copy)


@pytest.mark.slow
def test_stablehlo_runs_with_jax_alone_and_matches_grade(exported, loaded, tmp_path):
  """The artefact deserialises in a Python that never imports unet_jax (nor flax)."""
  tile = _photo(TILE, TILE, seed=3)
  whole = np.stack([_photo(64, 48, seed=4), _photo(64, 48, seed=5)])
  np.save(tmp_path / 'tile.npy', tile[None])
  np.save(tmp_path / 'whole.npy', whole)
  script = textwrap.dedent(
    f"""
    import sys
    import jax, numpy as np
    grade = jax.export.deserialize(open({str(exported['dir'] / 'grade_tile.jax')!r}, 'rb').read())
    np.save('tile_out.npy', np.asarray(grade.call(np.load('tile.npy'))))
    np.save('whole_out.npy', np.asarray(grade.call(np.load('whole.npy'))))
    try:
      grade.call(np.zeros((1, 30, 32, 3), np.float32))
    except Exception as error:
      print('refused 30 rows:', type(error).__name__)
    print(sorted(grade.platforms))
    print([m for m in sys.modules if m.split('.')[0] in ('unet_jax', 'flax')])
    """
  )
  result = subprocess.run(
    [sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True, check=True
  )
  lines = result.stdout.strip().splitlines()
  assert lines[-3].startswith('refused 30 rows:')
  assert lines[-2] == "['cpu', 'cuda', 'tpu']"
  assert lines[-1] == '[]'

  tile_out = np.load(tmp_path / 'tile_out.npy')[0]
  np.testing.assert_allclose(np.clip(tile_out, 0, 1), loaded.grade(tile), atol=1e-4)
  assert np.abs(loaded.grade(tile) - tile).max() > 0.05  # the net really edits the photo
  # Symbolic H and W: a whole 64x48 batch in one call is the net applied to it.
  reference = loaded.module.apply(loaded.variables, whole, train=False)
  np.testing.assert_allclose(np.load(tmp_path / 'whole_out.npy'), reference, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAX2ONNX, reason="model.onnx needs pip install '.[export]'")
def test_onnx_runs_in_onnxruntime_and_matches_grade(exported, loaded):
  session = onnxruntime.InferenceSession(str(exported['dir'] / 'model.onnx'))
  tiles = np.stack([_photo(TILE, TILE, seed=s) for s in (3, 8)])
  (out,) = session.run(None, {'tiles': tiles})
  for tile, graded in zip(tiles, out, strict=True):
    np.testing.assert_allclose(np.clip(graded, 0, 1), loaded.grade(tile), atol=1e-4)


def test_onnx_names_the_option_it_cannot_express():
  model = UNet(levels=2, base_channels=8, multiscale_input=True)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, TILE, TILE, 3)))
  assert any('multiscale_input' in b for b in export.onnx_blockers(model))
  with pytest.raises(ValueError, match='config.model.multiscale_input=True'):
    export.export_onnx(model, variables, TILE)


@pytest.mark.parametrize(
  'options',
  [dict(exposure=True), dict(local_grid=8, thumbnail_size=32), dict(color_head='adaptive_lut')],
)
def test_onnx_refuses_a_model_that_reads_a_thumbnail_naming_why(options):
  # The thumbnail's resize failed deep inside jax2onnx (not a ValueError), which stopped the
  # whole export of a configs/photo.py run; now the folder is written without model.onnx.
  model = UNet(levels=2, base_channels=8, thumbnail='photo', **options)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, TILE, TILE, 3)))
  with pytest.raises(ValueError, match='reads a thumbnail'):
    export.export_onnx(model, variables, TILE)
  assert not export.onnx_blockers(UNet(levels=2, base_channels=8, curves=8, thumbnail='photo'))


@pytest.mark.slow
def test_stablehlo_of_a_model_that_reads_the_frame_grades_a_whole_photo_as_the_model_does():
  # The frame gain and the local grid read each pixel's place in the photo: with the exported
  # program's symbolic sizes, the coordinates are computed in the program (they were made by
  # numpy from the sizes, and export stopped with a TypeError on configs/photo.py's runs).
  model = UNet(
    levels=2,
    base_channels=8,
    thumbnail='photo',
    thumbnail_size=32,
    frame_gain=4,
    local_grid=8,
    local_grid_statistics=True,
  )
  photo = jax.random.uniform(jax.random.key(1), (1, 32, 48, 3))
  variables = model.init(jax.random.key(0), photo)

  # Small random values in place of the zero starts, so that the grid and the gain act.
  def small_random(tree):
    return jax.tree.map(lambda leaf: 0.05 * jax.random.normal(jax.random.key(2), leaf.shape), tree)

  params = variables['params']
  params['frame_gain'] = small_random(params['frame_gain'])
  params['local_affine']['coefficients'] = small_random(params['local_affine']['coefficients'])
  graded = export.export_stablehlo(model, variables).call(photo)
  expected = model.apply(variables, photo, train=False)
  np.testing.assert_allclose(graded, expected, atol=1e-5)
  assert float(jnp.abs(expected - photo).max()) > 1e-2


@pytest.mark.slow
def test_cube_is_read_by_colour_science_and_keeps_the_reported_fidelity(run, exported, loaded):
  cube = colour.read_LUT(str(exported['dir'] / 'look.cube'))
  assert isinstance(cube, colour.LUT3D) and cube.size == lut.DEFAULT_SIZE
  colours = np.random.default_rng(0).random((5000, 3))
  # colour-science's trilinear look-up and ours agree on the table as the file lays it out.
  np.testing.assert_allclose(cube.apply(colours), lut.apply_lut(cube.table, colours), atol=1e-5)

  inputs, graded = [], []
  for path in files.list_inputs(run['photos']):
    image = data.load_image(path)
    inputs.append(image.reshape(-1, 3))
    graded.append(loaded.grade(image).reshape(-1, 3))
  inputs, graded = np.concatenate(inputs), np.concatenate(graded)
  fidelity = exported['summary']['lut']
  assert lut.psnr(cube.apply(inputs), graded) == pytest.approx(
    fidelity['psnr_lut_vs_model'], abs=0.05
  )
  # The LUT is much closer to the model than doing nothing: it holds the global look.
  assert fidelity['psnr_lut_vs_model'] > fidelity['psnr_input_vs_model'] + 3


def test_lut_fit_recovers_a_global_colour_mapping():
  colours = np.random.default_rng(1).random((20_000, 3)) ** 2  # dense in the darks only

  def look(rgb):
    mixed = rgb**0.8 @ np.array([[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.9]]).T
    return np.clip(mixed, 0, 1)

  table = lut.fit_lut(colours, look(colours), size=17)
  assert lut.psnr(lut.apply_lut(table, colours), look(colours)) > 40
  # Empty cells (no bright colours were shown) are filled smoothly, not left at zero.
  assert np.abs(table[-1, -1, -1] - look(np.ones((1, 3)))[0]).max() < 0.1


def test_lut_fit_in_blocks_of_pixels_is_the_fit_in_one(monkeypatch):
  # Memory stays bounded for a hundred photos' pixels: the normal equations are summed over
  # blocks, which changes the float sums' order and nothing else.
  colours = np.random.default_rng(2).random((10_000, 3))
  graded = np.clip(colours**1.3 + 0.02 * np.sin(9 * colours[:, ::-1]), 0, 1)
  whole = lut.fit_lut(colours, graded, size=9)
  monkeypatch.setattr(lut, '_FIT_BLOCK', 999)
  np.testing.assert_allclose(lut.fit_lut(colours, graded, size=9), whole, atol=1e-6)


@pytest.mark.slow
def test_export_lut_refuses_existing_files_and_other_extensions(run, tmp_path):
  taken = tmp_path / 'look.cube'
  taken.write_text('mine')
  with pytest.raises(ValueError, match='never replaces'):
    lut_export.export_lut(run['workdir'], str(taken))
  with pytest.raises(ValueError, match='.cube file'):
    lut_export.export_lut(run['workdir'], str(tmp_path / 'look.txt'))
  assert taken.read_text() == 'mine'


def test_lut_photos_are_read_into_the_runs_working_space(tmp_path):
  # A Display P3 run fits its LUT on P3 colours: an untagged (sRGB) photo and a P3-tagged one
  # given as --input are converted into P3, as predict reads them, not taken as sRGB codes.
  values = pf.colourful(24, 32, 8, seed=3)
  pf.write(tmp_path / 'in' / 'plain.png', values)
  pf.write(tmp_path / 'in' / 'phone.jpg', values, profile=pf.profile('display_p3'), Q=100)
  config = data_helpers.tiny_config(**{'data.working_space': 'display_p3'})
  photos = dict(lut_export.lut_photos(config, str(tmp_path / 'run'), str(tmp_path / 'in')))
  plain, phone = (photos[str(tmp_path / 'in' / name)] for name in ('plain.png', 'phone.jpg'))
  expected = pf.reference(values / 255, 'srgb', 'display_p3')
  assert pf.delta_e(plain, expected, 'display_p3').max() < 0.1
  assert pf.delta_e(phone, pf.stored(tmp_path / 'in' / 'phone.jpg'), 'display_p3').max() < 0.1
  # Saturated sRGB colours have other P3 codes: reading them as P3 would be far off.
  assert np.abs(plain - values / 255).max() > 0.05


@pytest.mark.slow
def test_api_grade_matches_predict(run, loaded, tmp_path):
  summary = loaded.grade_folder(run['photos'], str(tmp_path / 'graded'))
  assert len(summary['written']) == 3 and not summary['failed']
  for item in summary['written']:
    written = np.asarray(Image.open(item['output']))
    assert np.array_equal(to_uint8(loaded.grade(item['input'])), written)
  image = data.load_image(summary['written'][1]['input'])
  np.testing.assert_array_equal(loaded.grade(to_uint8(image)), loaded.grade(image))
  with pytest.raises(ValueError, match='dtype int64'):
    loaded.grade(np.zeros((8, 8, 3), np.int64))
