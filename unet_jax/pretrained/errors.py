"""The error every weight-file reader raises, and the checksum they share."""

import hashlib
import os


class WeightsError(ValueError):
  """A weight file that is missing, unreadable, truncated or does not fit the model."""

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path = str(path)
    super().__init__(f'Weights file {self.path}: {problem}')


def sha256_file(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      digest.update(chunk)
  return digest.hexdigest()
