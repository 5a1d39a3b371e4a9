"""The PyTorch peer of the benchmark: the same QRNet (Table 1) and Algorithm 1's step shape (forward
on 2 x batch images, L1, backward, Adam) in PyTorch, channels_last, float32 or bfloat16 autocast.

Optional (`pip install torch`); not a dependency of qrnet_jax. Imported by qrnet_jax.benchmark only.
"""
import numpy as np
import torch
from torch import nn

from qrnet_jax.models.qrnet import (BOTTLENECK_CHANNELS, DECODER_STAGES_WITH_DROPOUT,
                                    ENCODER_CHANNELS)


def _stage(in_channels, features, small, dropout_rate):
  """Table 1's stage: conv3x3 + ReLU (+ dropout) (+ conv3x3 + ReLU unless small)."""
  layers = [nn.Conv2d(in_channels, features, 3, padding=1), nn.ReLU()]
  if dropout_rate:
    layers.append(nn.Dropout(dropout_rate))
  if not small:
    layers += [nn.Conv2d(features, features, 3, padding=1), nn.ReLU()]
  return nn.Sequential(*layers)


class TorchQRNet(nn.Module):
  """qrnet_jax.models.QRNet in PyTorch (NCHW modules, run channels_last)."""

  def __init__(self, small=False, dropout_rate=0.2):
    super().__init__()
    channels = (3,) + ENCODER_CHANNELS
    self.encoder = nn.ModuleList(_stage(channels[i], f, small, 0)
                                 for i, f in enumerate(ENCODER_CHANNELS))
    self.bottleneck = _stage(ENCODER_CHANNELS[-1], BOTTLENECK_CHANNELS, small, 0)
    up_in = (BOTTLENECK_CHANNELS,) + ENCODER_CHANNELS[::-1][:-1]
    self.upconvs = nn.ModuleList(nn.ConvTranspose2d(c, f, 2, stride=2)
                                 for c, f in zip(up_in, ENCODER_CHANNELS[::-1]))
    self.decoder = nn.ModuleList(
        _stage(2 * f, f, small, dropout_rate if i < DECODER_STAGES_WITH_DROPOUT else 0)
        for i, f in enumerate(ENCODER_CHANNELS[::-1]))
    self.output = nn.Conv2d(ENCODER_CHANNELS[0], 3, 1)

  def forward(self, x):
    skips = []
    for stage in self.encoder:
      x = stage(x)
      skips.append(x)
      x = nn.functional.max_pool2d(x, 2)
    x = self.bottleneck(x)
    for upconv, stage, skip in zip(self.upconvs, self.decoder, skips[::-1]):
      x = stage(torch.cat([upconv(x), skip], dim=1))
    return torch.sigmoid(self.output(x).float())


def train_step(image_size, batch_size, dtype, small=False):
  """The train step on 2 x batch_size images (clean + distorted): a function that runs one step
  (qrnet_jax.benchmark times it)."""
  model = TorchQRNet(small=small).to(memory_format=torch.channels_last).train()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(
      rng.random((2 * batch_size, 3, image_size, image_size), np.float32)).contiguous(
          memory_format=torch.channels_last)
  targets = images.clone()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
      loss = (model(images) - targets).abs().mean()
    loss.backward()
    optimizer.step()

  return step
