"""Test-wide setup: four simulated CPU devices, so data-parallel code is exercised.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before jax is imported.
A test that needs one device builds its mesh from jax.devices()[:1].
"""
import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("KERAS_BACKEND", "jax")
# TFDS must not probe GCS metadata servers (there is no network here).
os.environ.setdefault("NO_GCE_CHECK", "true")
# One persistent compilation cache for the session (subprocesses inherit it), so runs that compile
# the same step, e.g. a killed and a resumed training run, compile it once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "qrnet_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
