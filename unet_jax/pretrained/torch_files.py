"""PyTorch `torch.save` files (`.pth`) read without PyTorch and without running pickled code.

Both the zip format (`<root>/data.pkl` + one raw file per storage) and the legacy pre-1.6 stream
format: `data.pkl` is parsed with a restricted unpickler that turns storages and
`_rebuild_tensor_v2` into numpy views.
"""

import collections
import dataclasses
import io
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import ml_dtypes
import numpy as np

from unet_jax.pretrained.errors import WeightsError
from unet_jax.pretrained.safe_pickle import NumpyUnpickler

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_STORAGE_DTYPES = {
  'FloatStorage': np.dtype(np.float32),
  'DoubleStorage': np.dtype(np.float64),
  'HalfStorage': np.dtype(np.float16),
  'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
  'LongStorage': np.dtype(np.int64),
  'IntStorage': np.dtype(np.int32),
  'ShortStorage': np.dtype(np.int16),
  'CharStorage': np.dtype(np.int8),
  'ByteStorage': np.dtype(np.uint8),
  'BoolStorage': np.dtype(np.bool_),
}


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  """A tensor as `_rebuild_tensor_v2` describes it; materialised only if the caller keeps it."""

  storage: _StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


class _StorageType:
  def __init__(self, name: str):
    self.dtype = _TORCH_STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
  del unused  # requires_grad, backward hooks, metadata
  if not isinstance(storage, _StorageRef):
    raise pickle.UnpicklingError('tensor without a storage')
  return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused) -> Any:
  del requires_grad, backward_hooks, unused
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Parses `torch.save` pickles into `_TensorRef`s; refuses everything else that is callable."""

  _ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  }

  def __init__(self, file: Any, legacy: bool):
    super().__init__(file)
    self.legacy = legacy
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module: str, name: str) -> Any:
    if module == 'torch' and name in _TORCH_STORAGE_DTYPES:
      return _StorageType(name)
    try:
      return self._ALLOWED[module, name]
    except KeyError:
      raise pickle.UnpicklingError(f'global {module}.{name} is not allowed') from None

  def persistent_load(self, pid: Any) -> Any:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id {str(pid)[:80]}')
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError('storage of an unknown type')
    key = str(key)
    storage = _StorageRef(key, storage_type.dtype, int(numel))
    self.storages.setdefault(key, storage)
    if self.legacy and len(pid) > 5 and pid[5] is not None:
      # Pre-1.0 storage views: (view key, element offset, element count) into the root storage.
      _, view_offset, view_size = pid[5]
      return dataclasses.replace(storage, key=f'{key}@{int(view_offset)}', numel=int(view_size))
    return storage


def _materialise(tensor: _TensorRef, data: np.ndarray, path: str, name: str) -> np.ndarray:
  """The tensor's elements copied out of `data` (its whole storage), after a bounds check."""
  shape, stride, offset = tensor.shape, tensor.stride, tensor.offset
  if len(shape) != len(stride) or min(shape + stride + (offset,), default=0) < 0:
    raise WeightsError(path, f'tensor {name!r} has an invalid layout.')
  if 0 in shape:
    return np.zeros(shape, data.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
  if last >= data.size:
    raise WeightsError(
      path, f'tensor {name!r} reaches element {last} of a storage holding {data.size} (truncated?).'
    )
  view = np.lib.stride_tricks.as_strided(
    data[offset:], shape, tuple(s * data.itemsize for s in stride), writeable=False
  )
  return np.array(view)


def _zip_state_dict(path: str, keep: Callable[[str], bool]) -> dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n == 'data.pkl' or n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise WeightsError(path, 'is a zip file but not a torch.save archive (no single data.pkl).')
    root = pickles[0][: -len('data.pkl')]
    byteorder = 'little'
    if f'{root}byteorder' in archive.namelist():
      byteorder = archive.read(f'{root}byteorder').decode().strip()
    unpickler = _TorchUnpickler(io.BytesIO(archive.read(pickles[0])), legacy=False)
    state = _load_state(unpickler, path)

    def storage_data(storage: _StorageRef) -> np.ndarray:
      raw = archive.read(f'{root}data/{storage.key}')
      dtype = storage.dtype.newbyteorder('<' if byteorder == 'little' else '>')
      if len(raw) < storage.numel * dtype.itemsize:
        raise WeightsError(path, f'storage {storage.key} is truncated.')
      return np.frombuffer(raw, dtype, storage.numel)

    return _collect(state, keep, storage_data, path)


def _legacy_state_dict(path: str, keep: Callable[[str], bool]) -> dict[str, np.ndarray]:
  with open(path, 'rb') as f:
    magic = NumpyUnpickler(f).load()
    if magic != _TORCH_LEGACY_MAGIC:
      raise WeightsError(path, 'is not a torch.save file.')
    NumpyUnpickler(f).load()  # protocol version
    sys_info = NumpyUnpickler(f).load()
    order = '<' if sys_info.get('little_endian', True) else '>'
    unpickler = _TorchUnpickler(f, legacy=True)
    state = _load_state(unpickler, path)
    keys = NumpyUnpickler(f).load()
    # Each storage follows as an int64 element count, then its raw bytes, in the order of `keys`.
    positions = {}
    for key in keys:
      storage = unpickler.storages.get(str(key))
      if storage is None:
        raise WeightsError(path, f'lists storage {key!r} that no tensor uses.')
      header = f.read(8)
      if len(header) < 8:
        raise WeightsError(path, 'is truncated (storage data missing).')
      numel = int(np.frombuffer(header, f'{order}i8')[0])
      positions[storage.key] = (f.tell(), numel)
      f.seek(numel * storage.dtype.itemsize, os.SEEK_CUR)
    size = os.fstat(f.fileno()).st_size

    def storage_data(storage: _StorageRef) -> np.ndarray:
      key, _, view_offset = storage.key.partition('@')
      if key not in positions:
        raise WeightsError(path, f'storage {key} has no data.')
      start, numel = positions[key]
      dtype = storage.dtype.newbyteorder(order)
      if start + numel * dtype.itemsize > size:
        raise WeightsError(path, f'is truncated (storage {key}).')
      f.seek(start)
      data = np.frombuffer(f.read(numel * dtype.itemsize), dtype)
      if view_offset:
        data = data[int(view_offset) : int(view_offset) + storage.numel]
      return data

    return _collect(state, keep, storage_data, path)


def _load_state(unpickler: _TorchUnpickler, path: str) -> Mapping[str, Any]:
  try:
    state = unpickler.load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
    raise WeightsError(
      path, f'data.pkl cannot be read safely (truncated, or holds code): {error}'
    ) from None
  if not isinstance(state, Mapping):
    raise WeightsError(path, 'holds a pickled object, not a state dict; save model.state_dict().')
  if 'state_dict' in state and isinstance(state['state_dict'], Mapping):
    state = state['state_dict']
  return state


def _collect(state, keep, storage_data, path) -> dict[str, np.ndarray]:
  arrays, cache = {}, {}
  for name, tensor in state.items():
    if not isinstance(tensor, _TensorRef) or not keep(str(name)):
      continue
    if tensor.storage.key not in cache:
      cache[tensor.storage.key] = storage_data(tensor.storage)
    arrays[str(name)] = _materialise(tensor, cache[tensor.storage.key], path, str(name))
  return arrays


def read_torch_state_dict(
  path: str | os.PathLike, keep: Callable[[str], bool] = lambda name: True
) -> dict[str, np.ndarray]:
  """The tensors of a `torch.save(model.state_dict())` file as numpy arrays, torch layout.

  `keep(name)` selects tensors; storages of the others are never read. Works without PyTorch and
  executes nothing from the file: only state-dict globals are admitted by the unpickler.
  """
  path = str(path)
  if not os.path.isfile(path):
    raise WeightsError(path, 'does not exist.')
  try:
    if file_format(path) == 'torch_zip':
      return _zip_state_dict(path, keep)
    return _legacy_state_dict(path, keep)
  except WeightsError:
    raise
  except (
    zipfile.BadZipFile,
    KeyError,
    EOFError,
    pickle.UnpicklingError,
    OSError,
    ValueError,
    TypeError,
    IndexError,
    AttributeError,
  ) as error:
    raise WeightsError(path, f'is not a readable torch.save file (truncated?): {error}') from None


def file_format(path: str | os.PathLike) -> str | None:
  """'torch_zip', 'torch_legacy', 'pickle' or None, from the first bytes (so even if truncated)."""
  with open(path, 'rb') as f:
    head = f.read(16)
  if head.startswith(b'PK\x03\x04'):
    return 'torch_zip'
  # Legacy torch files open with the pickled magic number: PROTO, then a LONG1 of 10 bytes.
  if head[2:4] == b'\x8a\x0a' and head[4:14] == _TORCH_LEGACY_MAGIC.to_bytes(10, 'little'):
    return 'torch_legacy'
  if head.startswith(b'\x80'):
    return 'pickle'
  return None
