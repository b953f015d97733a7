"""Keeps decoded training photos in memory after their first read, up to a budget.

A photographer's training set is a few dozen to a few hundred photos, read hundreds of times
each: decoding a 1 MP pair, converting its colours and metering the whole photo costs far more
than the crop the step trains on (BENCHMARKS.md, "Tone curves, local grid and the photo cache").
With `data.photo_cache_mb` the records are kept as they are first read until the budget is
spent; later ones are decoded on every read as without a cache. A record holds about 30 bytes
a pixel of its pair (two float32 photos and, for models that read them, float32 coordinates).
"""

import threading
from typing import Any

import grain
import numpy as np

_MB = 1 << 20


class CachedPhotos(grain.MapDataset):
  """`parent[i]`, kept after its first read while the kept records fit in `budget_mb`; kept
  records are read-only, so no later step can edit them.

  The parent must be deterministic (decoding and metering are), so the stream is the same with
  and without the cache, and a run resumes exactly either way. Each worker process (with
  `data.num_workers`) keeps a cache of its own, each within the budget.
  """

  def __init__(self, parent: grain.MapDataset, budget_mb: float):
    super().__init__(parent)
    self._records: dict[int, Any] = {}
    self._budget = budget_mb * _MB
    self._kept = 0
    self._lock = threading.Lock()  # grain's prefetch threads read concurrently

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f'CachedPhotos(budget_mb={self._budget / _MB:g})'

  @property
  def kept_bytes(self) -> int:
    return self._kept

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    key = index % len(self)
    record = self._records.get(key)
    if record is not None:
      return record
    record = self._parent[key]
    size = sum(v.nbytes for v in record.values() if isinstance(v, np.ndarray))
    with self._lock:
      if key not in self._records and self._kept + size <= self._budget:
        self._records[key] = _read_only(record)
        self._kept += size
    return record


def _read_only(record: dict[str, Any]) -> dict[str, Any]:
  for value in record.values():
    if isinstance(value, np.ndarray):
      value.setflags(write=False)
  return record
