"""MQRNet at CPU scale (Eq. 5, Figure 6): QRNet trained against two small classifier families
(VGG-style and Inception-style) and evaluated with a third it never saw (ResNet-style).

Run:
  python -m qrnet_jax.main --config configs/small_mqrnet.py --workdir runs/small_mqrnet
"""
from configs import default


def get_config():
  config = default.get_config()
  config.classifiers.small_inception = default.classifier_config('small_inception')
  config.eval_classifiers.small_resnet = default.classifier_config('small_resnet', weight=0.)
  return config
