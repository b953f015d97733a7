"""Eval and predict from a workdir alone: its config, its best (or latest) checkpoint."""

import logging
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from unet_jax import data, metrics
from unet_jax.inference import evaluate, files, predict_options
from unet_jax.models import UNet, create_model
from unet_jax.training import checkpoint, run_record
from unet_jax.training.train_state import inference_variables
from unet_jax.validation import validate_config


class Weights(flax.struct.PyTreeNode):
  """What inference reads of a checkpoint: the step, the parameters, their EMA and the
  BatchNorm statistics; the optimizer state is left on disk."""

  step: Any
  params: Any
  batch_stats: Any
  ema_params: Any


def weights_target(config: ml_collections.ConfigDict, model: UNet) -> Weights:
  """The shapes and dtypes of a run's `Weights`, from the model alone: no optimizer is built
  and nothing is computed (`jax.eval_shape` of the model's init)."""
  size = config.data.crop_size
  dummy = jax.ShapeDtypeStruct((1, size, size, config.model.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), dummy)
  return Weights(
    step=jax.ShapeDtypeStruct((), jnp.int32),
    params=variables['params'],
    batch_stats=variables.get('batch_stats', {}),
    ema_params=variables['params'],
  )


def load_trained_model(
  workdir: str, *, needs_data: bool = False, predict_overrides: dict[str, Any] | None = None
) -> tuple[ml_collections.ConfigDict, UNet, dict[str, Any], str]:
  """(config, model, EMA variables, checkpoint path) of the run in `workdir`.

  The one way inference restores a run: the config is checked once, then only the `Weights`
  are read from the best (else latest) checkpoint. `needs_data` also checks that the run's
  data is still where its config says (for eval). `predict_overrides`
  (`{'predict.lut_only': True}`, from the command line) replace the workdir's
  `config.predict.*` values for this command.
  """
  config = predict_options.apply(run_record.load_config(workdir), predict_overrides)
  validate_config(config, training=False, check_data_files=needs_data)
  model = create_model(config.model, task=config.task)
  weights, path = checkpoint.restore_for_inference(workdir, weights_target(config, model))
  logging.info('Loaded %s (step %d).', path, int(weights.step))
  return config, model, inference_variables(weights), path


def run_eval(workdir: str, *, predict_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
  """Full-resolution eval of the trained model into a new `workdir/eval/step_<N>[-k]/`."""
  config, model, variables, path = load_trained_model(
    workdir, needs_data=True, predict_overrides=predict_overrides
  )
  step = int(path.rstrip('/').rsplit('/', 1)[-1])
  lpips_params = metrics.load_lpips_params() if config.task != 'segment' else None
  results = evaluate.evaluate(
    config,
    model,
    variables,
    lpips_params=lpips_params,
    data_dir=data.tfds_dir(config, workdir),
    output_dir=run_record.eval_dir(workdir, step, fresh=True),
  )
  bad = sorted(name for name, value in results['model'].items() if not math.isfinite(value))
  if bad or results.get('nonfinite_outputs'):
    # Finite but huge weights (a diverged run) pass the checkpoint's finiteness check and
    # still grade to NaN or Inf: say so instead of printing "nan dB" as a result.
    raise checkpoint.CheckpointError(
      f'{path}: the model grades {results.get("nonfinite_outputs", 0)} of '
      f'{results["num_images"]} eval photos to NaN or Inf pixels (non-finite scores: '
      f'{", ".join(bad) or "none"}): its weights have diverged. Retrain with a lower '
      'config.optimizer.learning_rate.'
    )
  return results


def run_predict(
  workdir: str,
  input_path: str,
  output_dir: str,
  *,
  skip_existing: bool = False,
  recursive: bool = False,
  predict_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Grades a photo or a folder of photos with the trained model (see `files.predict_paths`).

  `predict_overrides` apply to this command and are recorded in the summary.
  """
  # Refuse a bad --input/--output before restoring anything.
  files.check_paths(input_path, output_dir, recursive=recursive)
  config, model, variables, _ = load_trained_model(workdir, predict_overrides=predict_overrides)
  return files.predict_paths(
    config,
    model,
    variables,
    input_path,
    output_dir,
    skip_existing=skip_existing,
    recursive=recursive,
    overrides=predict_overrides,
  )
