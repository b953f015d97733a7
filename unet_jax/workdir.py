"""What a workdir holds and where: the resolved config (written by training, read back by eval
and predict) and the eval output folders."""

import json
import os
from typing import Any

import jax
import ml_collections
from flax import traverse_util

from unet_jax.config import get_base_config

CONFIG_FILE = 'config.json'

# Options that may change when a run resumes; any other change would make the resumed run a
# different experiment from the one whose checkpoints are in the workdir.
RESUMABLE_CHANGES = (
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'num_image_summaries',
  'predict.',
  'data.dir',
  'data.tfds_data_dir',
  'distributed.',
)


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
  """`{'a': {'b': 1}}` -> `{'a.b': 1}`, tuples as lists (as JSON stores them)."""
  flat = traverse_util.flatten_dict(tree, sep='.')
  return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def _as_plain(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json`, or checks a resumed run against the one already there."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    before = _flatten(_as_plain(load_config(workdir)))
    now = _flatten(_as_plain(config))
    changed = sorted(
      key
      for key in set(before) | set(now)
      if before.get(key) != now.get(key) and not key.startswith(RESUMABLE_CHANGES)
    )
    if changed:
      details = ', '.join(f'{k}: {before.get(k)!r} -> {now.get(k)!r}' for k in changed)
      raise ValueError(
        f'{path} was written by an earlier run with a different config ({details}). '
        f'Resume with the same config, or start a new --workdir.'
      )
    return
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} does not exist: --workdir must be a folder written by --mode=train.'
    )
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  _add_missing(config, get_base_config())
  return config


def _add_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
  """Options added after a workdir was written take their defaults (what that run did)."""
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
      config[key], ml_collections.ConfigDict
    ):
      _add_missing(config[key], value)


def eval_dir(workdir: str, step: int, *, fresh: bool = False) -> str:
  """`workdir/eval/step_<step>`: where an eval writes its panels and metrics.json.

  `fresh=True` gives `step_<step>-1`, `-2`, ... when that folder exists, so an eval run by hand
  never overwrites an earlier one.
  """
  path = os.path.join(workdir, 'eval', f'step_{step}')
  candidate, suffix = path, 0
  while fresh and os.path.exists(candidate):
    suffix += 1
    candidate = f'{path}-{suffix}'
  return candidate
