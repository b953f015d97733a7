"""The training loop: data -> sharded batches -> jitted step -> logs, evals, checkpoints.

Checks that may refuse the run happen before anything compiles: the config (validation.py), a
resume against the workdir's record (workdir.py), the data's files and fingerprint.
"""

import dataclasses
import logging
from typing import Any

import jax
import ml_collections
import numpy as np

from unet_jax import data, losses, metrics, parallel
from unet_jax.data import fingerprint
from unet_jax.inference import evaluate
from unet_jax.models import create_model
from unet_jax.training import (
  checkpoint,
  finetune,
  grid_prefit,
  guards,
  levels_prefit,
  run_record,
  workdir_lock,
)
from unet_jax.training.guards import Interrupted, TrainingStopped
from unet_jax.training.metric_writer import (
  IntervalMetrics,
  MetricWriter,
  Progress,
  log_parameter_overview,
  read_logged,
)
from unet_jax.training.steps import make_train_step
from unet_jax.training.train_state import (
  TrainState,
  abstract_train_state,
  create_optimizer,
  inference_variables,
  init_train_state,
  learning_rate_schedule,
)
from unet_jax.validation import validate_config


def _check_finite(step_metrics: dict[str, Any], step: int) -> None:
  if not bool(step_metrics['finite']):
    raise TrainingStopped(guards.nonfinite_step_message(step_metrics, step))


def _with_fitted(
  state: TrainState, path: tuple[str, ...], fitted: Any, sharding: jax.sharding.Sharding
) -> TrainState:
  """`state` with the weights fitted before training (`levels_prefit`, `grid_prefit`) at `path`
  of its params and its EMA, a copy in each: the train step donates both trees, and no buffer
  may be donated twice."""

  def place(tree: dict, keys: tuple[str, ...]) -> Any:
    if not keys:
      return jax.device_put(jax.tree.map(np.copy, fitted), sharding)
    return {**tree, keys[0]: place(tree[keys[0]], keys[1:])}

  return state.replace(params=place(state.params, path), ema_params=place(state.ema_params, path))


