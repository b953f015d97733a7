"""Memory of each config's train step at its default batch, with and without remat.

  python -m experiments.memory_analysis                      # every config in configs/
  python -m experiments.memory_analysis --configs=res1024 --json-out=/tmp/memory.json

For each config, first what the backward pass keeps: the activations ("residuals") the
gradient of the step's loss saves from the forward pass, from `jax.ad_checkpoint.saved_residuals`
(traced, not compiled, and the same on every backend: what remat reduces). Then the library's
train step (`unet_jax.training.steps.make_train_step`, on a one-device
mesh: the whole global batch on one chip) is compiled for this machine's backend and XLA's
`compiled.memory_analysis()` is read: arguments (train state, batch, loss weights), outputs,
temporaries (activations kept for the backward pass, gradients, workspace), and what the donated
state lets outputs reuse. Peak = arguments + outputs + temporaries - aliased. Nothing runs, so
the figures are deterministic for a given jax version and backend (they do not depend on load).
On CPU they are XLA:CPU's buffer assignment; a GPU's differs (other fusions, cuDNN workspace,
and XLA:GPU's memory-aware scheduler, which places recomputation next to its use: XLA:CPU's
plan does not shrink with remat even where the saved residuals drop threefold).
`--nocompile` prints the residuals alone (seconds per config instead of minutes).
"""

import functools
import importlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from unet_jax import losses, parallel
from unet_jax.models import create_model
from unet_jax.training.steps import compute_loss, make_train_step
from unet_jax.training.train_state import create_optimizer, create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]

_CONFIGS = flags.DEFINE_list(
  'configs', [], 'Config names in configs/ (default: all of them, tiny excepted).'
)
_REMAT = flags.DEFINE_list('remat', ['false', 'true'], 'config.model.remat values to compile.')
_PERCEPTUAL = flags.DEFINE_float(
  'perceptual',
  None,
  "Override config.loss.perceptual (0: no VGG in the step); default: the config's.",
)
_COMPILE = flags.DEFINE_bool('compile', True, "Also compile and read XLA's memory analysis.")
_JSON_OUT = flags.DEFINE_string('json-out', None, 'Also write the figures to this JSON file.')

GIB = 2**30


def saved_residuals_gib(config) -> float:
  """GiB the train loss's gradient keeps from the forward pass, on one device."""
  model = create_model(config.model, task=config.task)
  optimizer = create_optimizer(config)
  state = jax.eval_shape(
    functools.partial(create_train_state, config, model, optimizer), jax.random.key(0)
  )
  loss_params = jax.eval_shape(functools.partial(losses.load_loss_params, config.loss))
  crop, channels = config.data.crop_size, config.model.in_channels
  shape = (config.batch_size, crop, crop, channels)
  batch = {
    'input': jnp.zeros(shape, jnp.float32),
    'target': jnp.zeros(shape[:-1] + (config.model.out_channels,), jnp.float32),
  }

  def loss(params, loss_params):
    stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state.batch_stats)
    variables = {'params': params, 'batch_stats': stats}
    predictions, _ = model.apply(variables, batch['input'], train=True, mutable=['batch_stats'])
    return compute_loss(predictions, batch, config, loss_params)[0]

  # The vjp function is a pytree whose leaves are what it saved; eval_shape traces, runs nothing.
  # Saved inputs count too (kernels, the batch, the frozen VGG weights where it is on).
  vjp_fn = jax.eval_shape(
    lambda params, frozen: jax.vjp(lambda p: loss(p, frozen), params)[1],
    state.params,
    loss_params,
  )
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(vjp_fn)) / GIB


def train_step_memory(config) -> dict[str, float]:
  """GiB figures of `compiled.memory_analysis()` for `config`'s train step on one device."""
  mesh = jax.make_mesh(
    (1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1]
  )
  model = create_model(config.model, task=config.task)
  optimizer = create_optimizer(config)
  state = jax.eval_shape(
    functools.partial(create_train_state, config, model, optimizer), jax.random.key(0)
  )
  loss_params = jax.eval_shape(functools.partial(losses.load_loss_params, config.loss))
  replicated = parallel.replicated(mesh)
  step = make_train_step(config, model, optimizer, mesh, jax.tree.map(lambda _: replicated, state))
  crop, channels = config.data.crop_size, config.model.in_channels
  shape = (config.batch_size, crop, crop, channels)
  batch = {
    'input': jax.ShapeDtypeStruct(shape, jnp.float32),
    'target': jax.ShapeDtypeStruct(shape[:-1] + (config.model.out_channels,), jnp.float32),
  }
  start = time.perf_counter()
  compiled = step.lower(state, batch, loss_params).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  figures = {
    'arguments_gib': memory.argument_size_in_bytes / GIB,
    'outputs_gib': memory.output_size_in_bytes / GIB,
    'temporaries_gib': memory.temp_size_in_bytes / GIB,
    'aliased_gib': memory.alias_size_in_bytes / GIB,
  }
  figures['peak_gib'] = (
    figures['arguments_gib']
    + figures['outputs_gib']
    + figures['temporaries_gib']
    - figures['aliased_gib']
  )
  figures['compile_seconds'] = seconds
  return figures


def main(argv: list[str]) -> None:
  del argv
  names = _CONFIGS.value or sorted(
    p.stem for p in (ROOT / 'configs').glob('*.py') if p.stem != 'tiny'
  )
  rows = []
  print(f'backend {jax.default_backend()}, jax {jax.__version__}')
  print(
    '| config | crop | batch | dtype | perceptual | remat | saved for backward GiB '
    '| XLA: state + batch GiB | XLA: temporaries GiB | XLA: peak GiB |'
  )
  print('|---|---|---|---|---|---|---|---|---|---|')
  for name in names:
    for remat in _REMAT.value:
      config = importlib.import_module(f'configs.{name}').get_config()
      config.model.remat = remat.lower() in ('1', 'true', 'yes')
      if _PERCEPTUAL.value is not None:
        config.loss.perceptual = _PERCEPTUAL.value
      row = {
        'config': name,
        'crop_size': config.data.crop_size,
        'batch_size': config.batch_size,
        'dtype': config.model.dtype,
        'perceptual': config.loss.perceptual,
        'remat': config.model.remat,
        'saved_residuals_gib': saved_residuals_gib(config),
      }
      if _COMPILE.value:
        row.update(train_step_memory(config))
      rows.append(row)
      compiled = (
        f'{row["arguments_gib"]:.2f} | {row["temporaries_gib"]:.2f} | {row["peak_gib"]:.2f}'
        if _COMPILE.value
        else '- | - | -'
      )
      print(
        f'| {name} | {row["crop_size"]} | {row["batch_size"]} | {row["dtype"]} '
        f'| {row["perceptual"]} | {row["remat"]} | **{row["saved_residuals_gib"]:.2f}** '
        f'| {compiled} |',
        flush=True,
      )
  if _JSON_OUT.value:
    pathlib.Path(_JSON_OUT.value).write_text(json.dumps(rows, indent=2))


if __name__ == '__main__':
  app.run(main)
