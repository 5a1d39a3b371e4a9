"""QRNet (and optionally one classifier) as serialized StableHLO (`jax.export`), with its
parameters inside: callable from any JAX program without this project's code.

The exported function takes float32 RGB images in [0, 1], (batch, height, width, 3), all three
symbolic, and returns the restored images of that shape (padded and cropped inside as the restore
command pads them), or (restored images, classifier logits) with a classifier; the classifier sees
the restored image resized as the restore command resizes it (to data.image_size, then to the
classifier's own input side, as in the run). Load and call:

  exported = jax.export.deserialize(open(FILE, 'rb').read())
  restored = exported.call(images)
"""
import jax
import jax.numpy as jnp
from jax import export as jax_export

from qrnet_jax import steps
from qrnet_jax.ops import conv
from qrnet_jax.restore import predictions, tiles
from qrnet_jax.restore.trained import TrainedRun

INPUT_SHAPE = 'batch, height, width, 3'


def model_function(run: TrainedRun, with_classifier: bool = True):
  """images -> restored (and logits, with the run's classifier); parameters closed over."""
  params, c = run.qrnet_params, run.classifier if with_classifier else None
  policy = run.config.data.resize

  def restore(images):
    height, width = images.shape[1:3]
    padded = tiles.pad_to_multiple(images, xp=jnp)
    restored = run.qrnet.apply({'params': params}, padded, train=False)[:, :height, :width]
    if c is None:
      return restored
    resized = predictions.classifier_input(restored, c.image_size, policy, xp=jnp)
    logits, _ = steps.classifier_logits(c.spec, c.frozen, c.trainable, resized)
    return restored, logits
  return restore


def export_run(run: TrainedRun, with_classifier: bool = True, platforms=None):
  """The jax.export.Exported of `model_function`, for a symbolic batch and image size; lowered
  with XLA's convolutions (portable, unlike the oneDNN custom call) for `platforms` (default:
  this machine's backend; e.g. ('cpu', 'cuda'))."""
  spec = jax.ShapeDtypeStruct(jax_export.symbolic_shape(INPUT_SHAPE), jnp.float32)
  with conv.conv_impl('xla'):
    return jax_export.export(jax.jit(model_function(run, with_classifier)),
                             platforms=platforms)(spec)


def load_exported(path: str):
  """The Exported in `path`, as `export_run(...).serialize()` wrote it."""
  with open(path, 'rb') as f:
    return jax_export.deserialize(bytearray(f.read()))
