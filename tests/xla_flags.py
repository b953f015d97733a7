"""The XLA compiler flags of the test suite, shared by every process it starts.

The suite compiles hundreds of small programs and runs each a few times, so it trades the
programs' speed for compile time; users' runs compile with XLA's defaults.

`--xla_backend_optimization_level=0` drops LLVM optimisation, a large share of each compile
here, with the same HLO passes and results within float rounding. It also found a real bug (a
max-pool gradient that became NaN when XLA computed the pooled tensor twice; models/layers.py).

Not used: `--xla_cpu_use_fusion_emitters=false` compiles faster still, but together with the
flag above it miscompiles the backward pass of the encoder (the first layer's gradient drifts
off the default build's, far off once remat recomputes the forward pass, and
tests/models/test_remat.py fails). Either flag alone is exact. The figures:
experiments/results/README.md, "Test suite timings".
"""

COMPILE = '--xla_backend_optimization_level=0'


def with_devices(count: int) -> str:
  """`XLA_FLAGS` for a process of the suite with `count` CPU devices."""
  return f'--xla_force_host_platform_device_count={count} {COMPILE}'
