"""TensorFlow's start-up lines stay off stderr (stages, ``amazonia``), and nothing else does:
errors, tracebacks and a crashing process's last words all still show.

The filter's cases run against a stand-in ``tensorflow`` package that writes, to file
descriptor 2 as TensorFlow's C++ does, the lines the real one prints while it loads; the
real one is checked through real stages."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from amazonia.common.paths import MODEL_KERAS
from tests.conftest import BIN, ROOT, tool_env

# What TensorFlow 2.21 prints while it loads, whatever TF_CPP_MIN_LOG_LEVEL says (the
# Abseil notice, then INFO), and lines of the other severities in Abseil's format.
NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
INFO = (
    "I0000 00:00:1796590845.245231    8198 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`."
)
WARNING = "W0000 00:00:1796590845.298788    8198 cpu_allocator_impl.cc:83] Allocation exceeds 10% of memory."
ERROR = "E0000 00:00:1796590845.301234    8198 cuda_dnn.cc:8310] Unable to register cuDNN factory"
PLAIN = "The TensorFlow library was compiled to use AVX instructions, but these aren't available here."
START_UP = [NOTICE, INFO, WARNING, ERROR, PLAIN]

# Any Abseil log line, or its pre-initialisation notice.
ABSL_OUTPUT = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl)", re.M)

IMPORT_TENSORFLOW = (
    "from amazonia.common.tf_logging import quiet_tensorflow_logs\n"
    "quiet_tensorflow_logs()\n"
    "import tensorflow\n"
    "print('imported')\n"
)


def stand_in_tensorflow(folder: Path, then: str = "") -> Path:
    """A ``tensorflow`` package in ``folder`` that writes START_UP to file descriptor 2, then
    runs ``then``; returns ``folder``, for PYTHONPATH."""
    package = folder / "tensorflow"
    package.mkdir(parents=True)
    output = "".join(f"{line}\n" for line in START_UP).encode()
    (package / "__init__.py").write_text(f"import os\nos.write(2, {output!r})\n{then}\n")
    return folder


def run_python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python *args`` with TF_CPP_MIN_LOG_LEVEL as a user's shell has it: unset, unless
    ``env`` sets it."""
    full_env = tool_env(**env)
    if "TF_CPP_MIN_LOG_LEVEL" not in env:
        del full_env["TF_CPP_MIN_LOG_LEVEL"]
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        (None, [ERROR, PLAIN]),  # unset: 2
        ("2", [ERROR, PLAIN]),
        ("1", [WARNING, ERROR, PLAIN]),
        ("0", START_UP),
        ("3", [PLAIN]),
    ],
)
def test_start_up_lines_below_the_log_level_are_dropped_and_the_rest_kept_in_order(
    tmp_path: Path, level: str | None, shown: list[str]
) -> None:
    fake = stand_in_tensorflow(tmp_path / "site")
    env = {"PYTHONPATH": f"{fake}:{ROOT}"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    result = run_python(["-c", IMPORT_TENSORFLOW], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported\n"
    assert result.stderr.splitlines() == shown


def test_a_process_that_dies_while_tensorflow_loads_still_shows_its_last_words(tmp_path: Path) -> None:
    fake = stand_in_tensorflow(tmp_path / "site", then="os.abort()")
    result = run_python(["-c", IMPORT_TENSORFLOW], tmp_path, PYTHONPATH=f"{fake}:{ROOT}")
    assert result.returncode == -signal.SIGABRT
    assert result.stderr.splitlines() == [ERROR, PLAIN]


def test_an_exception_while_tensorflow_loads_shows_its_whole_traceback(tmp_path: Path) -> None:
    fake = stand_in_tensorflow(tmp_path / "site", then="raise ImportError('libcudart.so.12: cannot open')")
    result = run_python(["-c", IMPORT_TENSORFLOW], tmp_path, PYTHONPATH=f"{fake}:{ROOT}")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[:2] == [ERROR, PLAIN]
    assert lines[2] == "Traceback (most recent call last):"
    assert 'File "<string>", line 3, in <module>' in result.stderr
    assert lines[-1] == "ImportError: libcudart.so.12: cannot open"
    assert INFO not in result.stderr


@pytest.mark.slow
def test_a_stage_that_fails_after_loading_tensorflow_shows_its_error_and_nothing_else(project: Path) -> None:
    """stages.export loads TensorFlow, then finds no trained model: the one-line error is
    all of stderr."""
    result = run_python(["-m", "stages.export"], project)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and str(MODEL_KERAS) in line, result.stderr


@pytest.mark.slow
def test_dvc_repro_of_a_tensorflow_stage_prints_no_tensorflow_start_up_lines(pipeline_copy: Path) -> None:
    """`dvc repro` as a user runs it (TF_CPP_MIN_LOG_LEVEL unset): DVC's lines, nothing of
    TensorFlow's on either stream."""
    env = tool_env()
    del env["TF_CPP_MIN_LOG_LEVEL"]
    result = subprocess.run(
        [str(BIN / "dvc"), "repro", "--force", "--single-item", "export"],
        cwd=pipeline_copy,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Running stage 'export'" in result.stdout
    assert not ABSL_OUTPUT.search(result.stdout + result.stderr), result.stdout + result.stderr
    assert "oneDNN" not in result.stdout + result.stderr
