"""The paper's methods as run configs, for any classifier family (Tables 2-4, Figures 4-8).

`method_config(base, method, ...)` turns a base run config (configs/default.py's fields) into the
run of one method. Classifiers are given by name and config; a suite (configs/suites/) points each
one at the run that trained it on clean images (`classifiers_from`), so every method of an
experiment is compared with the same classifiers.

Methods:
  classifier             the classifier alone, trained on clean images ("VGG16" in Tables 2, 4).
  recnet_noise, recnet_blur
                         RecNet (single): L1 only, one distortion type each (Table 2).
  recnet                 RecNet (multiple): L1 only, noise and blur (Table 2, Figures 6-8).
  qrnet                  QRNet + frozen classifier, Eq. (4) (Tables 2, 5, Figures 4, 6-8).
  small_qrnet            Table 3's small QRNet (one conv per stage).
  finetuned_noise, finetuned_blur, finetuned
                         Table 4's fine-tuned classifier (single, single, multiple): trained on
                         Algorithm 1 batches of clean + distorted images (in a suite, starting
                         from the clean-trained classifier); no restorer.
  end_to_end             QRNet and the classifier's FC layers trained together (Table 4).
  mqrnet                 MQRNet: QRNet + two frozen classifiers, Eq. (5) (Figure 6).
Every restorer is also evaluated with the unseen classifier where one is given (Figure 6).
"""
import ml_collections

from qrnet_jax import config_schema
from qrnet_jax.run_names import classifier_run, replicate

METHODS = ('classifier', 'recnet_noise', 'recnet_blur', 'recnet', 'qrnet', 'small_qrnet',
           'finetuned_noise', 'finetuned_blur', 'finetuned', 'end_to_end', 'mqrnet')


def _group(**classifiers):
  return ml_collections.ConfigDict({name: c for name, c in classifiers.items()})


def method_config(base, method, *, classifier, second=None, unseen=None):
  """The run config of `method`.

  Args:
    base: a full run config (configs/default.py); copied, not changed.
    method: one of METHODS.
    classifier: (name, classifier config): the classifier QRNet is trained against (VGG16).
    second: (name, config): MQRNet's second classifier (InceptionV3); needed for 'mqrnet'.
    unseen: (name, config): the classifier no restorer is trained against (ResNet50), or None.
  """
  if method not in METHODS:
    raise ValueError(f'unknown method {method!r}; allowed: {", ".join(METHODS)}')
  config = ml_collections.ConfigDict(base.to_dict())
  name, c = classifier[0], ml_collections.ConfigDict(classifier[1].to_dict())
  evaluated = {unseen[0]: unseen[1]} if unseen else {}
  if method.startswith(('recnet_', 'finetuned_')):
    config.distortion.types = (method.split('_')[1],)  # "single"
  if method in ('classifier', 'finetuned_noise', 'finetuned_blur', 'finetuned'):
    config.train.pretrain_epochs = 0
    config.train.max_epochs = 0  # no QRNet: the classifier alone faces the distortions
    c.train_distorted = method != 'classifier'
    config.classifiers = _group()
    config.eval_classifiers = _group(**{name: c})
    return config
  if method.startswith('recnet'):  # L1 only: the classifiers only evaluate the restored images
    config.classifiers = _group()
    config.eval_classifiers = _group(**{name: c}, **(evaluated if method == 'recnet' else {}))
    return config
  if method == 'end_to_end':
    c.trainable = 'fc'
  config.classifiers = _group(**{name: c})
  if method == 'mqrnet':
    if second is None:
      raise ValueError("method 'mqrnet' needs a second classifier")
    config.classifiers[second[0]] = ml_collections.ConfigDict(second[1].to_dict())
  if method == 'small_qrnet':
    config.model.small = True
  config.eval_classifiers = _group(**(evaluated if method in ('qrnet', 'mqrnet') else {}))
  return config


