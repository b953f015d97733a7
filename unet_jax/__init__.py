"""unet_jax: U-Nets in JAX/Flax for paired image-to-image learning.

`unet_jax.load(folder)` gives a trained model (`.grade(photo)`, `.grade_folder(input, output)`)
from a training workdir or an export folder; see `unet_jax.inference.api`.
"""

__version__ = '0.1.0'


def load(path):
  """The trained model in `path` (a workdir or an export folder): `unet_jax.inference.api.load`."""
  # Imported here so that `import unet_jax` stays cheap (no jax or flax until a model is used).
  from unet_jax.inference.api import load as load_model

  return load_model(path)
