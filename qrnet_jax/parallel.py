"""Data parallelism: one 'data' mesh axis over every device of every process.

Parameters are replicated and the global batch is sharded on 'data'; jit then computes the loss
over the global batch, so gradients are averaged across devices as pmap's psum/mean would.
"""
from typing import Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's slice of a batch into global arrays sharded on 'data'."""
  sharding = batch_sharded(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}


def replicate(tree, mesh: Mesh):
  """Places a pytree that every process holds identically on every device of the mesh.

  Built from each process's own copy: a plain device_put onto devices of other processes would
  first compare the values across processes, one slow collective per array.
  """
  sharding = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x)),
      jax.device_get(tree))


def to_host(tree):
  """A pytree of global arrays as numpy arrays on every process: the whole arrays, also where
  each process holds only its own shards (several hosts)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree)
