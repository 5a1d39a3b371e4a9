"""Native operations: oneDNN convolutions through jax.ffi (onednn.py) and the switch (conv.py)."""
