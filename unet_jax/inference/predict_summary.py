"""The JSON summary a predict run keeps in its output folder, rewritten after every photo.

A file named `SUMMARY_FILE` that is not one of our summaries (a user's own) is never replaced:
the summary goes to `predict_summary-1.json` instead.
"""

import json
import logging
import os
from typing import Any

from unet_jax.inference.output_files import MAX_SUFFIX, temporary_for

SUMMARY_FILE = 'predict_summary.json'
SUMMARY_MARK = 'unet_jax predict summary'


def _is_our_summary(path: str) -> bool:
  try:
    with open(path) as f:
      found = json.load(f)
  except (OSError, ValueError):
    return False
  # Summaries of versions before the mark had these keys.
  return isinstance(found, dict) and (
    found.get('written_by') == SUMMARY_MARK or {'output_dir', 'written', 'complete'} <= set(found)
  )


def summary_path(output_dir: str) -> str:
  """Where this run's summary goes: SUMMARY_FILE, unless a file of that name is not ours."""
  stem, ext = os.path.splitext(SUMMARY_FILE)
  for suffix in range(MAX_SUFFIX):
    path = os.path.join(output_dir, SUMMARY_FILE if suffix == 0 else f'{stem}-{suffix}{ext}')
    if not os.path.exists(path) or _is_our_summary(path):
      if suffix:
        logging.warning(
          '%s is not a summary of ours: it is kept and the summary goes to %s.',
          os.path.join(output_dir, SUMMARY_FILE),
          path,
        )
      return path
  raise FileExistsError(f'{output_dir}: no free name for the predict summary.')


def write_summary(output_dir: str, summary: dict[str, Any], path: str | None = None) -> None:
  """The summary as JSON, replaced atomically (it is ours, rewritten after each photo)."""
  path = path or os.path.join(output_dir, SUMMARY_FILE)
  tmp = f'{path}.{os.getpid()}.tmp'
  with temporary_for(path, tmp):
    with open(tmp, 'w') as f:
      json.dump({'written_by': SUMMARY_MARK, **summary}, f, indent=2)
    os.replace(tmp, path)