# The tables and figures each method's run feeds: `--only TAG` runs those (and what they need).
TAGS = {
    'recnet_noise': ('table2', 'fig4'),
    'recnet_blur': ('table2', 'fig4'),
    'recnet': ('table2', 'table5', 'table6', 'fig4', 'fig6', 'fig7', 'fig8'),
    'qrnet': ('table2', 'table3', 'table4', 'table5', 'table6', 'fig4', 'fig6', 'fig7', 'fig8'),
    'small_qrnet': ('table3',),
    'finetuned_noise': ('table4', 'fig5'),
    'finetuned_blur': ('table4', 'fig5'),
    'finetuned': ('table4', 'fig5'),
    'end_to_end': ('table4', 'fig5'),
    'mqrnet': ('table6', 'fig6'),
}


# A clean-trained classifier's own accuracy, by its role: the tables that show it alone.
CLASSIFIER_TAGS = {
    'classifier': ('table2', 'table4', 'fig4', 'fig5', 'fig7'),
    'second': ('table6', 'fig6'),
    'unseen': ('table6', 'fig6'),
}


def run_spec(config, tags, classifiers_from=None):
  """One run of a suite: its full config, the tags it feeds, and {classifier name: run name}
  for each classifier it reads from the run that trained it."""
  return ml_collections.ConfigDict(dict(
      config=config, tags=tuple(tags),
      classifiers_from=ml_collections.ConfigDict(dict(classifiers_from or {}))))


def replicate_spec(spec, k: int):
  """Run `spec` with seed + k, reading each classifier from its source's replicate k."""
  config = ml_collections.ConfigDict(spec.config.to_dict())
  config.seed += k
  return run_spec(config, spec.tags, {name: replicate(source, k)
                                      for name, source in spec.classifiers_from.items()})


def paper_experiment(base, *, title, classifier, second, unseen, paper='', finetune_epochs=0,
                     methods=METHODS[1:], seeds=1):
  """The runs of the paper's experiment on one dataset (Tables 2-6, Figures 4-8): `methods` (all
  of them by default) and the clean-trained classifiers they read.

  The classifiers are each trained once on clean images (runs `classifier_NAME`); every other run
  reads them from there (Table 4's fine-tuned classifiers start from them). MQRNet's second
  classifier is trained only where 'mqrnet' is among `methods`.
  `finetune_epochs` (0: the classifier's own train_epochs) bounds Table 4's fine-tuning.
  `seeds` > 1 repeats the whole experiment with seeds base.seed + 1, ...: every run R as
  `R_seed{k}`, the classifiers trained again, each replicate reading its own seed's classifiers
  (the report gives the spread of each method and each finding over seeds beside the single-seed
  intervals, report/seeds.py).
  The experiment's `data_dir` ('' here) is the user's to set
  (`--config.experiments.NAME.data_dir`); the suite copies it into each run's `data.data_dir`.
  """
  if not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f'seeds must be an integer >= 1, got {seeds!r}')
  unknown = sorted(set(methods) - set(METHODS[1:]))
  if unknown:
    raise ValueError(f'unknown methods {unknown}; allowed: {", ".join(METHODS[1:])}')
  roles = {'classifier': classifier, 'second': second, 'unseen': unseen}
  if 'mqrnet' not in methods:
    del roles['second']
  trained_by = {c[0]: classifier_run(c[0]) for c in roles.values()}
  runs = ml_collections.ConfigDict()
  for role, c in roles.items():
    runs[trained_by[c[0]]] = run_spec(method_config(base, 'classifier', classifier=c),
                                      CLASSIFIER_TAGS[role])
  for method in (m for m in METHODS[1:] if m in methods):
    config = method_config(base, method, classifier=classifier, second=second, unseen=unseen)
    if method.startswith('finetuned'):  # fine-tunes the clean-trained classifier it reads
      finetuned = config.eval_classifiers[classifier[0]]
      finetuned.imagenet, finetuned.keras_h5 = False, ''
      if finetune_epochs:
        finetuned.train_epochs = finetune_epochs
    reads = {name: trained_by[name] for group in config_schema.CLASSIFIER_GROUPS
             for name in config[group]}
    runs[method] = run_spec(config, TAGS[method], reads)
  first = list(runs)
  for k in range(1, seeds):
    for name in first:
      runs[replicate(name, k)] = replicate_spec(runs[name], k)
  return ml_collections.ConfigDict(dict(
      title=title, classifier=classifier[0], unseen=unseen[0], paper=paper, data_dir='',
      runs=runs))
