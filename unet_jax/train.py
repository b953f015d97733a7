"""The training loop: data -> sharded batches -> jitted step -> logs, evals, checkpoints."""

import functools
import logging
import signal
import threading
from typing import Any

import jax
import ml_collections

from unet_jax import checkpoint, data, losses, metrics, parallel
from unet_jax import workdir as workdir_lib
from unet_jax.inference import evaluate
from unet_jax.models import create_model
from unet_jax.steps import make_train_step
from unet_jax.summaries import MetricWriter, Progress
from unet_jax.train_state import (
  create_optimizer,
  create_train_state,
  inference_variables,
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
    raise FloatingPointError(
      f'The loss became {float(step_metrics["loss"])} at step {step}. Training stopped; the '
      'parameters from before that step are kept and the last checkpoint is intact. Lower '
      'config.optimizer.learning_rate or check the data.'
    )


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None
) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  `stop_at_step` saves and returns at that step without finishing the schedule (a later call
  resumes exactly there). Returns the last eval results (or {} if none ran).
  """
  parallel.initialize_distributed(config)
  validate_config(config)
  workdir_lib.save_config(config, workdir)

  mesh = parallel.create_mesh()
  model = create_model(config.model)
  optimizer = create_optimizer(config)
  data_dir = data.tfds_dir(config, workdir)
  logging.info('%s', data.dataset_summary(config, data_dir=data_dir))
  data_iterator = data.create_train_iterator(
    config,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    data_dir=data_dir,
  )

  replicated = parallel.replicated(mesh)
  init = functools.partial(create_train_state, config, model, optimizer)
  state = jax.jit(init, out_shardings=replicated)(jax.random.key(config.seed))
  state_sharding = jax.tree.map(lambda _: replicated, state)
  checkpointer = checkpoint.Checkpointer(workdir, config)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore_latest(state, data_iterator)
  start_step = int(state.step)

  loss_params = jax.device_put(losses.load_loss_params(config.loss), replicated)
  lpips_params = metrics.load_lpips_params() if config.task != 'segment' else None
  step_fn = make_train_step(config, model, optimizer, mesh, state_sharding)
  schedule = learning_rate_schedule(config)
  writer = MetricWriter(workdir)
  progress = Progress(config.num_train_steps, config.batch_size, start_step)
  stop = _StopRequest()
  last_eval: dict[str, Any] = {}
  final_step = min(config.num_train_steps, stop_at_step or config.num_train_steps)
  logging.info('Training steps %d -> %d on %d devices.', start_step, final_step, jax.device_count())

  try:
    previous = None
    for step in range(start_step + 1, final_step + 1):
      batch = parallel.shard_batch(next(data_iterator), mesh)
      state, step_metrics = step_fn(state, batch, loss_params)
      # Checking the step before this one lets the device run ahead of the host by a step.
      if previous is not None:
        _check_finite(*previous)
      previous = (step_metrics, step)

      is_last = step == final_step
      if step % config.log_every_steps == 0 or is_last:
        _check_finite(step_metrics, step)
        scalars = {k: v for k, v in jax.device_get(step_metrics).items() if k != 'finite'}
        scalars.update(progress.report(step, float(scalars['loss'])))
        scalars['learning_rate'] = float(schedule(step - 1))
        writer.write_scalars(step, scalars, prefix='train/')

      evaluate_now = step % config.eval_every_steps == 0 or step == config.num_train_steps
      if evaluate_now:
        _check_finite(step_metrics, step)
        output_dir = workdir_lib.eval_dir(workdir, step) if step == config.num_train_steps else None
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
        checkpointer.save_best(state, last_eval['model'])

      if step % config.checkpoint_every_steps == 0 or is_last or stop.requested:
        _check_finite(step_metrics, step)
        checkpointer.save(state, data_iterator)
      if stop.requested:
        logging.warning('Stopped at step %d on request; rerun the same command to resume.', step)
        break
  finally:
    checkpointer.wait()
    checkpointer.close()
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
