"""Port the official Keras ImageNet weight files (.h5) to this package's Linen classifiers.

File layout (Keras' legacy HDF5 weights format): the root (or its `model_weights` group)
has an attribute `layer_names`; each layer's group has an attribute `weight_names`
(empty for weightless layers) naming its datasets in the order Keras creates them,
trainable first: Conv/Dense kernel, bias; BatchNorm gamma (absent with scale=False),
beta, moving_mean, moving_variance. Names come in two spellings, both read here:
Keras 1 flat `block1_conv1_W_1:0` (the VGG16 file) and Keras 2 nested `conv2d_1/kernel:0`.

Conv kernels are HWIO and Dense kernels (in, out) in both Keras and Flax, so no array is
transposed; the Linen submodules carry the Keras layer names, so the mapping is by name,
and within a layer by weight order. The result is checked strictly against the module's
own init structure: every array present, every shape equal, nothing left over.
"""

from typing import Any, Iterator, Optional, Union

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from qrnet_jax.models.classifiers import build_classifier, input_size

# Families with official Keras ImageNet files.
KERAS_ARCHS = ('vgg16', 'inception_v3', 'resnet50')
IMAGENET_CLASSES = 1000
HEAD = 'predictions'

# (collection, Flax name) of each weight in Keras order, with the Keras 2 and Keras 1 names.
_DENSE_OR_CONV_WEIGHTS = ((('params', 'kernel'), 'kernel', 'W'), (('params', 'bias'), 'bias', 'b'))
_BATCH_NORM_WEIGHTS = ((('params', 'scale'), 'gamma', 'gamma'),
                       (('params', 'bias'), 'beta', 'beta'),
                       (('batch_stats', 'mean'), 'moving_mean', 'running_mean'),
                       (('batch_stats', 'var'), 'moving_variance', 'running_std'))

Variables = dict[str, dict[str, dict[str, Any]]]


class KerasH5Error(ValueError):
  """The .h5 file does not hold the weights of the requested architecture."""


def _name_list(attrs: h5py.AttributeManager, name: str) -> list[str]:
  """A list-of-names attribute; Keras splits long ones into `<name>0`, `<name>1`, ..."""
  if name in attrs:
    values = list(attrs[name])
  else:
    values, chunk = [], 0
    while f'{name}{chunk}' in attrs:
      values.extend(attrs[f'{name}{chunk}'])
      chunk += 1
  return [v.decode('utf8') if isinstance(v, bytes) else str(v) for v in values]


def _weights_root(f: h5py.File) -> h5py.Group:
  # Whole-model saves keep the weights under 'model_weights'; weight files at the root.
  has_names = 'layer_names' in f.attrs or 'layer_names0' in f.attrs
  return f if has_names or 'model_weights' not in f else f['model_weights']


def iter_h5_layers(root: h5py.Group) -> Iterator[tuple[str, list[tuple[str, h5py.Dataset]]]]:
  """(layer name, [(weight name, dataset), ...]) for each layer with weights, in file order."""
  for layer in _name_list(root.attrs, 'layer_names'):
    group = root[layer]
    weight_names = _name_list(group.attrs, 'weight_names')
    if weight_names:
      yield layer, [(w, group[w]) for w in weight_names]


def keras_weight_slots(layer_params: dict, layer_stats: Optional[dict]) -> list[tuple]:
  """The (collection, Flax name) slots of one layer, in Keras' weight order.

  Returns a list of ((collection, name), keras2_name, keras1_name) for the weights this
  layer actually has: a BatchNorm has batch_stats; anything else is a kernel (+ bias).
  """
  table = _BATCH_NORM_WEIGHTS if layer_stats is not None else _DENSE_OR_CONV_WEIGHTS
  present = {('params', k) for k in layer_params} | {('batch_stats', k) for k in layer_stats or {}}
  return [slot for slot in table if slot[0] in present]


def expected_variables(arch: str, num_classes: int = IMAGENET_CLASSES) -> Variables:
  """Abstract (ShapeDtypeStruct) variables of `arch` at its ImageNet input size."""
  module = build_classifier(arch, num_classes)
  side = input_size(arch)
  images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  return jax.eval_shape(module.init, jax.random.key(0), images)


def _layer_names(variables: Variables) -> list[str]:
  names = set(variables['params']) | set(variables.get('batch_stats', {}))
  return sorted(names)


def _short_list(names: list[str], limit: int = 8) -> str:
  more = f' ... ({len(names)} in all)' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


def _guess_arch(file_layers: dict) -> str:
  # Each official file has a layer name no other one has.
  for arch, marker in (('vgg16', 'block1_conv1'), ('inception_v3', 'conv2d_94'),
                       ('resnet50', 'conv5_block3_3_conv')):
    if marker in file_layers:
      return f'its layer names are those of {arch}'
  return 'its layer names match none of ' + ', '.join(KERAS_ARCHS)


def _new_head(layer: dict, rng: Union[int, jax.Array]) -> dict:
  """A freshly initialised `predictions` Dense of the abstract layer's shapes (Flax defaults)."""
  key = jax.random.key(rng) if isinstance(rng, int) else rng
  in_features, num_classes = layer['kernel'].shape
  params = nn.Dense(num_classes).init(key, jnp.zeros((1, in_features), jnp.float32))['params']
  return jax.tree.map(np.asarray, params)


