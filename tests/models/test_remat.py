"""config.model.remat recomputes each conv block in the backward pass: same variables, same
loss and gradients, fewer activations kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from unet_jax.models import create_model


def _loss_and_grads(remat: bool):
  config = tiny.get_config()
  config.model.remat = remat
  model = create_model(config.model, task=config.task)
  x = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3), np.float32))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda s: 0.2 * rng.standard_normal(s.shape).astype(s.dtype), shapes)

  def loss(params):
    y, updates = model.apply(
      {'params': params, 'batch_stats': variables['batch_stats']},
      x,
      train=True,
      mutable=['batch_stats'],
    )
    return jnp.mean(jnp.square(y - 0.5)), updates

  (value, updates), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
  vjp = jax.eval_shape(lambda p: jax.vjp(lambda q: loss(q)[0], p)[1], variables['params'])
  saved = sum(leaf.size for leaf in jax.tree.leaves(vjp))
  return shapes, value, updates, grads, saved


@pytest.mark.slow
def test_remat_changes_memory_not_results():
  shapes, value, updates, grads, saved = _loss_and_grads(False)
  shapes_r, value_r, updates_r, grads_r, saved_r = _loss_and_grads(True)
  # Same variable names and shapes: a checkpoint trains on with remat switched either way.
  assert jax.tree.structure(shapes) == jax.tree.structure(shapes_r)
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, shapes_r)
  np.testing.assert_allclose(value_r, value, rtol=1e-6)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  jax.tree.map(close, grads_r, grads)
  jax.tree.map(close, updates_r, updates)
  assert saved_r < 0.6 * saved  # what the backward pass keeps from the forward
