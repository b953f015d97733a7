"""Orbax checkpoints: the train state and the data iterator's position, saved together.

`workdir/checkpoints/` keeps the latest `keep_checkpoints` steps (for resuming);
`workdir/best/` keeps the one step with the best eval metric (for eval and predict).
No checkpoint is written from a state holding NaN or Inf, and none is restored from one.

Orbax writes each step into a temporary folder renamed on completion, so a save that fails
(a full disk) never leaves a step that a resume would read. Such a failure, which Orbax reports
from its background threads at the next save or wait, becomes one `CheckpointWriteError`
naming the step's folder (status 2); the partial folders are removed at once, and any left by a
killed run are removed when the next run opens the workdir.
"""

import contextlib
import errno
import functools
import logging
import math
import os
import shutil
from collections.abc import Iterator
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from unet_jax.training.guards import TrainingStopped, nonfinite_leaves
from unet_jax.training.run_record import MissingRunError, WorkdirError
from unet_jax.training.train_state import TrainState
from unet_jax.training.write_errors import CheckpointWriteError, DropOrbaxWriteErrors, write_errno

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class CheckpointError(WorkdirError):
  """A checkpoint that must not be used (it holds NaN or Inf); the message names it."""


def _weights(state: TrainState) -> dict[str, Any]:
  return {'params': state.params, 'ema_params': state.ema_params, 'batch_stats': state.batch_stats}


def _refuse_nonfinite_save(state: TrainState) -> None:
  bad = nonfinite_leaves(state)
  if bad:
    raise TrainingStopped(
      f'Not saving step {int(state.step)}: the state holds NaN or Inf in {", ".join(bad)}.'
    )


def check_restored(state: Any, path: str) -> Any:
  """Raises CheckpointError when the weights restored from `path` are not all finite."""
  bad = nonfinite_leaves(_weights(state))
  if bad:
    raise CheckpointError(
      f'{path} holds NaN or Inf weights ({", ".join(bad)}); it cannot be used. It was '
      'probably written by an older version without the finiteness guard: delete that step '
      'folder (an earlier step is then used) or start a new --workdir.'
    )
  return state


@functools.cache  # Orbax's handler registry is global: register once per process
def _save_whole_arrays_on_cpu() -> None:
  """On the CPU backend, saves each array from one device instead of Orbax's replica-parallel
  default, where every one of N replicas copies 1/N of every array to the host through an XLA
  slice of its own: CPU devices already live in host memory, so the slices only add dispatches
  (the tiny config on 8 CPU devices: 5,148 slices and ~0.8 s per save). Orbax makes the same
  choice for GPUs. Nothing in a train state is a typed PRNG key, the one thing the handler's
  array-metadata store (left out here) is read back for."""
  if jax.default_backend() == 'cpu':
    ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
    )


def _barrier_prefix(name: str) -> ocp.options.MultiprocessingOptions:
  # Orbax names its multi-process barriers after the step folder; two managers saving the same
  # step would wait on one barrier name and deadlock unless each has a prefix of its own.
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


