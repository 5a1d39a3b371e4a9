"""The error every config check raises, in a module of its own so that any module may import it."""


class ConfigError(ValueError):
  """A config field has a value the run cannot use; the message names the field."""
