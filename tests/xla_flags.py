"""The XLA compiler flags of the test suite, shared by every process it starts.

The suite compiles hundreds of small programs and runs each a few times, so it trades the
programs' speed for compile time; users' runs compile with XLA's defaults.

`--xla_backend_optimization_level=0` drops LLVM optimisation, ~45 % of each compile here, at
about 1.7x less compile time, with the same HLO passes and results within float rounding. It
also found a real bug (a max-pool gradient that became NaN when XLA computed the pooled tensor
twice; models/layers.py).

Not used: `--xla_cpu_use_fusion_emitters=false` on top of it compiles the tiny train step 1.5x
faster (3.2 s against 4.8 s), but the pair miscompiles the backward pass of the encoder: the
tiny U-Net's first-layer gradient is 1 % off the default build, and 70 % off once remat
recomputes the forward pass (tests/models/test_remat.py fails). Either flag alone is exact.
"""

COMPILE = '--xla_backend_optimization_level=0'


def with_devices(count: int) -> str:
  """`XLA_FLAGS` for a process of the suite with `count` CPU devices."""
  return f'--xla_force_host_platform_device_count={count} {COMPILE}'