def load_keras_h5(path: str, arch: str, num_classes: int = IMAGENET_CLASSES,
                  rng: Union[int, jax.Array] = 0) -> Variables:
  """Variables {'params', 'batch_stats'} of `arch` ported from an official Keras .h5 file.

  Args:
    path: the Keras application weight file (see qrnet_jax.weights.fetch.KERAS_WEIGHTS).
    arch: 'vgg16', 'inception_v3' or 'resnet50'.
    num_classes: 1000 takes the file's ImageNet head; any other value keeps every other
      layer (VGG16's fc1 and fc2 included) and initialises a new `predictions` head.
    rng: int seed or jax key for the new head (unused with 1000 classes).

  Returns:
    Nested dicts of float32 numpy arrays with exactly the structure of
    `build_classifier(arch, num_classes).init(...)` (no 'batch_stats' for VGG16).

  Raises:
    KerasH5Error: naming the missing layers, the unexpected layers, or the layer and
      weight whose shape differs (expected vs file), all problems at once.
  """
  if arch not in KERAS_ARCHS:
    raise ValueError(f'No Keras ImageNet file for arch {arch!r}; expected one of {KERAS_ARCHS}.')
  expected = expected_variables(arch, num_classes)
  params, stats = expected['params'], expected.get('batch_stats', {})
  new_head = num_classes != IMAGENET_CLASSES
  wanted = [name for name in _layer_names(expected) if not (new_head and name == HEAD)]

  ported: Variables = {collection: {} for collection in expected}
  problems: list[str] = []
  with h5py.File(path, 'r') as f:
    file_layers = dict(iter_h5_layers(_weights_root(f)))
    missing = [name for name in wanted if name not in file_layers]
    unexpected = [name for name in file_layers if name not in params and name not in stats]
    if len(missing) > len(wanted) // 2:
      problems.append(f'most layers of {arch} are not in the file: is it the file of another '
                      f'architecture? ({_guess_arch(file_layers)})')
    if missing:
      problems.append(f'missing layers: {_short_list(missing)}')
    if unexpected:
      problems.append(f'unexpected layers: {_short_list(unexpected)}')
    for name in wanted:
      if name not in file_layers:
        continue
      slots = keras_weight_slots(params.get(name, {}), stats.get(name))
      file_weights = file_layers[name]
      if len(file_weights) != len(slots):
        problems.append(
            f'layer {name}: expected {len(slots)} weights ({", ".join(s[1] for s in slots)}), '
            f'file has {len(file_weights)} ({", ".join(w for w, _ in file_weights)})')
        continue
      for ((collection, leaf), keras_name, _), (file_name, dataset) in zip(slots, file_weights):
        want = tuple(expected[collection][name][leaf].shape)
        if tuple(dataset.shape) != want:
          problems.append(f'layer {name} weight {keras_name} ({file_name}): expected shape '
                          f'{want}, file shape {tuple(dataset.shape)}')
          continue
        ported[collection].setdefault(name, {})[leaf] = np.asarray(dataset, dtype=np.float32)
  if problems:
    raise KerasH5Error(f'{path} does not match {arch} with {num_classes} classes:\n  '
                       + '\n  '.join(problems))
  if new_head:
    ported['params'][HEAD] = _new_head(params[HEAD], rng)
  check_structure(ported, expected)
  return ported


def check_structure(variables: Variables, expected: Variables) -> None:
  """Raises KerasH5Error unless both trees have the same paths and the same shapes."""
  have = {jax.tree_util.keystr(p): np.shape(x)
          for p, x in jax.tree_util.tree_leaves_with_path(variables)}
  want = {jax.tree_util.keystr(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(expected)}
  problems = [f'missing {p}' for p in want if p not in have]
  problems += [f'left over {p}' for p in have if p not in want]
  problems += [f'{p}: expected shape {want[p]}, got {have[p]}'
               for p in want if p in have and have[p] != want[p]]
  if problems:
    raise KerasH5Error('variables do not match the module:\n  ' + '\n  '.join(problems))


def write_keras_h5(path: str, variables: Variables, naming: str = 'nested') -> None:
  """Writes Linen classifier variables in the official Keras layout (the loader's inverse).

  naming: 'nested' (Keras 2, `conv2d_1/kernel:0`) or 'flat' (Keras 1, `fc1_W_1:0`).
  Leaves may be arrays or jax.ShapeDtypeStruct: the latter become unwritten datasets
  that read back as zeros, a cheap full-size file for structure tests. Layers are
  written in sorted name order: this package's loader maps by name, Keras by order.
  """
  if naming not in ('nested', 'flat'):
    raise ValueError(f'naming must be "nested" or "flat", not {naming!r}.')
  params, stats = variables['params'], variables.get('batch_stats', {})
  layers = _layer_names(variables)
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = np.array([n.encode('utf8') for n in layers])
    for name in layers:
      group = f.create_group(name)
      weight_names = []
      for (collection, leaf), keras2_name, keras1_name in keras_weight_slots(
          params.get(name, {}), stats.get(name)):
        value = variables[collection][name][leaf]
        if naming == 'nested':
          weight_name = f'{name}/{keras2_name}:0'
        else:
          weight_name = f'{name}_{keras1_name}_1:0'
        if isinstance(value, jax.ShapeDtypeStruct):
          group.create_dataset(weight_name, shape=value.shape, dtype=np.float32)
        else:
          group.create_dataset(weight_name, data=np.asarray(value, dtype=np.float32))
        weight_names.append(weight_name.encode('utf8'))
      group.attrs['weight_names'] = np.array(weight_names)
