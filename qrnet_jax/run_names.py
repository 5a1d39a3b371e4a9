"""Names of a suite's runs that more than one module spells: the one place for them."""


def classifier_run(classifier: str) -> str:
  """The run that trains classifier `classifier` on clean images, which every other run reads."""
  return f'classifier_{classifier}'


def replicate(run: str, k: int) -> str:
  """The run `run` trained with seed + k (k >= 1): a suite's `seeds` option (configs/methods.py)."""
  return f'{run}_seed{k}'


def replicate_number(name: str, run: str):
  """k where `name` is replicate(run, k), else None."""
  prefix = replicate(run, '')
  rest = name[len(prefix):] if name.startswith(prefix) else ''
  return int(rest) if rest.isdigit() else None
