"""Where the CPU train step's time goes: every convolution of the U-Net, XLA against PyTorch.

  python -m experiments.conv_profile --config=configs/res256.py --resolution=128 --batch=8
  python -m experiments.conv_profile --resolution=512 --batch=1 --nogradients   # predict's tile

The train step's convolutions are read off the traced forward pass of the config's model
(`conv_general_dilated` in the jaxpr: shapes, strides, padding), and each distinct one is timed
alone, forward plus both gradients (input and weights), as compiled by XLA (with the train
step's CPU compiler options, `parallel.train_compiler_options`) and as run by PyTorch eager
(oneDNN, channels_last, autograd); `--nogradients` times the forward alone, as predict runs it
(XLA's default options, PyTorch under `no_grad`). Each row is the median of `--repeats` calls
after a warm-up; the two frameworks alternate call by call so that other load hits both alike.
The totals weight each convolution by how often the net uses it, which is what the step spends
on convolutions; `benchmark.py` times the whole step. float32, one process, all threads.
"""

import collections
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from unet_jax import parallel
from unet_jax.models import create_model

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/res256.py', 'Config file.')
_RESOLUTION = flags.DEFINE_integer('resolution', 128, 'Crop size (square).')
_BATCH = flags.DEFINE_integer('batch', 8, 'Batch size.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed calls per convolution and framework.')
_GRADIENTS = flags.DEFINE_bool('gradients', True, 'Time both gradients too (training).')

Conv = collections.namedtuple('Conv', 'batch height width cin cout kernel stride padding')


def step_convolutions(config, resolution: int, batch: int) -> collections.Counter:
  """The plain 2-D convolutions of the model's forward pass, with how often each occurs."""
  model = create_model(config.model, task=config.task)
  x = jnp.zeros((batch, resolution, resolution, config.model.in_channels), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1], train=False))
  jaxpr = jax.make_jaxpr(
    lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats', 'intermediates'])
  )(variables, x)
  found = collections.Counter()

  def visit(eqns):
    for eqn in eqns:
      for value in eqn.params.values():  # nested jaxprs: remat, custom_vjp, pjit
        inner = getattr(value, 'jaxpr', None)
        if inner is not None:
          visit(getattr(inner, 'eqns', None) or inner.jaxpr.eqns)
      if eqn.primitive.name != 'conv_general_dilated':
        continue
      p = eqn.params
      dilated = any(d != 1 for d in p['lhs_dilation'] + p['rhs_dilation'])
      if dilated or p['feature_group_count'] != 1:
        continue  # transposed or grouped: not in the configs timed here
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      if p['dimension_numbers'].lhs_spec != (0, 3, 1, 2):  # NHWC
        continue
      b, h, w, cin = lhs
      kernel, cout = rhs[0], rhs[3]
      found[Conv(b, h, w, cin, cout, kernel, p['window_strides'][0], p['padding'][0][0])] += 1

  visit(jaxpr.jaxpr.eqns)
  return found


