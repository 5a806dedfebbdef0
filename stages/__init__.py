"""DVC stage scripts, run as ``python -m stages.<name>`` from the project root."""

from amazonia.common.tf_logging import quiet_tensorflow_logs

# Before any stage imports TensorFlow (directly or through keras): no start-up lines.
quiet_tensorflow_logs()
