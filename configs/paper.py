"""The paper's experiments on Caltech101/256 at 224 px with ImageNet classifiers (Section IV).

One run (one method) of the paper; configs/suites/paper.py runs them all and writes the report.

Run, e.g.:
  python -m qrnet_jax.main --workdir runs/caltech101_qrnet \
    --config configs/paper.py:dataset=caltech101,method=qrnet \
    --config.data.data_dir=/data/caltech101 \
    --config.classifiers.vgg16.keras_h5=/weights/vgg16_weights_tf_dim_ordering_tf_kernels.h5

Methods (configs/methods.py): classifier, recnet_noise, recnet_blur, recnet, qrnet, small_qrnet,
finetuned_noise, finetuned_blur, finetuned, end_to_end, mqrnet.

The VGG16 (and InceptionV3, ResNet50) "trained with the original images" keep their ImageNet
convolutions and fine-tune their FC layers / head on the clean training split first
(`clean_trainable`); set `classifiers.NAME.checkpoint` to reuse one such classifier across all
methods, so that every method is compared with the same classifier (the suite does this).
"""
from configs import default, methods

METHODS = methods.METHODS
DATASETS = ('caltech101', 'caltech256')


def _parse(arg, options):
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in options:
      raise ValueError(f'unknown option {key!r}; allowed: {sorted(options)}')
    options[key] = value
  if options['dataset'] not in DATASETS:
    raise ValueError(f'dataset={options["dataset"]!r}; allowed: {DATASETS}')
  return options


def base_config(dataset):
  """What every method of the paper shares (Section IV-A)."""
  config = default.get_config()
  config.data.name = dataset
  config.data.image_size = 224
  config.data.max_train_examples = 0  # the whole split: the paper's numbers need it
  config.data.max_eval_examples = 0
  config.data.cache = 'disk'  # decoded once, shared by every run
  config.train.pretrain_epochs = 5
  config.train.max_epochs = 200
  config.train.log_every_steps = 50
  config.model.dtype = 'float32'
  return config


def classifiers():
  """(name, config) of VGG16, InceptionV3 and ResNet50 from their ImageNet weights, with the
  FC layers (VGG16) or the head (the others) fine-tuned on the clean training split."""
  vgg16 = default.classifier_config('vgg16', train_epochs=20, imagenet=True)
  vgg16.clean_trainable = 'fc'  # the paper fine-tunes VGG16's three FC layers
  inception = default.classifier_config('inception_v3', train_epochs=20, imagenet=True)
  inception.clean_trainable = 'head'
  resnet = default.classifier_config('resnet50', train_epochs=20, imagenet=True)
  resnet.clean_trainable = 'head'
  return ('vgg16', vgg16), ('inception_v3', inception), ('resnet50', resnet)


def get_config(arg=None):
  options = _parse(arg, dict(dataset='caltech101', method='qrnet'))
  if options['method'] not in METHODS:
    raise ValueError(f'configs/paper.py: method={options["method"]!r}; allowed: {METHODS}')
  vgg16, inception, resnet = classifiers()
  return methods.method_config(base_config(options['dataset']), options['method'],
                               classifier=vgg16, second=inception, unseen=resnet)
