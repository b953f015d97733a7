"""The non-finite guard names what went non-finite (issue 32): the loss, the gradients, or which
part of the updated state (the parameters of which top-level module, BatchNorm statistics,
optimiser moments, EMA), and the options that can cause it, not always "lower the learning
rate". The step reports one flag per part; the message is built from them on the host."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import tiny_config
from unet_jax import losses
from unet_jax.models import create_model
from unet_jax.training import guards, steps
from unet_jax.training.train_state import create_optimizer, create_train_state

MODULES = ('encoder_0', 'color_head', 'head')


def _message(bad: set[str], loss: float = 0.5, grad_norm: float = 2.0) -> str:
  parts = ['loss', *(f'params.{m}' for m in MODULES)]
  parts += ['batch_stats', 'opt_state', 'ema_params']
  flags = {name: np.bool_(name not in bad) for name in parts}
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'finite': False, 'finite_parts': flags}
  return guards.nonfinite_step_message(metrics, 9)


def test_one_modules_parameters_are_named_with_the_options_that_scale_them():
  message = _message({'params.color_head', 'ema_params'})
  assert 'step 9: the parameters of color_head; the EMA weights (ema_params) (loss 0.5' in message
  assert 'config.optimizer.global_grade_lr_factor' in message
  assert 'config.optimizer.learning_rate' in message
  assert 'encoder_0' not in message and 'BatchNorm' not in message
  # A U-Net module has no step factor of its own.
  assert 'lr_factor' not in _message({'params.encoder_0'})
  assert 'the parameters of all 3 top-level modules' in _message({f'params.{m}' for m in MODULES})


def test_batch_statistics_and_optimiser_moments_name_their_own_causes():
  message = _message({'batch_stats'})
  assert 'the BatchNorm running statistics (batch_stats) (loss 0.5' in message
  assert "config.model.norm='group'" in message and 'parameters of' not in message
  message = _message({'opt_state'})
  assert "the optimiser's moments (opt_state)" in message
  assert 'config.optimizer.grad_clip_norm' in message and 'BatchNorm' not in message
  message = _message({'ema_params'})
  assert 'the EMA weights (ema_params)' in message and 'config.optimizer.ema_decay=0' in message


@pytest.fixture(scope='module')
def setup():
  config = tiny_config()
  model = create_model(config.model, task=config.task)
  optimizer = create_optimizer(config)
  state = jax.jit(functools.partial(create_train_state, config, model, optimizer))(
    jax.random.key(0)
  )
  rng = np.random.default_rng(0)
  batch = {
    'input': jnp.asarray(rng.random((2, 32, 32, 3), np.float32)),
    'target': jnp.asarray(rng.random((2, 32, 32, 3), np.float32)),
  }
  loss_params = losses.load_loss_params(config.loss)
  return config, model, optimizer, state, batch, loss_params


def _jitted(config, model, optimizer):
  return jax.jit(
    functools.partial(steps.train_step, model=model, optimizer=optimizer, config=config)
  )


def _inf_where(tree, name: str):
  """`tree` with its leaves under the field or key `name` (or all, for '') set to +inf."""

  def poison(path, leaf):
    keys = [getattr(k, 'name', getattr(k, 'key', None)) for k in path]
    inexact = jnp.issubdtype(leaf.dtype, jnp.inexact)
    return jnp.full_like(leaf, jnp.inf) if inexact and (not name or name in keys) else leaf

  return jax.tree_util.tree_map_with_path(poison, tree)


def _bad_parts(metrics) -> set[str]:
  return {name for name, ok in jax.device_get(metrics['finite_parts']).items() if not ok}


@pytest.mark.slow
@pytest.mark.parametrize(
  'poisoned, bad, named',
  [
    ('input', None, 'the loss (nan'),  # NaN flows into every part: the loss is named
    ('batch_stats', {'batch_stats'}, 'the BatchNorm running statistics (batch_stats) (loss'),
    ('nu', {'opt_state'}, "the optimiser's moments (opt_state) (loss"),
    ('ema_params', {'ema_params'}, 'the EMA weights (ema_params) (loss'),
  ],
)
def test_the_step_flags_the_part_that_went_nonfinite(setup, poisoned, bad, named):
  config, model, optimizer, state, batch, loss_params = setup
  if poisoned == 'input':
    batch = {**batch, 'input': batch['input'].at[0, 3, 5, 1].set(jnp.nan)}
  elif poisoned == 'nu':  # Adam's second moment: the update it divides becomes 0, not NaN
    state = state.replace(opt_state=_inf_where(state.opt_state, 'nu'))
  else:
    state = state.replace(**{poisoned: _inf_where(getattr(state, poisoned), '')})
  new_state, metrics = _jitted(config, model, optimizer)(state, batch, loss_params)
  assert not bool(metrics['finite'])
  assert _bad_parts(metrics) == (bad or set(metrics['finite_parts']))
  assert named in guards.nonfinite_step_message(metrics, 1)
  # The state from before the step is kept.
  jax.tree.map(np.testing.assert_array_equal, new_state.params, state.params)


def _poisoned_updates(module: str) -> optax.GradientTransformation:
  """Turns `module`'s updates to NaN: a step that breaks that module's weights only."""

  def update(updates, state, params=None):
    del params
    return {
      k: jax.tree.map(lambda u: u * jnp.nan, v) if k == module else v for k, v in updates.items()
    }, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@pytest.mark.slow
def test_a_step_that_breaks_one_module_names_that_module(setup):
  config, model, _, _, batch, loss_params = setup
  optimizer = optax.chain(create_optimizer(config), _poisoned_updates('decoder_1'))
  state = jax.jit(functools.partial(create_train_state, config, model, optimizer))(
    jax.random.key(0)
  )
  _, metrics = _jitted(config, model, optimizer)(state, batch, loss_params)
  # The EMA follows the weights it averages.
  assert _bad_parts(metrics) == {'params.decoder_1', 'ema_params'}
  message = guards.nonfinite_step_message(metrics, 1)
  assert 'the parameters of decoder_1; the EMA weights (ema_params) (loss' in message
  assert 'encoder_0' not in message and 'config.optimizer.learning_rate' in message
