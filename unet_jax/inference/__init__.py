"""Inference: from a trained workdir to graded photos and eval scores.

  restore.py        the one way a workdir's model is loaded (its weights only); eval, predict
  tiling.py         tile geometry and blending weights (numpy)
  tile_programs.py  the compiled programs of tiled grading and the loop that feeds them tiles
  grading.py        tiled grading of one photo of any size, with its whole-photo inputs
  files.py          which photos an input names; safe, never-overwriting output files
  evaluate.py       scores the held-out split beside the identity baseline
  export.py, lut_export.py, lut.py   an export folder; the model's .cube LUT and its fit
  api.py            `unet_jax.load(folder)`: a model object for Python callers

Import the modules themselves (`from unet_jax.inference import grading`): this file imports
nothing, so `unet_jax.validation` can use `tiling` without an import cycle.
"""
