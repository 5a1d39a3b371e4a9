"""The paper's whole suite (Tables 2-6, Figures 4-8) on Caltech101 and Caltech256 at 224 px.

VGG16, InceptionV3 and ResNet50 start from the official Keras ImageNet weights and are each trained
once on clean images (FC layers / head) by the paper's rule, as QRNet is: at most 200 epochs,
stopped after 5 without a better validation loss (configs/paper.py); every method reads them. Run on one GPU or TPU host
(launch/paper_suite.sh), resumable:
  python -m qrnet_jax.main --config configs/suites/paper.py --workdir runs/paper \
    --config.experiments.caltech101.data_dir=/data/caltech101 ...
  --config configs/suites/paper.py:dataset=caltech101   # one dataset
  --only table2                                          # one table's runs

Data: each experiment's runs read `data.data_dir` from the suite field
`experiments.NAME.data_dir` (see README, Data); weights are fetched (md5-checked) into
~/.cache/qrnet_jax/weights or taken from `keras_h5` fields.
"""
import ml_collections

from configs import methods, paper

TITLES = {'caltech101': 'Caltech101 at 224 px (VGG16, InceptionV3, unseen ResNet50)',
          'caltech256': 'Caltech256 at 224 px (VGG16, InceptionV3, unseen ResNet50)'}


def get_config(arg=None):
  options = paper.parse_options(arg, dict(dataset=None), 'configs/suites/paper.py')
  datasets = (options['dataset'],) if options['dataset'] else paper.DATASETS
  config = ml_collections.ConfigDict()
  config.experiments = ml_collections.ConfigDict()
  for dataset in datasets:
    vgg16, inception, resnet = paper.classifiers()
    config.experiments[dataset] = methods.paper_experiment(
        paper.base_config(dataset), title=TITLES[dataset], classifier=vgg16, second=inception,
        unseen=resnet, paper=dataset)
  config.latency = ml_collections.ConfigDict(dict(batch_sizes=(1, 32), repeats=50))
  config.concurrent_runs = 1  # one run at a time: each has the accelerator to itself
  return config
