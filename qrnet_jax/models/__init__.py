"""Flax Linen models: QRNet and the classifiers it is trained against."""
from qrnet_jax.models.qrnet import QRNet
from qrnet_jax.models.vgg16 import VGG16
from qrnet_jax.models.inception_v3 import InceptionV3
from qrnet_jax.models.resnet50 import ResNet50
from qrnet_jax.models.small import SmallVGG, SmallInception, SmallResNet
from qrnet_jax.models import classifiers
