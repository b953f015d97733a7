"""The training state (a pytree) and the optimiser that updates it."""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from unet_jax.models import UNet


class TrainState(flax.struct.PyTreeNode):
  """Everything a checkpoint must hold to continue training bit for bit."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  ema_params: Any


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to the peak rate, then cosine decay to `end_learning_rate_factor` of it."""
  opt = config.optimizer
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=opt.learning_rate,
    warmup_steps=opt.warmup_steps,
    decay_steps=max(config.num_train_steps, opt.warmup_steps + 1),
    end_value=opt.learning_rate * opt.end_learning_rate_factor,
  )


def _decay_mask(params: Any) -> Any:
  """Weight decay on kernels only: decaying biases and norm scales only hurts."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params
  )


# The modules whose parameters make the global grade (models/global_grade.py).
GLOBAL_GRADE_MODULES = ('auto_levels', 'exposure', 'color_head', 'frame_gain')
# ... and with the thumbnail encoder that mixes the LUT bases, the tone curves and the local
# grid (networks of their own, at the U-Net's step size), the global branch.
GLOBAL_BRANCH_MODULES = (*GLOBAL_GRADE_MODULES, 'thumbnail_encoder', 'tone_curves', 'local_affine')
# Each `config.optimizer` step factor and the modules it scales, applied one after the other
# (the exposure's factor multiplies the global grade's).
LR_FACTOR_MODULES = {
  'global_grade_lr_factor': GLOBAL_GRADE_MODULES,
  'exposure_lr_factor': ('exposure',),
}


def _module_mask(params: Any, modules: tuple[str, ...], inside: bool = True) -> Any:
  """True at the parameters under one of `modules` (`inside`), or at all the others."""
  return jax.tree_util.tree_map_with_path(
    lambda path, _: any(getattr(p, 'key', None) in modules for p in path) == inside, params
  )


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Clipped AdamW on the warm-up + cosine schedule, with the configured per-module factors."""
  opt = config.optimizer
  # grad_clip_norm=0 switches clipping off (identity has the same empty state).
  clip = opt.grad_clip_norm
  parts = [
    optax.clip_by_global_norm(clip) if clip else optax.identity(),
    optax.adamw(
      learning_rate_schedule(config),
      b1=opt.b1,
      b2=opt.b2,
      weight_decay=opt.weight_decay,
      mask=_decay_mask,
    ),
  ]
  # Each only when set: the optimizer state of earlier runs keeps its structure.
  for name, modules in LR_FACTOR_MODULES.items():
    factor = opt.get(name, 1.0)
    if factor != 1.0:
      mask = functools.partial(_module_mask, modules=modules)
      parts.append(optax.masked(optax.scale(factor), mask))
  if opt.get('auto_levels_prefit', False):
    # Fitted alone before the first step (training/levels_prefit.py), then held still.
    levels = functools.partial(_module_mask, modules=('auto_levels',))
    parts.append(optax.masked(optax.set_to_zero(), levels))
  grade_first = int(opt.get('grade_first_steps', 0))
  if grade_first > 0:
    # The U-Net holds still while the global branch learns the grade, then joins in.
    unet = functools.partial(_module_mask, modules=GLOBAL_BRANCH_MODULES, inside=False)
    waiting = optax.scale_by_schedule(lambda count: (count >= grade_first).astype(jnp.float32))
    parts.append(optax.masked(waiting, unet))
  return optax.chain(*parts)


def create_train_state(
  config: ml_collections.ConfigDict,
  model: UNet,
  optimizer: optax.GradientTransformation,
  rng: jax.Array,
) -> TrainState:
  """Initialises parameters on a `[1, crop, crop, in_channels]` dummy batch."""
  size = config.data.crop_size
  dummy = jnp.zeros((1, size, size, config.model.in_channels), jnp.float32)
  variables = model.init(rng, dummy, train=False)
  params = variables['params']
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get('batch_stats', {}),
    opt_state=optimizer.init(params),
    ema_params=params,
  )


def init_train_state(
  config: ml_collections.ConfigDict,
  model: UNet,
  optimizer: optax.GradientTransformation,
  rng: jax.Array,
  sharding: jax.sharding.Sharding,
) -> TrainState:
  """`create_train_state` compiled once and placed with `sharding` (replicated for training).

  On CPU the initialiser is compiled without backend optimisation: XLA:CPU spends ~15 s
  optimising the random-number code of even a tiny U-Net's init (measured, 0.2 M parameters)
  against ~2 s unoptimised, for a program that runs once. The weights differ from the optimised
  build by at most one float32 ulp (an FMA in the truncated-normal's inverse erf), and a run
  always initialises the same way, so resume and reproducibility are untouched.
  """
  init = functools.partial(create_train_state, config, model, optimizer)
  lowered = jax.jit(init, out_shardings=sharding).lower(rng)
  # Decided as `parallel.train_compiler_options` decides: by the default backend.
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else None
  return lowered.compile(options)(rng)


def abstract_train_state(
  config: ml_collections.ConfigDict,
  model: UNet,
  optimizer: optax.GradientTransformation,
  sharding: jax.sharding.Sharding,
) -> TrainState:
  """The shapes, dtypes and `sharding` of `create_train_state`'s result, computing nothing.

  What a resume restores into: compiling and running the initialiser only to overwrite its
  weights with the checkpoint's would add a compile to every resume and hold a second copy of
  the state in memory before the restore.
  """
  init = functools.partial(create_train_state, config, model, optimizer)
  shapes = jax.eval_shape(init, jax.random.key(config.seed))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def inference_variables(state: TrainState, *, use_ema: bool = True) -> dict[str, Any]:
  """The variables `model.apply` needs at inference: EMA weights unless told otherwise."""
  params = state.ema_params if use_ema else state.params
  return {'params': params, 'batch_stats': state.batch_stats}
