"""Studies and measurements of unet_jax, run from the repository root as modules, e.g.
`python -m experiments.ablate --preset=quick` or `python -m experiments.color_head --report_only`.

`sweep` is the one runner behind the sweeps (rows -> validated configs -> runs -> cached
results -> report): the design-claim ablations (`ablate`, with their pieces in `ablation/`) and
the colour-head study (`color_head`). The other modules measure one thing each (speed, memory,
data throughput, the PyTorch reference); their results go to `experiments/results/` and
BENCHMARKS.md.
"""
