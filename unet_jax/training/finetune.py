"""Fine-tuning: a new run that starts from another run's weights (`--init_from=OTHER_WORKDIR`).

The parameters, EMA weights and BatchNorm statistics come from the other run's best checkpoint
(the model its eval and predict serve; its latest when it has no best); the optimiser moments,
step and schedule start fresh from this run's config. The two models must have the same
variables with the same shapes; any other option (loss, data, schedule, activation) may differ.
"""

import logging
import os
from typing import Any

import jax

from unet_jax.models import create_model
from unet_jax.training import checkpoint, run_record
from unet_jax.training.train_state import TrainState, create_optimizer, create_train_state


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
    '.'.join(str(getattr(k, 'key', k)) for k in path): tuple(leaf.shape) for path, leaf in flat
  }


def _mismatches(mine: TrainState, theirs: TrainState) -> list[str]:
  found = []
  for part in ('params', 'batch_stats'):
    a, b = _shapes(getattr(mine, part)), _shapes(getattr(theirs, part))
    for name in sorted(set(a) | set(b)):
      if name not in b:
        found.append(f'{part}.{name} is missing there')
      elif name not in a:
        found.append(f'{part}.{name} is not in this model')
      elif a[name] != b[name]:
        found.append(f'{part}.{name} has shape {b[name]} there, {a[name]} here')
  return found


def check_source(init_from: str) -> None:
  """Cheap checks of the flag before any data is prepared: a trained run's folder."""
  if not os.path.isdir(init_from):
    raise run_record.MissingRunError(f'--init_from={init_from}: no such folder.')
  if os.path.isfile(os.path.join(init_from, 'model.safetensors')) and not os.path.isdir(
    os.path.join(init_from, 'checkpoints')
  ):
    raise run_record.WorkdirError(
      f'--init_from={init_from} is an export folder (model.safetensors): it holds the '
      'inference (EMA) weights only, not the training weights a fine-tune starts from. '
      'Give the --workdir of the training run it was exported from.'
    )
  try:
    run_record.load_config(init_from)
  except run_record.MissingRunError:
    raise run_record.MissingRunError(
      f'--init_from={init_from} has no {run_record.CONFIG_FILE}: it must be the --workdir of '
      'a trained run.'
    ) from None


def load_weights(init_from: str, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
  """`state` with params, EMA and BatchNorm statistics of the run in `init_from`.

  Returns the new state (same shardings as `state`) and where the weights came from. Raises
  WorkdirError naming `--init_from` when the models' variables do not match.
  """
  check_source(init_from)
  other = run_record.load_config(init_from)
  other_model = create_model(other.model, task=other.task)
  target = jax.eval_shape(
    lambda: create_train_state(other, other_model, create_optimizer(other), jax.random.key(0))
  )
  found = _mismatches(state, target)
  if found:
    shown = '; '.join(found[:5]) + (f'; ... ({len(found) - 5} more)' if len(found) > 5 else '')
    raise run_record.WorkdirError(
      f'--init_from={init_from}: its model does not match config.model of this run ({shown}). '
      'Fine-tuning needs the same levels, channels and layer options.'
    )
  restored, path = checkpoint.restore_for_inference(init_from, target)
  shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
  weights = jax.device_put(
    (restored.params, restored.ema_params, restored.batch_stats),
    (shardings.params, shardings.ema_params, shardings.batch_stats),
  )
  logging.info('Fine-tuning from %s (step %d of that run).', path, int(restored.step))
  new_state = state.replace(params=weights[0], ema_params=weights[1], batch_stats=weights[2])
  return new_state, {'init_from': os.path.abspath(init_from), 'checkpoint': path}
