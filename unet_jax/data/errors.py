"""The one exception the data package raises for bad files and settings."""


class DataError(ValueError):
  """Data that cannot be used as it is; the message names the file or the option."""
