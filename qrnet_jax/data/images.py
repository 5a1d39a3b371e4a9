"""Image decoding and resizing: any file Pillow reads, in any mode, to uint8 RGB of one size."""
import numpy as np
from PIL import Image

from qrnet_jax.config_schema import RESIZE_POLICIES
_RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking


def to_rgb(image: Image.Image) -> Image.Image:
  """Converts every Pillow mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB."""
  if image.mode == 'RGB':
    return image
  if image.mode.startswith('I') or image.mode == 'F':
    # 16/32-bit grey: Pillow's convert('L') clips instead of scaling, so scale to 0..255 here.
    values = np.asarray(image, dtype=np.float32)
    top = 65535. if (image.mode.startswith('I;16') or values.max(initial=0) > 255) else 255.
    grey = np.clip(np.round(values * (255. / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, 'L').convert('RGB')
  if image.mode == 'P' and 'transparency' in image.info:
    image = image.convert('RGBA')  # avoids Pillow's warning on palette transparency
  return image.convert('RGB')  # drops alpha; CMYK and YCbCr by Pillow's own conversion


def _crop_box(width, height, policy):
  if policy == 'squash':
    return (0, 0, width, height)
  side = min(width, height)
  left, top = (width - side) / 2., (height - side) / 2.
  return (left, top, left + side, top + side)


def resize(image: Image.Image, size: int, policy: str = 'squash') -> np.ndarray:
  """RGB uint8 (size, size, 3): 'squash' scales the whole image; 'center_crop' its middle square."""
  if policy not in RESIZE_POLICIES:
    raise ValueError(f'resize policy {policy!r}; allowed: {RESIZE_POLICIES}')
  image = to_rgb(image)
  box = _crop_box(image.width, image.height, policy)
  if image.size != (size, size) or box != (0, 0, size, size):
    image = image.resize((size, size), _RESAMPLE, box=box)
  return np.asarray(image, dtype=np.uint8)


def decode_file(path, size: int, policy: str = 'squash') -> np.ndarray:
  """Decodes one image file to uint8 (size, size, 3); raises on unreadable or truncated files."""
  with Image.open(path) as image:
    if image.format == 'JPEG':
      # DCT-domain downscale to at least `size` on both sides: 2-8x faster decoding of large JPEGs.
      image.draft('RGB', (size, size))
    image.load()
    return resize(image, size, policy)


def check_file(path) -> None:
  """Raises if Pillow cannot decode the whole file (truncated, corrupt, not an image)."""
  with Image.open(path) as image:
    if image.format == 'JPEG':
      image.draft(image.mode, (32, 32))  # decodes every scan, at 1/8 scale
    image.load()


def resize_array(image: np.ndarray, size: int, policy: str = 'squash') -> np.ndarray:
  """uint8 (H, W) or (H, W, C) array (C in 1, 3, 4) to uint8 RGB (size, size, 3)."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2 or image.shape[-1] in (3, 4):
    return resize(Image.fromarray(image), size, policy)
  raise ValueError(f'cannot read an image of shape {image.shape}')
