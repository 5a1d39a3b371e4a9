"""The losses of Section III-B/C, per image (callers reduce over the batch, masked or not)."""
import jax.numpy as jnp
import optax


def quality_loss(restored, target):
  """Eq. (1)-(2): L_q = |x* - Q(x)|_1, the mean absolute error of each image."""
  return jnp.abs(target.astype(jnp.float32) - restored.astype(jnp.float32)).mean(axis=(1, 2, 3))


def classification_loss(logits, labels):
  """Eq. (3): softmax cross-entropy of each image's logits against its integer label."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def correct(logits, labels):
  """1.0 where the top-1 class is the label."""
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
