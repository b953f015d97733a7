"""What stops a run from training on, or keeping, garbage: finiteness checks, divergence, signals.

- `all_finite(tree)` works inside jit (the train step keeps its old state when the new one is
  not finite); `finite_parts` gives the step one such flag per part (loss, each top-level
  module's parameters, BatchNorm statistics, optimiser moments, EMA) and
  `nonfinite_step_message` turns them into what went wrong and the options that cause it;
  `nonfinite_leaves(tree)` names the bad leaves on the host for messages.
- `DivergenceMonitor` watches the logged loss and each eval: a loss far above its running
  minimum for several logs in a row, or an eval PSNR well below doing nothing, is warned about
  (or stops the run, with `config.divergence.action='stop'`), naming the step.
- `StopRequest` turns SIGTERM/SIGINT into a flag the loop reads, so it saves before stopping.
"""

import logging
import math
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unet_jax.training.train_state import LR_FACTOR_MODULES


class Interrupted(Exception):
  """Training stopped on SIGTERM/SIGINT after saving a checkpoint; rerunning resumes it."""


class TrainingStopped(FloatingPointError):
  """Training stopped on purpose at a step: a non-finite state or a diverging run."""


class StopRequest:
  """Turns SIGTERM/SIGINT into a flag the loop checks, so it can save before exiting."""

  def __init__(self):
    self.requested = False
    self._previous = {}
    if threading.current_thread() is not threading.main_thread():
      return  # signal handlers can only be installed from the main thread
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    logging.warning('Received signal %d: saving a checkpoint and stopping.', signum)
    self.requested = True

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _inexact(leaf: Any) -> bool:
  return jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)


def all_finite(tree: Any) -> jax.Array:
  """A scalar bool: no floating-point leaf of `tree` holds NaN or Inf (traceable)."""
  checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if _inexact(leaf)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


_all_finite_jit = jax.jit(all_finite)


def nonfinite_leaves(tree: Any, *, limit: int = 5) -> list[str]:
  """Up to `limit` paths (`params.down_0.conv_0.kernel`) of leaves holding NaN or Inf.

  One compiled reduction decides first, so a finite tree (the usual case) is not copied to the
  host.
  """
  if bool(_all_finite_jit(tree)):
    return []
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if _inexact(leaf) and not np.all(np.isfinite(np.asarray(jax.device_get(leaf)))):
      bad.append('.'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path))
      if len(bad) >= limit:
        break
  return bad


def finite_parts(loss: jax.Array, state: Any) -> dict[str, jax.Array]:
  """One traceable bool per part of a train step: `loss`, `params.<module>` for each top-level
  module of the updated parameters, `batch_stats`, `opt_state`, `ema_params`; all True is the
  step's `finite`.

  The same reductions the step's guard needs anyway, kept apart; the host reads them only when
  the step went non-finite, to say what did. The gradients need no flag of their own: their
  norm, which the step logs, is non-finite whenever one of them is.
  """
  parts = {'loss': jnp.all(jnp.isfinite(loss))}
  for name, module in state.params.items():
    parts[f'params.{name}'] = all_finite(module)
  for name in ('batch_stats', 'opt_state', 'ema_params'):
    parts[name] = all_finite(getattr(state, name))
  return parts


def _lr_factors(modules: list[str]) -> list[str]:
  """The `config.optimizer.*_lr_factor` options that scale the steps of `modules`."""
  return [
    f'config.optimizer.{name}'
    for name, scaled in LR_FACTOR_MODULES.items()
    if any(module in scaled for module in modules)
  ]


def _state_parts(flags: dict[str, bool], loss: float, grad_norm: float) -> tuple[str, list[str]]:
  """(what, causes) when the loss and gradients were finite but the updated state is not."""
  what, causes = [], []
  bad = [name for name, ok in flags.items() if not ok]
  modules = [name.removeprefix('params.') for name in bad if name.startswith('params.')]
  every = sum(name.startswith('params.') for name in flags)
  if modules:
    if len(modules) == every > 1:
      what.append(f'the parameters of all {every} top-level modules')
    else:
      what.append(f'the parameters of {", ".join(modules)}')
    factors = _lr_factors(modules)
    causes.append(
      'a step too large for the weights: lower config.optimizer.learning_rate'
      + (f' (or {" / ".join(factors)})' if factors else '')
      + ', or config.optimizer.weight_decay (its step is learning_rate x weight_decay of each '
      'weight)'
    )
  if 'batch_stats' in bad:
    what.append('the BatchNorm running statistics (batch_stats)')
    causes.append(
      'activations too large for the running mean and variance, from weights that grow step '
      'after step: lower config.optimizer.learning_rate or config.optimizer.weight_decay, or '
      "normalise otherwise (config.model.norm='group')"
    )
  if 'opt_state' in bad:
    what.append("the optimiser's moments (opt_state)")
    causes.append(
      "gradients whose squares overflow Adam's second moment: set "
      'config.optimizer.grad_clip_norm (> 0; 0 switches clipping off), or lower '
      'config.optimizer.learning_rate'
    )
  if 'ema_params' in bad:
    what.append('the EMA weights (ema_params)')
    if not modules:
      causes.append(
        'weights near the float32 limit, which their average overflows: lower '
        'config.optimizer.learning_rate (config.optimizer.ema_decay=0 switches the EMA off)'
      )
  if not what:  # a step without per-part flags: only the state as a whole is known
    what.append('the updated weights, EMA, BatchNorm statistics or optimiser moments')
    causes.append(
      'a step too large for the weights: lower config.optimizer.learning_rate (or its '
      'global_grade_lr_factor / exposure_lr_factor), or config.optimizer.weight_decay'
    )
  described = '; '.join(what) + f' (loss {loss:.4g} and gradient norm {grad_norm:.4g} were finite)'
  return described, causes


