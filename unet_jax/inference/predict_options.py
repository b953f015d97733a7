"""`--config.predict.*` on eval, predict, export and export_lut: applied to that command.

Those modes grade with the model and config saved in `--workdir`; only how a photo is graded
and written (`config.predict`: tiles, LUT only, output format, bits, profile, JPEG quality) may
change per command. Any other `--config.*` key is refused (the model is the workdir's), and the
new values are checked against the model by `validate_config` as the training's were.
"""

from typing import Any

import ml_collections

SECTION = 'predict.'


def refused_keys(overrides: dict[str, Any]) -> list[str]:
  """The override keys (`'model.levels'`) that a command reading a workdir cannot apply."""
  return sorted(key for key in overrides if not key.startswith(SECTION))


def apply(
  config: ml_collections.ConfigDict, overrides: dict[str, Any] | None
) -> ml_collections.ConfigDict:
  """A copy of the workdir's `config` with `overrides` (`{'predict.tile_size': 256}`) applied.

  Raises ValueError naming the flag for a key outside `config.predict` or one it lacks.
  """
  if not overrides:
    return config
  refused = refused_keys(overrides)
  if refused:
    raise ValueError(
      f'--config.{refused[0]}: eval, predict and export use the model and config saved in '
      '--workdir; only --config.predict.* options can be given to them.'
    )
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    name = key[len(SECTION) :]
    if name not in config.predict:
      raise ValueError(f'--config.{key}: config.predict has no option {name!r}.')
    config.predict[name] = value
  return config