class Checkpointer:
  """Saves and restores training; every call is collective across processes."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    _save_whole_arrays_on_cpu()
    # The step folders of the saves not known to be complete (named if a write fails).
    self._pending: set[str] = set()
    self._failed = False
    self._log_filter = DropOrbaxWriteErrors()
    logging.getLogger('absl').addFilter(self._log_filter)
    self._latest = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), LATEST_DIR),
      item_names=('state', 'data'),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,  # a save cut short by a kill or a full disk
        multiprocessing_options=_barrier_prefix(LATEST_DIR),
      ),
    )
    mode = 'min' if config.best_metric in ('lpips', 'delta_e2000') else 'max'
    self._best_metric = config.best_metric
    self._best = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), BEST_DIR),
      item_names=('state',),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=1,
        best_fn=lambda metrics: metrics[config.best_metric],
        best_mode=mode,
        keep_checkpoints_without_metrics=False,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
        multiprocessing_options=_barrier_prefix(BEST_DIR),
      ),
    )

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def has_checkpoint(self) -> bool:
    """Whether either folder holds a step: the workdir is then committed to its config."""
    return self._latest.latest_step() is not None or self._best.latest_step() is not None

  def save(self, state: TrainState, data_iterator: Any) -> None:
    step = int(state.step)
    if step in self._latest.all_steps():
      return
    _refuse_nonfinite_save(state)
    with self._writing(f'{self._latest.directory}/{step}'):
      self._latest.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=grain.checkpoint.CheckpointSave(data_iterator),
        ),
        force=True,  # the loop decides when to save; the manager's own interval is not used
      )

  def save_best(self, state: TrainState, metrics: dict[str, float]) -> None:
    if self._best_metric not in metrics:
      raise KeyError(
        f'config.best_metric={self._best_metric!r} is not among the eval metrics {sorted(metrics)}.'
      )
    value = float(metrics[self._best_metric])
    if not math.isfinite(value):
      logging.warning(
        'Not keeping step %d as best: its eval %s is %s.', int(state.step), self._best_metric, value
      )
      return
    _refuse_nonfinite_save(state)
    with self._writing(f'{self._best.directory}/{int(state.step)}'):
      self._best.save(
        int(state.step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
        metrics={k: float(v) for k, v in metrics.items()},
      )

  def restore_latest(self, target: TrainState, data_iterator: Any) -> TrainState:
    """Restores the newest step into `target`'s structure and shardings, and the iterator.

    A step that cannot be read (a truncated array file, a deleted `_METADATA`, a damaged data
    position) is refused naming it, and the next older step is suggested: resuming from an
    older step silently would retrain steps the user believes done.
    """
    step = self._latest.latest_step()
    where = f'{self._latest.directory}/{step}'
    try:
      restored = self._latest.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(target)),
          data=grain.checkpoint.CheckpointRestore(data_iterator),
        ),
      )
    except Exception as error:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
      older = [s for s in self._latest.all_steps() if s < step]
      hint = (
        f'delete that folder to resume from step {max(older)}'
        if older
        else 'start a new --workdir (no older step is kept)'
      )
      raise CheckpointError(
        f'{where} cannot be read ({short_error(error)}): it is damaged or incomplete; {hint}.'
      ) from None
    check_restored(restored['state'], where)
    logging.info('Resumed from step %d.', step)
    return restored['state']

  @contextlib.contextmanager
  def _writing(self, folder: str | None = None) -> Iterator[None]:
    """Runs the save of the step `folder` (or, without one, a wait or close). Orbax also
    raises here the failed background write of an earlier save. A write error removes the
    partial step folders and becomes CheckpointWriteError naming the steps not written."""
    self._pending = {f for f in self._pending if not os.path.isdir(f)}
    if folder is not None:
      self._pending.add(folder)
    try:
      yield
    except Exception as error:
      code = write_errno(error)
      if code is None:
        raise
      self._failed = True
      raise CheckpointWriteError(code, self._write_failure(code)) from None

  def _write_failure(self, code: int) -> str:
    """The message of a failed save, once the other saves in flight are done and the partial
    folders removed (by process 0)."""
    for manager in (self._latest, self._best):
      with contextlib.suppress(Exception):  # the same failure again, or another save's
        manager.wait_until_finished()
    if jax.process_index() == 0:
      for manager in (self._latest, self._best):
        for partial in ocp.utils.tmp_checkpoints(manager.directory):
          shutil.rmtree(partial.get(), ignore_errors=True)
    folders = sorted(f for f in self._pending if not os.path.isdir(f))
    root = self._latest.directory
    complete = [s for s in self._latest.all_steps() if os.path.isdir(f'{root}/{s}')]
    if complete:
      then = f'rerun the same command to resume from step {max(complete)} ({root}/{max(complete)})'
    else:
      then = 'rerun the same command to start again (no complete checkpoint was written)'
    fix = 'free space' if code in (errno.ENOSPC, errno.EDQUOT) else 'make the folder writable'
    return (
      f'--workdir: cannot write the checkpoint {" and ".join(folders) or root}: '
      f'{os.strerror(code)}. Its partial files were removed; {fix}, then {then}.'
    )

  def wait(self) -> None:
    with self._writing():
      self._latest.wait_until_finished()
      self._best.wait_until_finished()

  def close(self) -> None:
    reported = self._failed  # a failure already raised is not raised again on the way out
    try:
      with self._writing():
        self._latest.close()
        self._best.close()
    except CheckpointWriteError:
      if not reported:
        raise
    finally:
      logging.getLogger('absl').removeFilter(self._log_filter)


def _partial(target: Any) -> Any:
  """Orbax arguments that read only `target`'s items of a saved state, into its structure."""
  abstract = _abstract(target)
  return ocp.args.PyTreeRestore(
    abstract,
    restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
    partial_restore=True,
  )


def short_error(error: BaseException) -> str:
  """The first line of an Orbax/TensorStore error, without its long stack of context."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  return text if len(text) <= 200 else text[:200] + '...'


def restore_for_inference(workdir: str, target: Any) -> tuple[Any, str]:
  """The best checkpoint if one exists, else the latest; raises if there is none.

  Only the items of `target` are read (a pytree with some of `TrainState`'s fields, such as the
  weights without the optimizer state), into `target`'s structure. A step that cannot be read
  (damaged or incomplete files) is skipped with a warning naming it, for the next one: best/,
  then the steps of checkpoints/ newest first. If none can be read, CheckpointError names them.
  """
  workdir = os.path.abspath(workdir)
  broken: list[str] = []
  for sub in (BEST_DIR, LATEST_DIR):
    path = os.path.join(workdir, sub)
    if not os.path.isdir(path):
      continue
    manager = ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(read_only=True, create=False)
    )
    try:
      # best/ keeps a single step, so its latest is its best.
      for step in sorted(manager.all_steps(), reverse=True):
        where = f'{path}/{step}'
        try:
          restored = manager.restore(step, args=ocp.args.Composite(state=_partial(target)))
        except Exception as error:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
          broken.append(f'{where} ({short_error(error)})')
          logging.warning('%s cannot be read (%s); trying an older one.', where, short_error(error))
          continue
        if broken:
          logging.warning(
            'Using %s: the newer %s could not be read (damaged or incomplete).',
            where,
            ', '.join(b.split(' (')[0] for b in broken),
          )
        return check_restored(restored['state'], where), where
    finally:
      manager.close()
  if broken:
    raise CheckpointError(
      f'No checkpoint of {workdir} can be read: {"; ".join(broken)}. They are damaged or '
      'incomplete: retrain, or restore the workdir from a backup.'
    )
  raise MissingRunError(
    f'No checkpoint in {workdir}/{BEST_DIR} or {workdir}/{LATEST_DIR}: train first with '
    f'--mode=train --workdir={workdir}.'
  )