def _log_schedule_change(config: ml_collections.ConfigDict, run: run_record.Run, step: int):
  if 'num_train_steps' not in run.changes:
    return
  old_steps, new_steps = run.changes['num_train_steps']
  before = ml_collections.ConfigDict(config.to_dict())
  before.num_train_steps = old_steps
  # The update of step k + 1 uses the schedule's value at k.
  old_rate, new_rate = learning_rate_schedule(before)(step), learning_rate_schedule(config)(step)
  logging.warning(
    'Training longer: config.num_train_steps %d -> %d. The learning-rate schedule now decays '
    'over %d steps: step %d uses the rate %.3g (%.3g under the old schedule).',
    old_steps,
    new_steps,
    new_steps,
    step + 1,
    float(new_rate),
    float(old_rate),
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  stop_at_step: int | None = None,
  init_from: str | None = None,
) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  `stop_at_step` saves and returns at that step without finishing the schedule (a later call
  resumes exactly there). `init_from` (another run's workdir) starts a new run from that run's
  weights (finetune.py). A larger `config.num_train_steps` than the workdir's continues the run
  ("train longer"). Returns the last eval results (or {} if none ran).

  Raises ConfigError / DataError (bad config or files), WorkdirError (a refused resume),
  TrainingStopped (non-finite state, or divergence with `config.divergence.action='stop'`) and
  Interrupted (SIGTERM/SIGINT, after saving).
  """
  parallel.initialize_distributed(config)
  validate_config(config)
  if init_from:
    finetune.check_source(init_from)
  with workdir_lock.hold(workdir, exclusive=True, purpose='training'):
    checkpointer = checkpoint.Checkpointer(workdir, config)
    try:
      session = _setup(config, workdir, checkpointer, init_from=init_from)
      final_step = min(config.num_train_steps, stop_at_step or config.num_train_steps)
      return _loop(session, final_step)
    finally:
      checkpointer.close()


@dataclasses.dataclass
class _Session:
  """What `_setup` builds for one call of `train_and_evaluate`; `state` advances in `_loop`.

  The step is jitted here, once per call: runs of the same shape in one process (tests, sweeps,
  a notebook) share compiled programs through JAX's persistent compilation cache, which is keyed
  on the program itself, so no cache in this package needs clearing.
  """

  config: ml_collections.ConfigDict
  workdir: str
  run: run_record.Run
  checkpointer: checkpoint.Checkpointer
  mesh: jax.sharding.Mesh
  model: Any
  data_dir: str | None
  data_iterator: Any
  state: TrainState
  step_fn: Any
  loss_params: Any
  start_step: int
  writer: MetricWriter | None = None
  last_eval: dict[str, Any] = dataclasses.field(default_factory=dict)


def _setup(config, workdir, checkpointer, *, init_from) -> _Session:
  """Checks the data against the workdir's record, then builds the model, the state (fresh,
  resumed or fine-tuned), the jitted step and the data iterator."""
  run = run_record.Run(config, workdir, resuming=checkpointer.has_checkpoint(), init_from=init_from)
  mesh, model = parallel.create_mesh(), create_model(config.model, task=config.task)
  optimizer = create_optimizer(config)
  data_dir = data.tfds_dir(config, workdir)
  logging.info('%s', data.dataset_summary(config, data_dir=data_dir))
  run.check_data(fingerprint.train_fingerprint(config, data_dir, run.previous_fingerprint))
  data_iterator = data.create_train_iterator(
    config, process_index=jax.process_index(), process_count=jax.process_count(), data_dir=data_dir
  )
  replicated = parallel.replicated(mesh)
  # A fine-tune that has no latest checkpoint yet (none, or only best/) starts from its source.
  source = init_from or run.started_from
  if checkpointer.latest_step() is not None:
    target = abstract_train_state(config, model, optimizer, replicated)
    state = checkpointer.restore_latest(target, data_iterator)
  else:
    state = init_train_state(config, model, optimizer, jax.random.key(config.seed), replicated)
    if source:
      state, origin = finetune.load_weights(source, state)
      run.set_origin(origin)
    elif config.optimizer.get('auto_levels_prefit', False):
      fitted = levels_prefit.prefit(config, data_dir, state.params['auto_levels'])
      state = _with_fitted(state, ('auto_levels',), fitted, replicated)
    elif config.optimizer.get('local_grid_prefit', False):
      fitted = grid_prefit.prefit(config, data_dir)
      state = _with_fitted(state, ('local_affine', 'coefficients', 'bias'), fitted, replicated)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  log_parameter_overview(state.params, workdir)
  _log_schedule_change(config, run, int(state.step))
  return _Session(
    config=config,
    workdir=workdir,
    run=run,
    checkpointer=checkpointer,
    mesh=mesh,
    model=model,
    data_dir=data_dir,
    data_iterator=data_iterator,
    state=state,
    step_fn=make_train_step(config, model, optimizer, mesh, state_sharding),
    loss_params=jax.device_put(losses.load_loss_params(config.loss), replicated),
    start_step=int(state.step),
  )


def _loop(s: _Session, final_step: int) -> dict[str, Any]:
  """Steps from the session's state to `final_step`, with the periodic actions of `config`:
  log (and watch the loss), evaluate (and keep the best), save, and stop on divergence or a
  signal, each after a step has been checked finite."""
  config = s.config
  s.writer = MetricWriter(s.workdir)
  progress = Progress(config.num_train_steps, config.batch_size, s.start_step)
  interval = IntervalMetrics()  # the logged train metrics are means over each interval
  schedule = learning_rate_schedule(config)
  scores_lpips = config.task != 'segment' and config.eval_lpips
  lpips_params = metrics.load_lpips_params() if scores_lpips else None
  divergence = guards.DivergenceMonitor(config)
  divergence.seed(read_logged(s.workdir, 'train/loss', up_to_step=s.start_step))
  stop = guards.StopRequest()
  devices = jax.device_count()
  logging.info('Training steps %d -> %d on %d devices.', s.start_step, final_step, devices)
  if s.start_step >= final_step:
    # Nothing left to train: still record accepted changes (predict.*, cadence) in config.json.
    s.run.commit(s.start_step)
  try:
    previous = None
    for step in range(s.start_step + 1, final_step + 1):
      batch = parallel.shard_batch(next(s.data_iterator), s.mesh)
      s.state, step_metrics = s.step_fn(s.state, batch, s.loss_params)
      # Checking the step before this one lets the device run ahead of the host by a step.
      if previous is not None:
        _check_finite(*previous)
      previous = (step_metrics, step)
      interval.add(step_metrics)
      is_last = step == final_step
      diverged = None
      if step % config.log_every_steps == 0 or is_last:
        diverged = _log(s, step, step_metrics, interval, progress, schedule, divergence)
      if step % config.eval_every_steps == 0 or step == config.num_train_steps:
        diverged = _evaluate(s, step, step_metrics, lpips_params, divergence) or diverged
      stopping = diverged is not None and divergence.stops
      if step % config.checkpoint_every_steps == 0 or is_last or stop.requested or stopping:
        _save(s, step, step_metrics)
      _stop_if_asked(step, diverged if stopping else None, stop.requested)
  finally:
    s.checkpointer.wait()
    s.writer.close()
    stop.restore()
  return s.last_eval


def _log(s: _Session, step, step_metrics, interval, progress, schedule, divergence) -> str | None:
  """Writes the interval's mean scalars; returns the divergence monitor's warning, if any."""
  _check_finite(step_metrics, step)
  scalars = interval.compute_and_reset()
  scalars.update(progress.report(step, float(scalars['loss'])))
  scalars['learning_rate'] = float(schedule(step - 1))
  s.writer.write_scalars(step, scalars, prefix='train/')
  return divergence.check_loss(step, float(scalars['loss']))


def _evaluate(s: _Session, step, step_metrics, lpips_params, divergence) -> str | None:
  """Evaluates (writing the graded photos at the schedule's last step) and saves the best
  checkpoint; returns the divergence monitor's warning, if any."""
  _check_finite(step_metrics, step)
  final = step == s.config.num_train_steps
  s.last_eval = _evaluate_and_log(
    s.config,
    s.model,
    s.state,
    s.writer,
    step,
    lpips_params=lpips_params,
    data_dir=s.data_dir,
    output_dir=run_record.eval_dir(s.workdir, step) if final else None,
  )
  _save(s, step, step_metrics, best=s.last_eval['model'])
  return divergence.check_eval(step, s.last_eval)


def _save(s: _Session, step, step_metrics, *, best=None) -> None:
  """Saves the latest checkpoint (with the data position), or the best one when `best` holds
  its eval metrics; the workdir's record is committed before the first save."""
  _check_finite(step_metrics, step)
  s.run.commit(s.start_step)
  if best is None:
    s.checkpointer.save(s.state, s.data_iterator)
  else:
    s.checkpointer.save_best(s.state, best)


def _stop_if_asked(step: int, diverged: str | None, signalled: bool) -> None:
  """Raises after the step's checkpoint is saved: on divergence with action 'stop', or a signal."""
  if diverged is not None:
    raise TrainingStopped(
      f"{diverged} Stopped (config.divergence.action='stop'); the checkpoint of step "
      f'{step} is saved.'
    )
  if signalled:
    raise Interrupted(
      f'Stopped at step {step} on request (signal); its checkpoint is saved. Rerun the same '
      'command to resume.'
    )


def _evaluate_and_log(config, model, state, writer, step, *, lpips_params, data_dir, output_dir):
  results = evaluate.evaluate(
    config,
    model,
    inference_variables(state),
    lpips_params=lpips_params,
    data_dir=data_dir,
    output_dir=output_dir,
  )
  writer.write_scalars(step, results['model'], prefix='eval/')
  if 'identity' in results:
    writer.write_scalars(step, results['identity'], prefix='eval_identity/')
  writer.write_images(step, {f'eval/{name}': panel for name, panel in results['examples']})
  writer.flush()
  summary = '  '.join(f'{k} {v:.4f}' for k, v in results['model'].items())
  baseline = results.get('identity')
  if baseline:
    summary += '  (identity: ' + '  '.join(f'{k} {v:.4f}' for k, v in baseline.items()) + ')'
  logging.info('eval at step %d on %d images: %s', step, results['num_images'], summary)
  return results


def log_final_comparison(results: dict[str, Any]) -> str:
  """The line the README promises: the model's PSNR next to doing nothing."""
  model, identity = results.get('model', {}), results.get('identity', {})
  if 'psnr' not in model or 'psnr' not in identity:
    return ''
  gain = model['psnr'] - identity['psnr']
  line = (
    f'Held-out PSNR: model {model["psnr"]:.2f} dB vs identity {identity["psnr"]:.2f} dB '
    f'({gain:+.2f} dB) on {results["num_images"]} images.'
  )
  print(line, flush=True)
  return line
