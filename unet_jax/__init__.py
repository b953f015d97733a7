"""unet_jax: U-Nets in JAX/Flax for paired image-to-image learning."""

__version__ = '0.1.0'
