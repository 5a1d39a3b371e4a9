"""The embedded reproduction (the README's main job): the paper's findings on Fashion-MNIST.

Run (each command resumes where an earlier one stopped; finished runs are skipped):
  python -m qrnet_jax.main --config configs/suites/default.py --workdir runs/default
  ... --only table2        # only Table 2's runs (and the classifiers they read)
  --config configs/suites/default.py:all     # every method of the paper at the same scale
  --config configs/suites/default.py:full    # the whole dataset and the paper's epochs (CPU: days)
  --config configs/suites/default.py:quick   # generated data at 16 px, for smoke runs and tests
  --config configs/suites/default.py:seeds=3 # every run with 3 seeds, classifiers included (also
                                             # all,seeds=3): the report adds the methods' and the
                                             # findings' spread over seeds

The same experiment as the paper's (configs/suites/paper.py) at CPU scale: 32 px images, the small
classifier families (VGG-style for QRNet, VGG-style + Inception-style for MQRNet, ResNet-style as
the unseen classifier), each trained on clean images until its validation loss stops improving,
and read by every method.

The main job is sized to finish within 20 minutes on a 2-core CPU with enough images to resolve
the paper's central claims (QRNet + C against C on noise and blur, QRNet's cost on clean images,
the unseen classifier): the classifiers C, U and MQRNet's second, RecNet (multiple), QRNet and
MQRNet, tested on 5,000 images. The paper's other methods (RecNet single, small QRNet, fine-tuned
classifiers, end-to-end) run in the `all` variant, at the same scale (13 runs).

Main job time: 18 min 2 s from a fresh clone at commit f6be160 (16 min 24 s at 3871948), set-up
included (2-core x86_64).

Distortions: noise keeps the paper's sigmas (0-255 units). Blur sigmas are the paper's x 2/7
(0.57-2.86 px, kernels 3-11): the paper's pixel sigmas on a 32 px image (sigma 10 with a 39-tap
kernel) erase it, and scaled by resolution alone (x 32/224: 0.29-1.43 px) they barely hurt this
data. The subsets are seeded random subsets of each split.
"""
import ml_collections

from configs import default, methods

BLUR_SCALE = 2 / 7


def base_config(variant=''):
  """The run config every method of this suite starts from."""
  config = default.get_config()
  config.distortion.blur_levels = tuple(round(s * BLUR_SCALE, 4)
                                        for s in config.distortion.blur_levels)
  config.data.max_train_examples = 6000
  config.data.max_eval_examples = 1000  # validation: every epoch of every run
  config.data.max_test_examples = 5000  # once per run: what the findings' intervals rest on
  config.train.pretrain_epochs = 1
  config.train.max_epochs = 4
  config.train.log_every_steps = 50
  if variant == 'full':  # the whole splits, the paper's epochs and early stopping
    config.data.max_train_examples = 0
    config.data.max_eval_examples = 0
    config.data.max_test_examples = 0
    config.train.pretrain_epochs = 5
    config.train.max_epochs = 200
  if variant == 'quick':  # generated images, no files, one epoch, small QRNets: smoke runs, tests
    config.data.name = 'synthetic'
    config.data.image_size = 16
    config.data.num_examples = 160
    config.data.num_classes = 4
    config.data.max_train_examples = 0
    config.data.max_eval_examples = 0
    config.data.max_test_examples = 0
    config.train.batch_size = 16
    config.model.small = True  # every restorer: the suite's machinery, not its numbers
    config.train.pretrain_epochs = 0
    config.train.max_epochs = 1
    config.train.log_every_steps = 4
    config.train.checkpoint_every_steps = 2
  return config


def classifier(arch, variant=''):
  """A classifier trained on clean images until its validation loss has not improved for
  train.early_stopping_patience epochs (at most 50; the whole dataset: the paper's 200)."""
  return (arch, default.classifier_config(
      arch, train_epochs={'quick': 1, 'full': 200}.get(variant, 50)))


# The main job's methods: those its findings need most (Table 2's QRNet and RecNet, Figure 6's
# MQRNet and the unseen classifier).
MAIN_METHODS = ('recnet', 'qrnet', 'mqrnet')


def parse_variant(arg):
  """'all,seeds=3' -> ('all', 3): a scale (none, all, full, quick) and the number of seeds."""
  scale, seeds = '', 1
  for token in filter(None, (arg or '').split(',')):
    key, _, value = token.partition('=')
    if key == 'seeds' and value.isdigit() and int(value) >= 1:
      seeds = int(value)
    elif not value and key in ('all', 'full', 'quick') and not scale:
      scale = key
    else:
      raise ValueError(f'configs/suites/default.py: unknown variant {token!r} in {arg!r}; '
                       'allowed: all, full or quick, and seeds=N (N >= 1), comma-separated')
  return scale, seeds


def get_config(arg=''):
  variant, seeds = parse_variant(arg)
  config = ml_collections.ConfigDict()
  config.experiments = ml_collections.ConfigDict()
  config.experiments.fashion_mnist = methods.paper_experiment(
      base_config(variant), title='Fashion-MNIST at 32 px, small classifiers'
      + (' (whole dataset)' if variant == 'full' else ''),
      classifier=classifier('small_vgg', variant), second=classifier('small_inception', variant),
      unseen=classifier('small_resnet', variant),
      finetune_epochs={'': 10, 'all': 10}.get(variant, 0),  # 2x the images per epoch
      methods=MAIN_METHODS if variant == '' else methods.METHODS[1:], seeds=seeds)
  if variant == 'quick':
    config.experiments.fashion_mnist.title = 'Generated images at 16 px (quick)'
  # Two runs at a time: one compiles (one core) while the other computes. About 20 % less wall
  # time on 2 cores; each run's numbers are the same as when it runs alone.
  config.concurrent_runs = 2
  config.latency = ml_collections.ConfigDict(dict(batch_sizes=(1, 32), repeats=20))
  return config
