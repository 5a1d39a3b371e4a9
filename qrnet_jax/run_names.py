"""Names of a suite's runs that more than one module spells: the one place for them."""


def classifier_run(classifier: str) -> str:
  """The run that trains classifier `classifier` on clean images, which every other run reads."""
  return f'classifier_{classifier}'
