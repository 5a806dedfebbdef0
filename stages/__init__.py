"""DVC stage scripts, run as ``python -m stages.<name>`` from the project root."""

import sys

from amazonia.common.tf_logging import quiet_tensorflow_logs

# Before a stage imports TensorFlow (directly or through keras): no start-up lines. Only
# when Python runs a stage (it reads "-m" in argv[0] while it imports this package), not
# when a test imports a stage's functions: the filter reroutes file descriptor 2, which a
# test runner's output capture owns.
if sys.argv[:1] == ["-m"]:
    quiet_tensorflow_logs()
