"""DVC stage scripts, run as ``python -m stages.<name>`` from the project root."""

import os

# Before any stage imports TensorFlow (directly or through keras).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
