"""qrnet_jax: Quality Recovery Network for image recognition, in JAX/Flax."""
