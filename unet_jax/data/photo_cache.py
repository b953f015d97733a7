"""Keeps each decoded training photo in memory after its first read.

A photographer's training set is a few dozen to a few hundred photos, read hundreds of times
each: decoding a 1 MP pair, converting its colours and metering the whole photo costs far more
than the crop the step trains on (experiments/data_speed.py). With `data.cache_photos` every
record is decoded once; memory grows by about 30 bytes a pixel of each pair (the two float32
photos and the float32 coordinates of a model that reads them).
"""

from typing import Any

import grain
import numpy as np


class CachedPhotos(grain.MapDataset):
  """`parent[i]` computed once and kept; records are read-only so no later step edits them.

  The parent must be deterministic (decoding and metering are), so the stream is the same with
  and without the cache, and a run resumes exactly either way. Each worker process (with
  `data.num_workers`) keeps a cache of its own.
  """

  def __init__(self, parent: grain.MapDataset):
    super().__init__(parent)
    self._records: dict[int, Any] = {}

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return 'CachedPhotos'

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    key = index % len(self)
    record = self._records.get(key)
    if record is None:
      record = _read_only(self._parent[key])
      self._records[key] = record
    return record


def _read_only(record: dict[str, Any]) -> dict[str, Any]:
  for value in record.values():
    if isinstance(value, np.ndarray):
      value.setflags(write=False)
  return record
