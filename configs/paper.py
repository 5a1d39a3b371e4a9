"""The paper's experiments on Caltech101/256 at 224 px with ImageNet classifiers (Section IV).

Run, e.g.:
  python -m qrnet_jax.main --workdir runs/caltech101_qrnet \
    --config configs/paper.py:dataset=caltech101,method=qrnet \
    --config.data.data_dir=/data/caltech101 \
    --config.classifiers.vgg16.keras_h5=/weights/vgg16_weights_tf_dim_ordering_tf_kernels.h5

Methods (Tables 2-4, Figure 6):
  recnet_noise, recnet_blur  RecNet (single): L1 only, one distortion type each.
  recnet                      RecNet (multiple): L1 only, noise and blur.
  qrnet                       QRNet + frozen VGG16 (Eq. 4), noise and blur.
  small_qrnet                 Table 3's small QRNet + frozen VGG16.
  end_to_end                  QRNet and VGG16's three FC layers trained together.
  mqrnet                      MQRNet: QRNet + frozen VGG16 and InceptionV3 (Eq. 5).
  finetuned_noise, finetuned_blur, finetuned
                              Table 4's fine-tuned VGG16 (single, single, multiple): its FC layers
                              trained on batches of clean + distorted images, no QRNet; read the
                              "none" columns of the results.

The VGG16 (and InceptionV3) "trained with the original images" keep their ImageNet convolutions
and fine-tune their FC layers / head on the clean training split first (`clean_trainable`); set
`classifiers.NAME.checkpoint` to reuse one such classifier across all methods, so that every method
is compared with the same classifier.
"""
import ml_collections

from configs import default

METHODS = ('recnet_noise', 'recnet_blur', 'recnet', 'qrnet', 'small_qrnet', 'end_to_end', 'mqrnet',
           'finetuned_noise', 'finetuned_blur', 'finetuned')
DATASETS = ('caltech101', 'caltech256')


def _parse(arg):
  options = dict(dataset='caltech101', method='qrnet')
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in options:
      raise ValueError(f'configs/paper.py: unknown option {key!r}; allowed: {sorted(options)}')
    options[key] = value
  if options['dataset'] not in DATASETS:
    raise ValueError(f'configs/paper.py: dataset={options["dataset"]!r}; allowed: {DATASETS}')
  if options['method'] not in METHODS:
    raise ValueError(f'configs/paper.py: method={options["method"]!r}; allowed: {METHODS}')
  return options


def get_config(arg=None):
  options = _parse(arg)
  config = default.get_config()
  config.data.name = options['dataset']
  config.data.image_size = 224
  config.data.max_train_examples = 0  # the whole split: the paper's numbers need it
  config.data.max_eval_examples = 0
  config.train.pretrain_epochs = 5
  config.train.max_epochs = 200
  config.train.log_every_steps = 50
  config.model.dtype = 'float32'

  vgg16 = default.classifier_config('vgg16', train_epochs=20, imagenet=True)
  vgg16.clean_trainable = 'fc'  # the paper fine-tunes VGG16's three FC layers
  method = options['method']
  config.classifiers = ml_collections.ConfigDict()
  if method.startswith(('recnet_', 'finetuned_')):
    config.distortion.types = (method.split('_')[1],)  # "single"
  if method.startswith('recnet'):
    config.eval_classifiers.vgg16 = vgg16  # RecNet + VGG16 (Table 2): VGG16 only evaluates
  elif method.startswith('finetuned'):
    vgg16.train_distorted = True
    config.eval_classifiers.vgg16 = vgg16
    config.train.pretrain_epochs = 0
    config.train.max_epochs = 0  # no QRNet: the classifier alone faces the distortions
  else:
    config.classifiers.vgg16 = vgg16
  if method == 'small_qrnet':
    config.model.small = True
  if method == 'end_to_end':
    config.classifiers.vgg16.trainable = 'fc'
  if method == 'mqrnet':
    inception = default.classifier_config('inception_v3', train_epochs=20, imagenet=True)
    inception.clean_trainable = 'head'
    config.classifiers.inception_v3 = inception
    resnet = default.classifier_config('resnet50', train_epochs=20, imagenet=True)
    resnet.clean_trainable = 'head'
    config.eval_classifiers.resnet50 = resnet  # the unseen classifier of Figure 6
  return config
