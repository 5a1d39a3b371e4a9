"""A contact sheet: per image one row, input | restored | |restored - input| (amplified), with the
classifier's top classes under the input and the restored image."""
import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 192  # px, the longer side of each image on the sheet
DIFFERENCE_GAIN = 2  # the difference is multiplied by this to be visible
LINES = 3  # prediction lines under an image
LINE_HEIGHT = 13
PAD = 6
HEADER = 18


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  input: np.ndarray  # uint8 (h, w, 3), already a thumbnail (see thumbnail)
  restored: np.ndarray
  difference: np.ndarray
  captions: tuple = ((), (), ())  # lines under each of the three images


def thumbnail(image: np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3) scaled so its longer side is CELL (nearest when enlarging: pixels stay
  visible)."""
  height, width = image.shape[:2]
  scale = CELL / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
  return np.asarray(Image.fromarray(image).resize(size, resample))


def difference(restored: np.ndarray, original: np.ndarray) -> np.ndarray:
  """|restored - original| x DIFFERENCE_GAIN as uint8, from float images in [0, 1]."""
  return np.round(np.clip(np.abs(restored - original) * DIFFERENCE_GAIN, 0, 1) * 255).astype(
      np.uint8)


def prediction_lines(ranked, lines: int = LINES) -> tuple:
  """'1. name 0.93' lines (the class index where the dataset has no names)."""
  return tuple(f'{rank + 1}. {name or f"class {index}"} {p:.2f}'
               for rank, (index, name, p) in enumerate(ranked[:lines]))


def contact_sheet(rows, titles=('input', 'restored',
                                f'|restored - input| x{DIFFERENCE_GAIN}')) -> Image.Image:
  """The sheet as one RGB image; each row as tall as its tallest image and captions."""
  font = ImageFont.load_default()
  heights = [LINE_HEIGHT + max(row.input.shape[0], row.restored.shape[0], row.difference.shape[0])
             + max(len(c) for c in row.captions) * LINE_HEIGHT + 2 * PAD for row in rows]
  sheet = Image.new('RGB', (3 * (CELL + 2 * PAD), HEADER + sum(heights)), 'white')
  draw = ImageDraw.Draw(sheet)
  for column, title in enumerate(titles):
    draw.text((column * (CELL + 2 * PAD) + PAD, 3), title, fill='black', font=font)
  top = HEADER
  for row, height in zip(rows, heights):
    draw.text((PAD, top + PAD), row.name[-60:], fill='black', font=font)
    images = (row.input, row.restored, row.difference)
    below = top + PAD + LINE_HEIGHT + max(image.shape[0] for image in images)
    for column, (image, caption) in enumerate(zip(images, row.captions)):
      left = column * (CELL + 2 * PAD) + PAD
      sheet.paste(Image.fromarray(image), (left, top + PAD + LINE_HEIGHT))
      for i, line in enumerate(caption):
        draw.text((left, below + i * LINE_HEIGHT), line, fill='black', font=font)
    top += height
  return sheet
