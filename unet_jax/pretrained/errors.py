"""The error every weight-file reader raises."""

import os


class WeightsError(ValueError):
  """A weight file that is missing, unreadable, truncated or does not fit the model."""

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path = str(path)
    super().__init__(f'Weights file {self.path}: {problem}')
