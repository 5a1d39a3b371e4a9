"""The rows of the report's tables and the lines of its figures: which run and metric each
method's numbers come from, and the order of the evaluated levels."""
from typing import NamedTuple

from qrnet_jax.run_names import classifier_run

DISTORTIONS = ('noise', 'blur')
TOP_LEVELS = 3  # the strongest levels, where Figure 6's lines part


class Method(NamedTuple):
  """A table row and a figure line: each distortion's numbers come from one (run, metric)."""
  key: str  # the paper's row it matches
  label: str
  sources: dict  # {'noise': (run, metric), 'blur': (run, metric)}


def _method(key, label, noise_source, blur_source=None):
  return Method(key, label, {'noise': noise_source, 'blur': blur_source or noise_source})


def _accuracy(stage: str, classifier: str) -> str:
  return f'{stage}/{classifier}/accuracy'


def recovery_methods(c: str) -> list:
  """Table 2 and Figure 4: classifier C on distorted images, and after each restorer."""
  restored = _accuracy('qrnet', c)
  return [_method('C', c, (classifier_run(c), _accuracy('none', c))),
          _method('recnet_single', f'RecNet (single) + {c}', ('recnet_noise', restored),
                  ('recnet_blur', restored)),
          _method('recnet_multiple', f'RecNet (multiple) + {c}', ('recnet', restored)),
          _method('qrnet', f'QRNet + {c}', ('qrnet', restored))]


def end_to_end_methods(c: str, with_frozen=True) -> list:
  """Table 4 and (without the frozen-classifier row) Figure 5."""
  plain, restored = _accuracy('none', c), _accuracy('qrnet', c)
  methods = [_method('C', c, (classifier_run(c), plain)),
             _method('ft_single', f'Fine-tuned {c} (single)', ('finetuned_noise', plain),
                     ('finetuned_blur', plain)),
             _method('ft_multiple', f'Fine-tuned {c} (multiple)', ('finetuned', plain)),
             _method('end_to_end', f'QRNet + {c} (end-to-end)', ('end_to_end', restored))]
  if with_frozen:
    methods.append(_method('qrnet', f'QRNet + {c} (frozen {c})', ('qrnet', restored)))
  return methods


def small_qrnet_methods(c: str) -> list:
  """Table 3: the small QRNet (one 3x3 convolution per block) beside QRNet."""
  return [_method('qrnet', f'QRNet + {c}', ('qrnet', _accuracy('qrnet', c))),
          _method('small_qrnet', f'small QRNet + {c}', ('small_qrnet', _accuracy('qrnet', c)))]


def unseen_methods(u: str) -> list:
  """Table 6 and Figure 6: a classifier no restorer was trained against."""
  restored = _accuracy('qrnet', u)
  return [_method('U', u, (classifier_run(u), _accuracy('none', u))),
          _method('recnet_multiple', f'RecNet (multiple) + {u}', ('recnet', restored)),
          _method('qrnet', f'QRNet + {u}', ('qrnet', restored)),
          _method('mqrnet', f'MQRNet + {u}', ('mqrnet', restored))]


def level_order(level: str):
  """Sort key: 'clean', then noise and blur levels by their sigma."""
  if level == 'clean':
    return (0, '', 0.)
  distortion, sigma = level.split('/', 1)
  return ({'noise': 1, 'blur': 2}.get(distortion, 3), distortion, float(sigma))


def levels_of(test: dict, distortion: str) -> list:
  return sorted((level for level in test if level.split('/')[0] == distortion), key=level_order)


def has_runs(tests, method: Method) -> bool:
  """Whether any of the method's runs was evaluated on its distortion (a run evaluated only on
  corruption families gives the paper's rows nothing)."""
  return any(run in tests and levels_of(tests[run], distortion)
             for distortion, (run, _) in method.sources.items())
