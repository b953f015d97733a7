"""Inference: from a trained workdir to graded photos and eval scores.

  tiling.py    tile geometry and blending weights (numpy)
  grading.py   compiled tiled grading of one photo of any size, with global context
  files.py     which photos an input names; safe, never-overwriting output files
  evaluate.py  scores the held-out split beside the identity baseline
  workdir.py   restores a workdir's model for inference; eval and predict from a workdir alone

Import the modules themselves (`from unet_jax.inference import grading`): this file imports
nothing, so `unet_jax.validation` can use `tiling` without an import cycle.
"""
