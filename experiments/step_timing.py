"""The library's train step, timed: shared by the speed scripts (benchmark, parts_speed)."""

import time
from typing import Any

import jax
import numpy as np

from unet_jax import losses, parallel
from unet_jax.models import count_params, create_model
from unet_jax.training.steps import make_train_step
from unet_jax.training.train_state import create_optimizer, init_train_state


class JaxStep:
  """The library's jitted train step on a fixed batch, timed to `block_until_ready`."""

  def __init__(self, config, batch: dict[str, np.ndarray]):
    mesh = parallel.create_mesh()
    model = create_model(config.model, task=config.task)
    optimizer = create_optimizer(config)
    replicated = parallel.replicated(mesh)
    self.state = init_train_state(config, model, optimizer, jax.random.key(config.seed), replicated)
    self.num_params = count_params(self.state.params)
    state_sharding = jax.tree.map(lambda _: replicated, self.state)
    self.loss_params = jax.device_put(losses.load_loss_params(config.loss), replicated)
    self.batch = parallel.shard_batch(batch, mesh)
    step = make_train_step(config, model, optimizer, mesh, state_sharding)
    start = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch, self.loss_params).compile()
    self.compile_seconds = time.perf_counter() - start
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    self.flops = float(cost.get('flops', 0.0)) if cost else 0.0

  def __call__(self) -> float:
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, self.batch, self.loss_params)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start


def time_alternating(steps: dict[str, Any], warmup: int, count: int) -> dict[str, list[float]]:
  """Runs each step function in turn, `warmup` + `count` rounds; keeps the timed rounds."""
  times = {name: [] for name in steps}
  for round_index in range(warmup + count):
    for name, step in steps.items():
      seconds = step()
      if round_index >= warmup:
        times[name].append(seconds)
  return times
