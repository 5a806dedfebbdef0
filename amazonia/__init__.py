"""amazonia: a reproducible DVC + tf.keras pipeline for Planet Amazon chips."""

import os

# TensorFlow reads this once, at import: every entry point imports this package first.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
