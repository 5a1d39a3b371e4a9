"""The embedded reproduction (the README's main job): the paper's whole suite on Fashion-MNIST.

Run (each command resumes where an earlier one stopped; finished runs are skipped):
  python -m qrnet_jax.main --config configs/suites/default.py --workdir runs/default
  ... --only table2        # only Table 2's runs (and the classifiers they read)
  --config configs/suites/default.py:full    # the whole dataset and the paper's epochs (CPU: days)
  --config configs/suites/default.py:quick   # generated data at 16 px, for smoke runs and tests

The same experiment as the paper's (configs/suites/paper.py) at CPU scale: 32 px images, the small
classifier families (VGG-style for QRNet, VGG-style + Inception-style for MQRNet, ResNet-style as
the unseen classifier), each trained once on clean images and read by every method.

Distortions: noise keeps the paper's sigmas (0-255 units). Blur sigmas are the paper's x 2/7
(0.57-2.86 px, kernels 3-11): the paper's pixel sigmas on a 32 px image (sigma 10 with a 39-tap
kernel) erase it, and scaled by resolution alone (x 32/224: 0.29-1.43 px) they barely hurt this
data. The subset (a seeded, stratified-by-chance random subset of each split) and the epochs are
chosen so that the whole suite finishes in about 20 minutes on a 2-core CPU.
"""
import ml_collections

from configs import default, methods

BLUR_SCALE = 2 / 7


def base_config(variant=''):
  """The run config every method of this suite starts from."""
  config = default.get_config()
  config.distortion.blur_levels = tuple(round(s * BLUR_SCALE, 4)
                                        for s in config.distortion.blur_levels)
  config.data.max_train_examples = 800
  config.data.max_eval_examples = 300  # validation and test each
  config.train.pretrain_epochs = 1
  config.train.max_epochs = 2
  config.train.log_every_steps = 20
  if variant == 'full':  # the whole splits, the paper's epochs and early stopping
    config.data.max_train_examples = 0
    config.data.max_eval_examples = 0
    config.train.pretrain_epochs = 5
    config.train.max_epochs = 200
  if variant == 'quick':  # generated images, no files, one epoch, small QRNets: smoke runs, tests
    config.data.name = 'synthetic'
    config.data.image_size = 16
    config.data.num_examples = 160
    config.data.num_classes = 4
    config.data.max_train_examples = 0
    config.data.max_eval_examples = 0
    config.train.batch_size = 16
    config.model.small = True  # every restorer: the suite's machinery, not its numbers
    config.train.pretrain_epochs = 0
    config.train.max_epochs = 1
    config.train.log_every_steps = 4
    config.train.checkpoint_every_steps = 2
  return config


def classifier(arch, variant=''):
  return (arch, default.classifier_config(
      arch, train_epochs={'quick': 1, 'full': 30}.get(variant, 15)))


def get_config(variant=''):
  variant = variant or ''
  if variant not in ('', 'full', 'quick'):
    raise ValueError(f'configs/suites/default.py: unknown variant {variant!r}; allowed: full, '
                     'quick (or none)')
  config = ml_collections.ConfigDict()
  config.experiments = ml_collections.ConfigDict()
  config.experiments.fashion_mnist = methods.paper_experiment(
      base_config(variant), title='Fashion-MNIST at 32 px, small classifiers'
      + (' (whole dataset)' if variant == 'full' else ''),
      classifier=classifier('small_vgg', variant), second=classifier('small_inception', variant),
      unseen=classifier('small_resnet', variant),
      finetune_epochs=5 if variant == '' else 0)  # 2x the images per epoch; the time budget
  if variant == 'quick':
    config.experiments.fashion_mnist.title = 'Generated images at 16 px (quick)'
  # Two runs at a time: one compiles (one core) while the other computes. About 20 % less wall
  # time on 2 cores; each run's numbers are the same as when it runs alone.
  config.concurrent_runs = 2
  config.latency = ml_collections.ConfigDict(dict(batch_sizes=(1, 32), repeats=20))
  return config
