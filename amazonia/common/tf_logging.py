"""TensorFlow's C++ logging held to ``TF_CPP_MIN_LOG_LEVEL`` (default 2: errors only), from
the first line it prints.

TensorFlow applies the level only once it has loaded: what its libraries log while loading
goes to stderr whatever the level (Abseil's "WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR", then "I... port.cc:...] oneDNN custom
operations are on", once per library; no environment variable turns them off short of
turning oneDNN off, which makes training 2-3x slower). So, for the first
``import tensorflow`` only, file descriptor 2 goes through a small filter process that drops
the Abseil lines below the level and passes everything else on, in order: an error, a
traceback, or the last words of a process that dies while TensorFlow loads (an abort for a
missing CPU instruction or a protobuf mismatch) all still show. ``TF_CPP_MIN_LOG_LEVEL=0``
shows everything.

Call :func:`quiet_tensorflow_logs` before anything imports TensorFlow: ``stages/__init__.py``
does for every stage, ``amazonia.cli.main`` for ``amazonia serve`` and ``amazonia predict``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from types import ModuleType

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = 2  # TensorFlow's INFO and WARNING lines are for its developers, not ours
# Abseil's severity letters, in TF_CPP_MIN_LOG_LEVEL's order (0 INFO ... 3 FATAL).
SEVERITIES = "IWEF"
# Abseil's line: severity, MMDD hh:mm:ss.micros, thread id, file:line] (before
# InitializeLog the date reads 0000 and the time is seconds since the epoch).
ABSL_LINE = r"[{severities}]\d{{4}} \d\d:\d\d:[\d.]+ +\d+ [^ \]]+:\d+\] "
ABSL_NOTICE = r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"

# The filter process: reads stdin to its end (the parent's last write end closing, also
# when the parent dies), writes every line that does not match argv[1] to stdout.
_FILTER = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; stay to drain the pipe
dropped = re.compile(sys.argv[1].encode())
source, sink, pending = sys.stdin.buffer.raw, sys.stdout.buffer, b""
while chunk := source.read(65536):
    *lines, pending = (pending + chunk).split(b"\\n")
    sink.write(b"".join(line + b"\\n" for line in lines if not dropped.match(line)))
    sink.flush()
if pending and not dropped.match(pending):
    sink.write(pending)
"""
_DRAIN_SECONDS = 10  # how long to wait for the filter to pass on the last lines


def quiet_tensorflow_logs() -> None:
    """Hold TensorFlow to ``TF_CPP_MIN_LOG_LEVEL`` (set to 2 when unset), start-up included.

    Does nothing more once TensorFlow is imported, or at level 0."""
    os.environ.setdefault(LOG_LEVEL_ENV, str(DEFAULT_LOG_LEVEL))
    level = min_log_level()
    if level == 0 or "tensorflow" in sys.modules or os.name != "posix":
        return
    if not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport(level))


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it: 0 (everything) to 3; not a number is 0."""
    try:
        return max(0, min(int(os.environ.get(LOG_LEVEL_ENV, "0")), len(SEVERITIES) - 1))
    except ValueError:
        return 0


def dropped_lines_pattern(level: int) -> str:
    """The regular expression of the start-up lines below ``level`` (0 drops nothing)."""
    if level <= 0:
        return r"(?!)"
    return rf"{ABSL_LINE.format(severities=SEVERITIES[:level])}|{ABSL_NOTICE}"


@contextlib.contextmanager
def stderr_without(pattern: str) -> Iterator[None]:
    """Within: file descriptor 2 (C++ and Python alike) passes through a filter process that
    drops the lines matching ``pattern``; every other line reaches stderr, in order."""
    sys.stderr.flush()
    stderr = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        filter_process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER, pattern], stdin=read_end, stdout=stderr
        )
    except OSError:  # no process to spare: the lines show, nothing is lost
        filter_process = None
    finally:
        os.close(read_end)
    if filter_process is None:
        os.close(write_end)
        os.close(stderr)
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # the pipe's last write end closes: the filter drains it and exits
        os.close(stderr)
        with contextlib.suppress(subprocess.TimeoutExpired):
            filter_process.wait(_DRAIN_SECONDS)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and loads it with its start-up lines
    below ``level`` dropped; then leaves ``sys.meta_path``."""

    def __init__(self, level: int) -> None:
        self._level = level

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader, dropped_lines_pattern(self._level))
        return spec


class _FilteredLoader(importlib.abc.Loader):
    """``loader``, executing the module with :func:`stderr_without` ``pattern``."""

    def __init__(self, loader: importlib.abc.Loader, pattern: str) -> None:
        self._loader = loader
        self._pattern = pattern

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader
        with stderr_without(self._pattern):
            self._loader.exec_module(module)
