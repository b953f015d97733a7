"""What a workdir holds and records about its run, and which reruns it accepts.

- `config.json`: the config of the run whose checkpoints are in the workdir (eval and predict
  read it back).
- `data_fingerprint.json`: the training files' names, sizes and hashes (data/fingerprint.py).
- `config_history.jsonl`: one line per start, resume with changes, or fine-tune origin.

A workdir is committed to a config only once this run saves its first checkpoint (`Run.commit`
runs right before every save and writes once): a run that fails before that (bad data, a
missing weights file, a diverged first step) leaves nothing that blocks the corrected rerun.
Eval output goes to `eval/step_N/` (`eval_dir`). A `config.json` written before a key was
renamed (`RENAMED`) or became derived from others (`DERIVED`) is read through `upgrade`; the
keys a resume may change are marked in config.py (`RESUMABLE`, `EXTENDABLE`).
"""

import json
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
from flax import traverse_util

from unet_jax import options
from unet_jax.config import EXTENDABLE, RESUMABLE, get_base_config
from unet_jax.data import fingerprint as fingerprint_lib

CONFIG_FILE = 'config.json'
FINGERPRINT_FILE = 'data_fingerprint.json'
HISTORY_FILE = 'config_history.jsonl'

# Configs saved before a key was renamed: each row maps old flat `{key: value}` to new. A key the
# saved config lacks had its old default (`_OLD_DEFAULTS`). `upgrade` applies this table.
_OLD_DEFAULTS = {'model.global_context': False, 'model.thumbnail_context': False}
RENAMED = (
  (
    {'model.global_context': False, 'model.thumbnail_context': False},
    {'model.global_context': 'none', 'model.thumbnail': 'crop'},
  ),
  (
    {'model.global_context': True, 'model.thumbnail_context': False},
    {'model.global_context': 'pooled', 'model.thumbnail': 'crop'},
  ),
  (
    {'model.global_context': False, 'model.thumbnail_context': True},
    {'model.global_context': 'none', 'model.thumbnail': 'photo'},
  ),
  (
    {'model.global_context': True, 'model.thumbnail_context': True},
    {'model.global_context': 'thumbnail', 'model.thumbnail': 'photo'},
  ),
)

# Keys that configs saved before they became derived (options.DERIVED) hold, each with the value
# the rest of that saved config now gives it; `upgrade` drops them after checking they agree.
DERIVED = {'model.head': lambda flat: options.output_head(flat.get('task', 'enhance'))}


class WorkdirError(ValueError):
  """A workdir that cannot be used as asked; the message names the file, option or flag."""


class MissingRunError(WorkdirError, FileNotFoundError):
  """A workdir (or --init_from folder) without the config or checkpoint of a trained run."""


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


