"""Models: the U-Net family (unet.py), its blocks (layers.py), the global grade under it
(global_grade.py, lut.py) and the thumbnail encoder (thumbnail.py); `unet_jax.models.vgg` holds
the frozen VGG of the perceptual loss. The options are checked by `unet_jax.validation`."""

from unet_jax.models.global_grade import has_global_grade
from unet_jax.models.unet import UNet, count_params, create_model

__all__ = ['UNet', 'count_params', 'create_model', 'has_global_grade']