def jax_conv_timer(conv: Conv, gradients: bool):
  """A function that runs `conv` (and its input and weight gradients) once, to completion."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((conv.batch, conv.height, conv.width, conv.cin), np.float32))
  w = jnp.asarray(
    0.1 * rng.standard_normal((conv.kernel, conv.kernel, conv.cin, conv.cout)).astype(np.float32)
  )

  def forward(x, w):
    return jax.lax.conv_general_dilated(
      x,
      w,
      (conv.stride, conv.stride),
      [(conv.padding, conv.padding)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )

  def forward_and_gradients(x, w, cotangent):
    y, vjp = jax.vjp(forward, x, w)
    return y, *vjp(cotangent)

  if not gradients:
    compiled = jax.jit(forward).lower(x, w).compile()
    return lambda: jax.block_until_ready(compiled(x, w))
  shape = jax.eval_shape(forward, x, w).shape
  cotangent = jnp.asarray(rng.random(shape, np.float32))
  compiled = (
    jax.jit(forward_and_gradients, compiler_options=parallel.train_compiler_options())
    .lower(x, w, cotangent)
    .compile()
  )
  return lambda: jax.block_until_ready(compiled(x, w, cotangent))


def torch_conv_timer(conv: Conv, gradients: bool):
  import torch

  x = torch.rand(conv.batch, conv.cin, conv.height, conv.width).to(
    memory_format=torch.channels_last
  )
  w = (0.1 * torch.randn(conv.cout, conv.cin, conv.kernel, conv.kernel)).to(
    memory_format=torch.channels_last
  )
  if not gradients:

    def forward():
      with torch.no_grad():
        torch.nn.functional.conv2d(x, w, stride=conv.stride, padding=conv.padding)

    return forward
  x.requires_grad_(True)
  w.requires_grad_(True)

  def run():
    x.grad = w.grad = None
    y = torch.nn.functional.conv2d(x, w, stride=conv.stride, padding=conv.padding)
    y.backward(torch.ones_like(y))

  return run


def median_seconds(timers: dict, repeats: int) -> dict[str, float]:
  for run in timers.values():
    run()  # warm-up (and PyTorch's oneDNN primitive creation)
  times = {name: [] for name in timers}
  for _ in range(repeats):
    for name, run in timers.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(values)) for name, values in times.items()}


def main(argv):
  del argv
  import torch

  convs = step_convolutions(_CONFIG.value, _RESOLUTION.value, _BATCH.value)
  print(
    f'{sum(convs.values())} convolutions ({len(convs)} distinct) in the forward pass of '
    f'{_CONFIG.value.model.levels} levels x {_CONFIG.value.model.base_channels} channels at '
    f'{_RESOLUTION.value}^2, batch {_BATCH.value}; jax {jax.__version__}, torch '
    f'{torch.__version__} ({torch.get_num_threads()} threads); '
    + ('forward and both gradients' if _GRADIENTS.value else 'forward only')
  )
  print('| H x W | in -> out | k | uses | XLA ms | PyTorch ms | PyTorch / XLA | GFLOP |')
  print('|---|---|---|---|---|---|---|---|')
  totals = collections.Counter()
  for conv, uses in sorted(convs.items(), key=lambda item: -item[0].height):
    gradients = _GRADIENTS.value
    timers = {'xla': jax_conv_timer(conv, gradients), 'torch': torch_conv_timer(conv, gradients)}
    seconds = median_seconds(timers, _REPEATS.value)
    out_h = (conv.height + 2 * conv.padding - conv.kernel) // conv.stride + 1
    passes = 3 if gradients else 1  # forward, input gradient, weight gradient
    flops = passes * 2 * conv.batch * out_h * out_h * conv.cout * conv.cin * conv.kernel**2
    totals.update({name: uses * value for name, value in seconds.items()})
    totals['flops'] += uses * flops
    print(
      f'| {conv.height} x {conv.width} | {conv.cin} -> {conv.cout} | {conv.kernel} | {uses} | '
      f'{1e3 * seconds["xla"]:.1f} | {1e3 * seconds["torch"]:.1f} | '
      f'{seconds["torch"] / seconds["xla"]:.2f} | {flops / 1e9:.2f} |'
    )
  print(
    f'| **all** | | | {sum(convs.values())} | **{1e3 * totals["xla"]:.0f}** | '
    f'**{1e3 * totals["torch"]:.0f}** | **{totals["torch"] / totals["xla"]:.2f}** | '
    f'{totals["flops"] / 1e9:.1f} |'
  )
  print(
    f'Achieved: XLA {totals["flops"] / totals["xla"] / 1e9:.0f} GFLOP/s, PyTorch '
    f'{totals["flops"] / totals["torch"] / 1e9:.0f} GFLOP/s over the convolutions.'
  )


if __name__ == '__main__':
  app.run(main)