def upgrade(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config (as read from `config.json`) with renamed keys under their new names and
  values (`RENAMED`) and without the keys now derived (`DERIVED`); a config already in today's
  keys comes back unchanged."""
  flat = _flatten(saved)
  derived = [key for key in DERIVED if key in flat]
  renamed = 'model.thumbnail_context' in flat or type(flat.get('model.global_context')) is bool
  if not derived and not renamed:
    return saved
  for key in derived:
    value, expected = flat.pop(key), DERIVED[key](flat)
    if value != expected:
      raise WorkdirError(
        f'A saved config has config.{key}={value!r}, but config.{key} {options.derivation(key)}, '
        f'which gives {expected!r}: the file was edited by hand; correct it.'
      )
  if renamed:
    _rename(flat)
  return traverse_util.unflatten_dict(flat, sep='.')


def _rename(flat: dict[str, Any]) -> None:
  """Puts the old keys of `RENAMED` in `flat` under their new names and values."""
  old = {key: flat.pop(key, default) for key, default in _OLD_DEFAULTS.items()}
  for before, after in RENAMED:
    if all(type(old[k]) is bool and old[k] == v for k, v in before.items()):
      flat.update(after)
      return
  raise WorkdirError(f'A saved config has values no rename covers: {old}.')


def _with_later_options(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config with the options added to the code since it was written, at their
  defaults (e.g. `model.color_head='none'`), which is how that run was built."""
  return _merged(_as_plain(get_base_config()), saved)


def _as_plain(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _same(a: Any, b: Any) -> bool:
  """Equality where NaN equals NaN (json writes NaN, so a saved NaN must match itself)."""
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
  return a == b


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """Flat keys whose value differs, `{key: (before, now)}`.

  A key the saved config lacks counts as unchanged when the new value is the base default:
  the workdir was written before that option existed and ran with its default behaviour.
  """
  before, now = _flatten(before), _flatten(now)
  defaults = _flatten(_as_plain(get_base_config()))
  changes = {}
  for key in sorted(set(before) | set(now)):
    old = before.get(key, defaults.get(key))
    if not _same(old, now.get(key)):
      changes[key] = (before.get(key), now.get(key))
  return changes


def _refused(key: str, old: Any, new: Any) -> bool:
  parts = key.split('.')
  if any('.'.join(parts[:n]) in RESUMABLE for n in range(1, len(parts) + 1)):
    return False
  if key in EXTENDABLE:
    return not (isinstance(old, int) and isinstance(new, int) and new > old)
  return True


def _read_json(path: str) -> Any:
  """The file's JSON; WorkdirError naming it when it is damaged (cut short, not JSON)."""
  try:
    with open(path, 'rb') as f:
      return json.loads(f.read().decode('utf-8'))
  except (ValueError, UnicodeDecodeError) as error:
    raise WorkdirError(
      f'{path} is damaged ({error}): it is not the JSON a run writes. Restore it from a backup '
      'or start a new --workdir.'
    ) from None


def _write_json(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise MissingRunError(
      f'{path} does not exist: --workdir must be a folder written by --mode=train.'
    )
  return ml_collections.ConfigDict(_with_later_options(upgrade(_read_json(path))))


def read_history(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Run:
  """This run's view of its workdir: checks a resume, then commits once before the first save.

  `resuming`: the workdir holds a checkpoint, so `config.json` is binding. Refused changes raise
  WorkdirError naming each option; accepted ones (cadence, a moved data folder, a larger
  `num_train_steps`) are logged and recorded in the history at commit.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    resuming: bool,
    init_from: str | None = None,
  ):
    self.config = config
    self.workdir = workdir
    self.resuming = resuming
    self.init_from = os.path.abspath(init_from) if init_from else None
    self.changes: dict[str, tuple[Any, Any]] = {}
    self.started_from: str | None = None  # the --init_from of the run being resumed
    self.previous_fingerprint: dict[str, Any] | None = None
    self._fingerprint: dict[str, Any] | None = None
    self._origin: dict[str, Any] | None = None
    self._committed = False
    if resuming:
      self._check_resume()

  def _check_resume(self) -> None:
    path = os.path.join(self.workdir, CONFIG_FILE)
    if not os.path.exists(path):
      raise WorkdirError(
        f'{self.workdir} holds checkpoints but no {CONFIG_FILE}: it was not written by '
        '--mode=train of this version. Start a new --workdir.'
      )
    changes = config_changes(upgrade(_read_json(path)), _as_plain(self.config))
    refused = {k: v for k, v in changes.items() if _refused(k, *v)}
    if refused:
      details = ', '.join(f'config.{k}: {old!r} -> {new!r}' for k, (old, new) in refused.items())
      hint = (
        ' (num_train_steps may only grow: train longer)' if 'num_train_steps' in refused else ''
      )
      raise WorkdirError(
        f'{path} was written by an earlier run with a different config ({details}){hint}. '
        'Resume with the same config, or start a new --workdir (--init_from=THIS_WORKDIR '
        'fine-tunes from its weights).'
      )
    self.changes = changes
    starts = [entry for entry in read_history(self.workdir) if entry.get('event') == 'start']
    started_from = starts[-1].get('init_from') if starts else None
    self.started_from = started_from
    if self.init_from and self.init_from != started_from:
      origin = f'from {started_from}' if started_from else 'from scratch'
      raise WorkdirError(
        f'--init_from={self.init_from}: {self.workdir} already holds a run started {origin}; '
        'rerun without --init_from to resume it, or give a new --workdir to fine-tune.'
      )
    fingerprint_path = os.path.join(self.workdir, FINGERPRINT_FILE)
    if os.path.exists(fingerprint_path):
      self.previous_fingerprint = _read_json(fingerprint_path)
    for key, (old, new) in changes.items():
      logging.info('Resuming with config.%s changed: %r -> %r.', key, old, new)

  def check_data(self, fingerprint: dict[str, Any]) -> None:
    """Refuses a resume whose training data differs from what the run trained on."""
    self._fingerprint = fingerprint
    if not self.resuming:
      return
    if self.previous_fingerprint is None:
      logging.warning(
        '%s has no %s (written by an older version): the training data cannot be compared; '
        'recording the current one.',
        self.workdir,
        FINGERPRINT_FILE,
      )
      return
    found = fingerprint_lib.differences(self.previous_fingerprint, fingerprint)
    if found:
      where = fingerprint.get('root') or self.config.data.name
      raise WorkdirError(
        f'The training data in {where} is not what the run in {self.workdir} trained on: '
        + '; '.join(found)
        + '. Resume with the original data (config.data.dir may point to a copy of it), or '
        'start a new --workdir.'
      )

  def set_origin(self, origin: dict[str, Any]) -> None:
    """Where a fine-tune's weights came from (`{'init_from', 'checkpoint', 'step'}`)."""
    self._origin = origin

  def commit(self, start_step: int) -> None:
    """Writes the config, data fingerprint and history entry; once, before the first save.

    `start_step`: the step this run started from (0, or the step it resumed at).
    """
    if self._committed:
      return
    self._committed = True
    if self.resuming and not self.changes and self.previous_fingerprint == self._fingerprint:
      return
    if jax.process_index() != 0:
      return
    os.makedirs(self.workdir, exist_ok=True)
    _write_json(os.path.join(self.workdir, CONFIG_FILE), self.config.to_json_best_effort(indent=2))
    if self._fingerprint is not None:
      _write_json(os.path.join(self.workdir, FINGERPRINT_FILE), json.dumps(self._fingerprint))
    entry: dict[str, Any] = {
      'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'event': 'resume' if self.resuming else 'start',
      'step': start_step,
    }
    if self.resuming:
      entry['changes'] = {k: list(v) for k, v in self.changes.items()}
    else:
      entry['init_from'] = self.init_from
      if self._origin:
        entry.update(self._origin)
    # A fresh start replaces the history of earlier attempts that never saved a checkpoint.
    mode = 'a' if self.resuming else 'w'
    with open(os.path.join(self.workdir, HISTORY_FILE), mode) as f:
      f.write(json.dumps(entry) + '\n')


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
