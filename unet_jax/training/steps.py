"""The pure, jitted train step: forward, loss, gradients, update, EMA, finiteness guard."""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from unet_jax import losses, parallel, whole_photo
from unet_jax.models import UNet
from unet_jax.training import guards
from unet_jax.training.train_state import TrainState


def compute_loss(
  predictions: jax.Array,
  batch: dict[str, jax.Array],
  config: ml_collections.ConfigDict,
  loss_params: dict[str, Any],
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The configured loss: image losses against `target`, or segmentation losses on `mask`."""
  if config.task == 'segment':
    return losses.segmentation_combined(predictions, batch['mask'], config.loss)
  return losses.combined(
    predictions, batch['target'], config.loss, loss_params, remat=config.model.remat
  )


def model_inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The whole-photo side inputs a batch carries (`thumbnail`, `statistics`, `coords`), as
  model keywords."""
  return {key: batch[key] for key in whole_photo.KEYS if key in batch}


def _sown(intermediates: Any, name: str) -> list[jax.Array]:
  """The arrays the model sowed as `name`: `lut` (each table the colour head applied),
  `frame_gain` (the frame gain's lattice), `global_grade` (the colour head and frame gain's
  output, under the U-Net's edit), `levelled` (the auto levels' output)."""
  found = []
  for path, value in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
    if name in [getattr(k, 'key', None) for k in path]:
      found.append(value)
  return found


def _whole_photo_grade_l1(model: UNet, variables: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """L1 of the grade under the U-Net applied to each whole photo at thumbnail size: the input's
  thumbnail, graded with its photo's own figures at `thumbnail_coords`, against the target's
  thumbnail (`loss.whole_photo_grade`; the data pipeline adds both). A crop covers a few cells
  of a local grid and little of the frame; the thumbnail covers all of them."""
  inputs = {**model_inputs(batch), 'coords': batch['thumbnail_coords']}
  colours = batch['thumbnail'][..., :3]  # a thumbnail with extremes carries them after
  graded = model.apply(variables, colours, **inputs, lut_only=True)
  return losses.l1(graded, batch['target_thumbnail'])


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay that makes the stored EMA the bias-corrected average of the steps so far.

  With a raw EMA `e_t = d e_(t-1) + (1 - d) p_t` that starts at the initial weights, after
  2,000 steps at d = 0.999 still 13.5 % of it is the untrained network. Dividing by
  `1 - d**t` (as Adam does for its moments) removes that part; storing the corrected value
  directly needs the decay `d (1 - d**(t-1)) / (1 - d**t)` at step `t` (0 at step 1, d later),
  so the EMA weights are the trained weights' average from the first step on.
  """
  t = step.astype(jnp.float32)
  d = jnp.float32(decay)
  return jnp.where(d > 0, d * (1.0 - d ** (t - 1.0)) / (1.0 - d**t), 0.0)


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  loss_params: dict[str, Any],
  *,
  model: UNet,
  optimizer: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step. A non-finite loss, or an update that would make any parameter, EMA
  weight, BatchNorm statistic or optimiser moment non-finite, leaves the state unchanged and is
  reported in `metrics['finite']`; `metrics['finite_parts']` says which part went non-finite
  (`guards.finite_parts`)."""

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
    sown = updates.get('intermediates', {})
    sources = {source for source, _ in losses.SOWN_REGULARISERS.values()}
    regularised = {source: _sown(sown, source) for source in sources}
    regularisation, regulariser_terms = losses.sown_regularisers(regularised, config.loss)
    loss = loss + regularisation
    terms = {**terms, **regulariser_terms}
    # The global grade on its own is fitted to the target too, so it takes all of the edit
    # that a global grade can do and the U-Net is left the local rest; the auto levels (its
    # first stage) likewise, so they set each photo's levels as an editor's auto tools do.
    for term, sown_name in (('global_grade', 'global_grade'), ('auto_levels', 'levelled')):
      weight = float(config.loss.get(term, 0.0) or 0.0)
      graded = _sown(sown, sown_name)
      if graded and weight > 0:
        terms = {**terms, term: losses.l1(graded[0], batch['target'])}
        loss = loss + weight * terms[term]
    weight = float(config.loss.get('whole_photo_grade', 0.0) or 0.0)
    if weight > 0 and 'target_thumbnail' in batch:
      terms = {**terms, 'whole_photo_grade': _whole_photo_grade_l1(model, variables, batch)}
      loss = loss + weight * terms['whole_photo_grade']
    return loss, (terms, updates.get('batch_stats', state.batch_stats))

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  decay = ema_decay_at(config.optimizer.ema_decay, step)
  ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
  candidate = state.replace(
    step=step,
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
    ema_params=ema_params,
  )
  # Keeping the old state on a NaN/Inf loss or state means the host can stop with a good state
  # in hand even though it learns of the failure a step later, and never checkpoints a bad one.
  parts = guards.finite_parts(loss, candidate)
  finite = jnp.all(jnp.stack(list(parts.values())))
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), candidate, state)
  metrics = {
    'loss': loss,
    'grad_norm': optax.tree.norm(grads),
    'finite': finite,
    'finite_parts': parts,  # read by the host only when `finite` is False (guards.py)
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
  """`train_step` jitted for the mesh: state replicated and donated, batch split over `data`.

  A new jitted function per call, compiled on its first use; the caller keeps it for the run.
  Runs of the same shape in one process reuse the compiled program through JAX's persistent
  compilation cache (when `jax_compilation_cache_dir` is set), which is keyed on the program.
  """
  step = functools.partial(train_step, model=model, optimizer=optimizer, config=config)
  replicated = parallel.replicated(mesh)
  return jax.jit(
    step,
    in_shardings=(state_sharding, parallel.batch_sharding(mesh), replicated),
    out_shardings=(state_sharding, replicated),
    donate_argnums=(0,),
    compiler_options=parallel.train_compiler_options(),
  )
