"""ImageNet weights for the classifiers: official Keras files, fetched and ported to Linen."""
from qrnet_jax.weights.convert import load_converted
from qrnet_jax.weights.fetch import (KERAS_WEIGHTS, HashMismatchError, WeightsUnavailableError,
                                     fetch_weights, how_to_provide)
from qrnet_jax.weights.keras_h5 import KerasH5Error, load_keras_h5, write_keras_h5
