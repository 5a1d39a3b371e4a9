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

# Section IV-A: at most 200 epochs, early stopping after 5 epochs without a better validation
# loss; for QRNet as for the classifiers trained on clean images.
MAX_EPOCHS = 200
EARLY_STOPPING_PATIENCE = 5


def parse_options(arg, defaults, config_file):
  """{option: value} of a config argument 'key=value,...' over `defaults`: an option not in
  `defaults`, a dataset not in DATASETS or a method not in METHODS is refused naming
  `config_file`. A default of None is left as it is (the suite's: every dataset)."""
  options = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in options:
      raise ValueError(f'{config_file}: unknown option {key!r}; allowed: '
                       f'{", ".join(sorted(options))}')
    options[key] = value
  for key, allowed in (('dataset', DATASETS), ('method', METHODS)):
    if options.get(key) is not None and options[key] not in allowed:
      raise ValueError(f'{config_file}: {key}={options[key]!r}; allowed: {", ".join(allowed)}')
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
  config.train.max_epochs = MAX_EPOCHS
  config.train.early_stopping_patience = EARLY_STOPPING_PATIENCE
  config.train.log_every_steps = 50
  config.model.dtype = 'float32'
  return config


def classifiers():
  """(name, config) of VGG16, InceptionV3 and ResNet50 from their ImageNet weights, with the
  FC layers (VGG16) or the head (the others) fine-tuned on the clean training split, by the
  paper's rule (at most MAX_EPOCHS, early stopping by train.early_stopping_patience)."""
  vgg16 = default.classifier_config('vgg16', train_epochs=MAX_EPOCHS, imagenet=True)
  vgg16.clean_trainable = 'fc'  # the paper fine-tunes VGG16's three FC layers
  inception = default.classifier_config('inception_v3', train_epochs=MAX_EPOCHS, imagenet=True)
  inception.clean_trainable = 'head'
  resnet = default.classifier_config('resnet50', train_epochs=MAX_EPOCHS, imagenet=True)
  resnet.clean_trainable = 'head'
  return ('vgg16', vgg16), ('inception_v3', inception), ('resnet50', resnet)


def get_config(arg=None):
  options = parse_options(arg, dict(dataset='caltech101', method='qrnet'), 'configs/paper.py')
  vgg16, inception, resnet = classifiers()
  return methods.method_config(base_config(options['dataset']), options['method'],
                               classifier=vgg16, second=inception, unseen=resnet)
