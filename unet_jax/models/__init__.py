"""Models: the U-Net family; `unet_jax.models.vgg` holds the frozen VGG of the perceptual loss."""

from unet_jax.models.unet import (
  UNet,
  count_params,
  create_model,
  has_global_grade,
  validate_model_config,
)

__all__ = ['UNet', 'count_params', 'create_model', 'has_global_grade', 'validate_model_config']
