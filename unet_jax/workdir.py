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
  # How the same function is computed (same variables and results); absent in older workdirs.
  'model.batch_norm',
  'model.remat',
  'data.dir',
  'data.tfds_data_dir',
  'distributed.',
)


def _flatten(tree: dict[str, Any]) -> dict[str, Any]:
  """`{'a': {'b': 1}}` -> `{'a.b': 1}`, tuples as lists (as JSON stores them)."""
  flat = traverse_util.flatten_dict(tree, sep='.')
  return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}


def _merged(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
  merged = dict(defaults)
  for key, value in saved.items():
    if isinstance(value, dict) and isinstance(defaults.get(key), dict):
      value = _merged(defaults[key], value)
    merged[key] = value
  return merged


def _with_later_options(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config with the options added to the code since it was written, at their
  defaults (e.g. `model.color_head='none'`), which is how that run was built."""
  return _merged(_as_plain(get_base_config()), saved)


def _as_plain(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json`, or checks a resumed run against the one already there."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      before = _flatten(_with_later_options(json.load(f)))
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
    return ml_collections.ConfigDict(_with_later_options(json.load(f)))


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
