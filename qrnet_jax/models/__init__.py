"""Flax Linen models: QRNet and the classifiers it is trained against."""
from qrnet_jax.models.qrnet import QRNet
