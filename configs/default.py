"""The embedded default run: Fashion-MNIST at 32 px, QRNet against a small frozen classifier.

Run:
  python -m qrnet_jax.main --config configs/default.py --workdir /tmp/qrnet_default

The classifier is first trained on clean images (in WORKDIR/classifiers/NAME), then frozen, and
QRNet is pretrained on clean images and trained with Algorithm 1 against it. Sized for a 2-core
CPU (a few minutes): a fixed subset of the splits; set data.max_*_examples=0 for all of them.
Fashion-MNIST is read from /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist),
or data.data_dir, or fetched when online. For data without any file: --config.data.name=synthetic.
"""
import ml_collections

from qrnet_jax import distortions


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'  # or synthetic, folder, caltech101, caltech256, tfds
  config.data.image_size = 32  # 28 px grey images, squashed to 32 px RGB
  config.data.data_dir = ''
  config.data.max_train_examples = 3000  # 0 = the whole split
  config.data.max_eval_examples = 1000  # the validation split (and test, unless the next is set)
  config.data.max_test_examples = None  # the test split's subset; None: as max_eval_examples
  config.data.resize = 'squash'  # or center_crop
  config.data.cache = 'memory'  # decoded images: memory, disk or none
  config.data.cache_dir = ''
  config.data.num_workers = 0  # 0: decode in threads of the main process; N: grain workers
  config.data.split_file = ''  # '' = beside the data (or ~/.cache/qrnet_jax/NAME)
  config.data.split_seed = 0  # the 80/20 then 20 % split is made once from this seed
  config.data.keep_background_class = False  # caltech101 BACKGROUND_Google, caltech256 clutter
  config.data.archive_checksum = ''  # '' = the official archives' checksums
  config.data.download = True  # fashion_mnist: fetch the files when found nowhere
  config.data.tfds_name = ''
  config.data.tfds_image_key = 'image'
  config.data.tfds_label_key = 'label'
  config.data.num_examples = 1500  # synthetic only
  config.data.num_classes = 10  # synthetic only

  config.model = ml_collections.ConfigDict()
  config.model.small = False
  config.model.dropout_rate = 0.2
  config.model.dtype = 'float32'
  # Convolutions: 'auto' (oneDNN on CPU when built, else XLA), 'xla' or 'onednn'. qrnet_jax/ops.
  config.model.conv_impl = 'auto'

  config.distortion = ml_collections.ConfigDict()
  config.distortion.types = ('noise', 'blur')
  config.distortion.noise_levels = distortions.PAPER_LEVELS['noise']
  config.distortion.blur_levels = distortions.PAPER_LEVELS['blur']
  # Types may also be ImageNet-C's corruption families (distortions.TYPES, docs/corruptions.md),
  # drawn by Algorithm 1 as noise and blur are, at these severities (1-5).
  config.distortion.severities = (1, 2, 3, 4, 5)
  # The types the test split is evaluated on; empty: those trained on (distortion.types).
  config.distortion.eval_types = ()

  # One entry per classifier in Eq. (5): the key is its name.
  config.classifiers = ml_collections.ConfigDict()
  config.classifiers.small_vgg = classifier_config('small_vgg')

  # Classifiers only evaluated with QRNet's output, never trained against (MQRNet's unseen ResNet).
  config.eval_classifiers = ml_collections.ConfigDict()

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32  # clean images per step; Algorithm 1 doubles it
  # Test evaluation's global batch: forward passes only, so larger than training's (at 32 px on
  # 2 CPU cores, 256 evaluates about twice as many images per second as 32).
  config.train.eval_batch_size = 256
  config.train.learning_rate = 1e-3
  config.train.pretrain_epochs = 1
  config.train.max_epochs = 5
  config.train.early_stopping_patience = 5
  config.train.log_every_steps = 10
  config.train.checkpoints_to_keep = 2
  # Also checkpoint inside an epoch every this many steps (0: only at epoch ends), so a killed
  # run loses at most this many steps; the data order resumes mid-epoch.
  config.train.checkpoint_every_steps = 200
  # Accuracy, PSNR and SSIM per distortion level on the test split, with the best checkpoint.
  config.train.evaluate_test = True
  return config


def classifier_config(arch, weight=0.01, trainable='none', checkpoint='', train_epochs=8,
                      imagenet=False, train_distorted=False, init_checkpoint=''):
  """A classifier of Eq. (5).

  Args:
    arch: one of qrnet_jax.models.classifiers.CLASSIFIERS.
    weight: its lambda_i in Eq. (5) (paper: 0.01).
    trainable: which named part trains with QRNet ('none' = frozen; 'fc' = end-to-end mode).
    checkpoint: Orbax checkpoint of its variables; empty = train it on clean images first.
    train_epochs: epochs of that clean training when there is no checkpoint.
    imagenet: start that training from the official Keras ImageNet weights: the file at
      `keras_h5`, or else fetched into ~/.cache/qrnet_jax/weights (vgg16, inception_v3, resnet50).
    train_distorted: train it on Algorithm 1 batches of clean + distorted images (config.distortion)
      instead of clean images: Table 4's fine-tuned classifiers.
    init_checkpoint: start that training from this classifier checkpoint (e.g. the one trained on
      clean images, which Table 4's fine-tuning starts from) instead of ImageNet weights or a
      random initialisation.
  """
  return ml_collections.ConfigDict(dict(
      arch=arch, weight=weight, trainable=trainable, checkpoint=checkpoint,
      train_epochs=train_epochs, learning_rate=1e-3, imagenet=imagenet, keras_h5='',
      clean_trainable='all', train_distorted=train_distorted, init_checkpoint=init_checkpoint))