def nonfinite_step_message(step_metrics: dict[str, Any], step: int) -> str:
  """What went non-finite at `step`, read off the step's metrics, and the options that cause
  it: the loss (naming its non-finite terms), the gradients, or which parts of the updated
  state (the parameters of which top-level modules, BatchNorm statistics, optimiser moments,
  EMA weights), from the step's `finite_parts` flags."""
  host = jax.device_get(step_metrics)
  flags = {name: bool(ok) for name, ok in host.get('finite_parts', {}).items()}
  values = {k: float(v) for k, v in host.items() if k not in ('finite', 'finite_parts')}
  bad_terms = sorted(
    k.removeprefix('loss_')
    for k, v in values.items()
    if k.startswith('loss_') and not math.isfinite(v)
  )
  loss, grad_norm = values.get('loss', math.nan), values.get('grad_norm', math.nan)
  if not math.isfinite(loss):
    what = f'the loss ({loss}'
    what += f'; non-finite terms: {", ".join(bad_terms)})' if bad_terms else ')'
    causes = [
      'non-finite or extreme input pixels, a loss weight (config.loss.*) too large, or '
      'config.loss.charbonnier_epsilon too small; check the data, then lower '
      'config.optimizer.learning_rate'
    ]
  elif not math.isfinite(grad_norm):
    what = f'the gradients (norm {grad_norm}; loss {loss:.4g} was finite)'
    causes = [
      'an exploding loss surface: set config.optimizer.grad_clip_norm (> 0; 0 switches '
      'clipping off) or lower config.optimizer.learning_rate'
    ]
  else:
    what, causes = _state_parts(flags, loss, grad_norm)
  return (
    f'Training went non-finite at step {step}: {what}. Training stopped; the parameters from '
    'before that step are kept and no checkpoint holds a non-finite value. Likely causes: '
    f'{"; ".join(causes)}.'
  )


class DivergenceMonitor:
  """Flags a run whose loss runs away or whose model grades worse than doing nothing.

  `config.divergence`: `loss_factor` (a logged loss above this multiple of the lowest logged
  loss so far counts as a bad log), `patience` (bad logs in a row before acting),
  `eval_margin_db` (an eval PSNR this far below the identity baseline acts at once; image
  tasks), `action` ('warn' logs a warning, 'stop' raises TrainingStopped after saving).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    settings = config.divergence
    self._factor = settings.loss_factor
    self._patience = settings.patience
    self._margin = settings.eval_margin_db
    self._stop = settings.action == 'stop'
    self._lowest = math.inf
    self._bad_logs = 0
    self.warnings: list[str] = []

  def seed(self, losses: list[float]) -> None:
    """Starts the running minimum from losses logged before a resume."""
    finite = [loss for loss in losses if math.isfinite(loss)]
    if finite:
      self._lowest = min(self._lowest, *finite)

  def check_loss(self, step: int, loss: float) -> str | None:
    """Feeds one logged loss; returns the warning when this log makes the run diverged."""
    if loss <= self._lowest:
      self._lowest = loss
    if self._lowest > 0 and loss > self._factor * self._lowest:
      self._bad_logs += 1
    else:
      self._bad_logs = 0
    if self._bad_logs != self._patience:
      return None
    return self._act(
      f'Training diverges at step {step}: the loss is {loss:.4g}, more than '
      f'config.divergence.loss_factor={self._factor:g} times its lowest value so far '
      f'({self._lowest:.4g}) for {self._patience} logs in a row. Lower '
      'config.optimizer.learning_rate (or raise config.optimizer.warmup_steps).'
    )

  def check_eval(self, step: int, results: dict[str, Any]) -> str | None:
    """Feeds one eval (`{'model': {...}, 'identity': {...}}`); returns a warning if any.

    An infinite identity PSNR (an eval photo that already equals its target, as an auto-levels
    edit leaves a full-range photo) says nothing of how the model compares: only a non-finite
    model score is flagged then."""
    model = results.get('model', {}).get('psnr')
    identity = results.get('identity', {}).get('psnr')
    if model is None or identity is None:
      return None
    if math.isfinite(model) and (not math.isfinite(identity) or model >= identity - self._margin):
      return None
    return self._act(
      f'The model at step {step} grades the eval photos worse than doing nothing: PSNR '
      f'{model:.2f} dB vs identity {identity:.2f} dB (config.divergence.eval_margin_db='
      f'{self._margin:g}). The run has probably diverged; lower '
      'config.optimizer.learning_rate.'
    )

  def _act(self, message: str) -> str:
    self.warnings.append(message)
    logging.warning('%s', message)
    return message

  @property
  def stops(self) -> bool:
    return self._stop
