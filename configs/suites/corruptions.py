"""The corruption suite (issue 21): restorers and a fine-tuned classifier on ImageNet-C's families.

Run (resumes as the main job does; scripts/run_corruptions.sh adds the set-up):
  python -m qrnet_jax.main --config configs/suites/corruptions.py --workdir runs/corruptions
  --config configs/suites/corruptions.py:quick   # generated data at 16 px, for smoke runs and tests

Four methods on the main job's data (embedded Fashion-MNIST at 32 px, configs/suites/default.py's
base config and classifier C), each evaluated on all 19 corruption families (ImageNet-C's 15 and
its 4 held-out ones) at severities 1-5 and on clean images:
  classifier_small_vgg   C alone, trained on clean images: the baseline of the corruption errors;
  finetuned_seen         C fine-tuned on Algorithm 1's clean + corrupted batches of SEEN;
  qrnet_paper            QRNet + C trained on the paper's noise and blur (the main job's levels);
  qrnet_seen             QRNet + C trained on SEEN, drawn by Algorithm 1 as noise and blur are.
SEEN holds one family from each of ImageNet-C's four groups (noise, blur, weather, digital), so
every unseen family has a seen sibling and the held-out four are unseen by all. Corruption
lengths scale with the image (docs/corruptions.md), so 32 px images get ImageNet-C's look.

Sized to finish well inside 20 minutes on the 2-core CPU: fewer training images and epochs than
the main job (4,000 / 1 + 3), 1,000 test images at 96 levels each (clean and 19 families x 5
severities). From a fresh clone here: 12 min 42 s, set-up included (docs/corruptions.md).
"""
import ml_collections

from configs import methods
from configs.suites import default as main_suite
from qrnet_jax import corruptions
from qrnet_jax.run_names import classifier_run

SEEN = ('gaussian_noise', 'motion_blur', 'fog', 'jpeg_compression')
TAGS = ('corruptions',)


def base_config(variant=''):
  """The main job's run config, smaller, evaluated on every corruption family."""
  config = main_suite.base_config(variant)
  config.distortion.eval_types = corruptions.IMAGENET_C + corruptions.HELD_OUT
  if variant != 'quick':
    config.data.max_train_examples = 4000
    config.data.max_test_examples = 1000
    config.train.max_epochs = 3
  return config


def get_config(arg=''):
  if arg not in ('', 'quick'):
    raise ValueError(f'configs/suites/corruptions.py: unknown variant {arg!r}; allowed: quick')
  base = base_config(arg)
  c = main_suite.classifier('small_vgg', arg)
  trained_by = {c[0]: classifier_run(c[0])}
  runs = ml_collections.ConfigDict()
  runs[classifier_run(c[0])] = methods.run_spec(
      methods.method_config(base, 'classifier', classifier=c), TAGS)
  for name, method, types in (('finetuned_seen', 'finetuned', SEEN),
                              ('qrnet_paper', 'qrnet', ('noise', 'blur')),
                              ('qrnet_seen', 'qrnet', SEEN)):
    config = methods.method_config(base, method, classifier=c)
    config.distortion.types = types
    if method == 'finetuned':  # 2x the images per epoch, from the clean-trained classifier
      config.eval_classifiers[c[0]].train_epochs = 1 if arg == 'quick' else 5
    runs[name] = methods.run_spec(config, TAGS, trained_by)
  config = ml_collections.ConfigDict()
  config.experiments = ml_collections.ConfigDict()
  config.experiments.corruptions = ml_collections.ConfigDict(dict(
      title=('Generated images at 16 px (quick)' if arg == 'quick' else
             'Fashion-MNIST at 32 px: ImageNet-C corruptions'),
      classifier=c[0], unseen='', paper='', data_dir='', runs=runs))
  config.concurrent_runs = 2  # as the main job: one run compiles while the other computes
  return config
