"""The training loop: data -> sharded batches -> jitted step -> logs, evals, checkpoints.

Checks that may refuse the run happen before anything compiles: the config (validation.py), a
resume against the workdir's record (workdir.py), the data's files and fingerprint.
"""

import logging
import signal
import threading
from typing import Any

import jax
import ml_collections

from unet_jax import data, losses, metrics, parallel
from unet_jax.data import fingerprint
from unet_jax.inference import evaluate
from unet_jax.models import create_model
from unet_jax.training import checkpoint, finetune, guards, run_record, workdir_lock
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
  create_optimizer,
  inference_variables,
  init_train_state,
  learning_rate_schedule,
)
from unet_jax.validation import validate_config


class _StopRequest:
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


def _check_finite(step_metrics: dict[str, Any], step: int) -> None:
  if not bool(step_metrics['finite']):
    raise TrainingStopped(guards.nonfinite_step_message(step_metrics, step))


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
      return _train(config, workdir, checkpointer, stop_at_step=stop_at_step, init_from=init_from)
    finally:
      checkpointer.close()


def _train(config, workdir, checkpointer, *, stop_at_step, init_from) -> dict[str, Any]:
  resuming = checkpointer.has_checkpoint()
  run = run_record.Run(config, workdir, resuming=resuming, init_from=init_from)

  mesh = parallel.create_mesh()
  model = create_model(config.model)
  optimizer = create_optimizer(config)
  data_dir = data.tfds_dir(config, workdir)
  logging.info('%s', data.dataset_summary(config, data_dir=data_dir))
  run.check_data(fingerprint.train_fingerprint(config, data_dir, run.previous_fingerprint))
  loss_params = losses.load_loss_params(config.loss)
  data_iterator = data.create_train_iterator(
    config,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    data_dir=data_dir,
  )

  replicated = parallel.replicated(mesh)
  state = init_train_state(config, model, optimizer, jax.random.key(config.seed), replicated)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  # A fine-tune that has no latest checkpoint yet (none, or only best/) starts from its source.
  source = init_from or run.started_from
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore_latest(state, data_iterator)
  elif source:
    state, origin = finetune.load_weights(source, state)
    run.set_origin(origin)
  start_step = int(state.step)
  log_parameter_overview(state.params, workdir)
  _log_schedule_change(config, run, start_step)

  loss_params = jax.device_put(loss_params, replicated)
  lpips_params = metrics.load_lpips_params() if config.task != 'segment' else None
  step_fn = make_train_step(config, model, optimizer, mesh, state_sharding)
  schedule = learning_rate_schedule(config)
  writer = MetricWriter(workdir)
  progress = Progress(config.num_train_steps, config.batch_size, start_step)
  interval = IntervalMetrics()  # the logged train metrics are means over each interval
  divergence = guards.DivergenceMonitor(config)
  divergence.seed(read_logged(workdir, 'train/loss', up_to_step=start_step))
  stop = _StopRequest()
  last_eval: dict[str, Any] = {}
  final_step = min(config.num_train_steps, stop_at_step or config.num_train_steps)
  logging.info('Training steps %d -> %d on %d devices.', start_step, final_step, jax.device_count())

  def save(step_metrics, step, *, best=None):
    _check_finite(step_metrics, step)
    run.commit(start_step)
    if best is None:
      checkpointer.save(state, data_iterator)
    else:
      checkpointer.save_best(state, best)

  if start_step >= final_step:
    # Nothing left to train: still record accepted changes (predict.*, cadence) in config.json.
    run.commit(start_step)
  try:
    previous = None
    for step in range(start_step + 1, final_step + 1):
      batch = parallel.shard_batch(next(data_iterator), mesh)
      state, step_metrics = step_fn(state, batch, loss_params)
      # Checking the step before this one lets the device run ahead of the host by a step.
      if previous is not None:
        _check_finite(*previous)
      previous = (step_metrics, step)
      interval.add(step_metrics)

      is_last = step == final_step
      diverged = None
      if step % config.log_every_steps == 0 or is_last:
        _check_finite(step_metrics, step)
        scalars = interval.compute_and_reset()
        scalars.update(progress.report(step, float(scalars['loss'])))
        scalars['learning_rate'] = float(schedule(step - 1))
        writer.write_scalars(step, scalars, prefix='train/')
        diverged = divergence.check_loss(step, float(scalars['loss']))

      evaluate_now = step % config.eval_every_steps == 0 or step == config.num_train_steps
      if evaluate_now:
        _check_finite(step_metrics, step)
        output_dir = run_record.eval_dir(workdir, step) if step == config.num_train_steps else None
        last_eval = _evaluate_and_log(
          config,
          model,
          state,
          writer,
          step,
          lpips_params=lpips_params,
          data_dir=data_dir,
          output_dir=output_dir,
        )
        save(step_metrics, step, best=last_eval['model'])
        diverged = divergence.check_eval(step, last_eval) or diverged

      stopping = diverged is not None and divergence.stops
      if step % config.checkpoint_every_steps == 0 or is_last or stop.requested or stopping:
        save(step_metrics, step)
      if stopping:
        raise guards.TrainingStopped(
          f"{diverged} Stopped (config.divergence.action='stop'); the checkpoint of step "
          f'{step} is saved.'
        )
      if stop.requested:
        raise Interrupted(
          f'Stopped at step {step} on request (signal); its checkpoint is saved. Rerun the same '
          'command to resume.'
        )
  finally:
    checkpointer.wait()
    writer.close()
    stop.restore()
  return last_eval


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
