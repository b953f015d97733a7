"""The pure, jitted train step: forward, loss, gradients, update, EMA."""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from unet_jax import losses, parallel
from unet_jax.models import UNet
from unet_jax.train_state import TrainState


def compute_loss(
  predictions: jax.Array,
  batch: dict[str, jax.Array],
  config: ml_collections.ConfigDict,
  loss_params: dict[str, Any],
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The configured loss: image losses against `target`, or segmentation losses on `mask`."""
  if config.task == 'segment':
    return losses.segmentation_combined(predictions, batch['mask'], config.loss)
  return losses.combined(predictions, batch['target'], config.loss, loss_params)


def model_inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The whole-photo side inputs a batch carries (`thumbnail`, `coords`), as model keywords."""
  return {key: batch[key] for key in ('thumbnail', 'coords') if key in batch}


def _sown_luts(intermediates: Any) -> list[tuple[str, jax.Array]]:
  """The (path, table) pairs the colour head sowed as `lut`."""
  found = []
  for path, value in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
    keys = [getattr(k, 'key', None) for k in path]
    if 'lut' in keys:
      found.append(('/'.join(str(k) for k in keys), value))
  return found


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  loss_params: dict[str, Any],
  *,
  model: UNet,
  optimizer: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step. A non-finite loss leaves the state unchanged (and is reported)."""

  def loss_fn(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    predictions, updates = model.apply(
      variables,
      batch['input'],
      train=True,
      **model_inputs(batch),
      mutable=['batch_stats', 'intermediates'],
    )
    loss, terms = compute_loss(predictions, batch, config, loss_params)
    tables = [t for _, t in _sown_luts(updates.get('intermediates', {}))]
    if tables:
      regularisation, lut_terms = losses.lut_regularisers(tables, config.loss)
      loss = loss + regularisation
      terms = {**terms, **lut_terms}
    return loss, (terms, updates.get('batch_stats', state.batch_stats))

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = config.optimizer.ema_decay
  ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
  candidate = state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
    ema_params=ema_params,
  )
  # Keeping the old state on a NaN/Inf loss means the host can stop with a good state in hand
  # even though it learns of the failure a step later.
  finite = jnp.isfinite(loss)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), candidate, state)
  metrics = {
    'loss': loss,
    'grad_norm': optax.tree.norm(grads),
    'finite': finite,
    **{f'loss_{name}': value for name, value in terms.items()},
  }
  return new_state, metrics


def make_train_step(
  config: ml_collections.ConfigDict,
  model: UNet,
  optimizer: optax.GradientTransformation,
  mesh: Mesh,
  state_sharding: Any,
) -> Callable:
  """`train_step` jitted for the mesh: state replicated and donated, batch split over `data`."""
  step = functools.partial(train_step, model=model, optimizer=optimizer, config=config)
  replicated = parallel.replicated(mesh)
  return jax.jit(
    step,
    in_shardings=(state_sharding, parallel.batch_sharding(mesh), replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=(0,),
    compiler_options=parallel.train_compiler_options(),
  )
