"""What a stage leaves when it cannot finish: a full disk is one line naming the output
and the space left; what a killed write left is removed by the next write of it, and
git never sees it meanwhile.

The full disks are real: ``/dev/full``, and tmpfs filesystems of a few KiB mounted in a
private mount namespace (``unshare --user --map-root-user --mount``, no root needed where
unprivileged user namespaces are allowed; those tests skip, saying so, where they are not).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from amazonia.common.files import DiskFullError, atomic_dir, write_bytes_atomic
from amazonia.common.stage import run_stage
from tests.conftest import BIN, on_small_filesystem, run, set_params

DVC = str(BIN / "dvc")
PYTHON = str(BIN / "python")


@pytest.fixture
def dev_full() -> Path:
    path = Path("/dev/full")
    if not path.exists():
        pytest.skip("no /dev/full on this system")
    return path


# --- a full disk -----------------------------------------------------------------------------


def test_a_full_disk_inside_atomic_dir_names_the_output_and_leaves_nothing(tmp_path, dev_full):
    out = tmp_path / "records" / "train"
    with pytest.raises(DiskFullError) as info:
        with atomic_dir(out) as tmp:
            (tmp / "shard-00000").write_bytes(b"part of a shard")
            with dev_full.open("wb") as device:  # the kernel's ENOSPC, as from a full disk
                device.write(b"x")
                device.flush()

    message = str(info.value)
    assert message.startswith(f"{out}: no space left on device while writing it (")
    assert f"free on the filesystem of {out.parent}); free some space there, then rerun" in message
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert os.listdir(out.parent) == []


def test_write_bytes_atomic_on_a_full_filesystem_names_the_file_and_the_space_left(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    code = (
        "import os, sys\n"
        "from amazonia.common.files import write_bytes_atomic\n"
        "(os.path.exists('full/old.bin') or open('full/old.bin', 'wb').write(b'old'))\n"
        "try:\n"
        "    write_bytes_atomic('full/old.bin', b'x' * 200_000)\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
        "print(open('full/old.bin', 'rb').read())\n"
    )
    result = on_small_filesystem(full, 64, [PYTHON, "-c", code], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "DiskFullError full/old.bin: no space left on device while writing it "
        "(0 B free on the filesystem of full); free some space there, then rerun"
    )
    assert lines[1:] == ["b'old'", "old.bin"], "the old file kept, no temporary file left"


def test_a_stage_whose_write_fails_for_space_says_so_in_one_line(tmp_path, dev_full, capsys):
    """Writes outside the atomic writers (a library saving a model) reach the runner."""

    def main() -> None:
        with dev_full.open("wb") as device:
            device.write(b"weights")
            device.flush()

    with contextlib.chdir(tmp_path), pytest.raises(SystemExit) as exited:
        run_stage(main)

    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: a write failed: no space left on device (")
    assert error.endswith(f"free on the filesystem of {tmp_path}); free some space there, then rerun\n")
    assert error.count("\n") == 1


@pytest.mark.slow
def test_a_saved_model_too_large_for_the_disk_is_one_line_too(tmp_path):
    """TensorFlow's file systems report ENOSPC only as text in their own error type."""
    full = tmp_path / "full"
    full.mkdir()
    code = (
        "import tensorflow as tf\n"
        "from amazonia.common.files import DiskFullError, atomic_dir\n"
        "module = tf.Module()\n"
        "module.weights = tf.Variable(tf.zeros([100_000]))\n"
        "try:\n"
        "    with atomic_dir('full/1') as tmp:\n"
        "        tf.saved_model.save(module, str(tmp))\n"
        "except DiskFullError as err:\n"
        "    print(err)\n"
    )
    result = on_small_filesystem(full, 64, [PYTHON, "-c", code], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    message, *left = result.stdout.splitlines()
    assert re.fullmatch(
        r"full/1: no space left on device while writing it "
        r"\([\d.]+ (B|KiB) free on the filesystem of full\); free some space there, then rerun",
        message,
    ), message
    assert left == [], "left on the disk"


@pytest.mark.slow
def test_serialize_on_a_full_disk_stops_in_one_line_leaving_nothing(project):
    run([DVC, "repro", "encode_labels"], project)
    records = project / "data/tfrecords"
    records.mkdir(parents=True, exist_ok=True)

    result = on_small_filesystem(records, 16, [DVC, "repro", "serialize@train"], cwd=project)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {Path('data/tfrecords/train')}: no space left on device while writing it "
        "(0 B free on the filesystem of data/tfrecords); free some space there, then rerun"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert ".tmp-train" not in result.stdout, "a temporary folder left on the full disk"


# --- what a killed write leaves --------------------------------------------------------------


def test_a_file_a_killed_write_left_is_removed_by_the_next_write_and_nothing_else(tmp_path):
    path = tmp_path / "labels.csv"
    left = tmp_path / ".tmp-labels.csv.k1ll3d_0"  # mkstemp's name: prefix and 8 characters
    left.write_bytes(b"image_name,we")
    others = [".tmp-labels.csv.bak.k1ll3d_0", ".tmp-labels.k1ll3d_0", ".tmp-labels.csv.short", "labels.txt"]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours")

    write_bytes_atomic(path, b"image_name,weather_labels\n")

    assert sorted(os.listdir(tmp_path)) == sorted([*others, "labels.csv"])


@pytest.mark.slow
def test_encode_labels_removes_the_temporary_file_of_a_killed_run(project):
    run([DVC, "repro", "encode_labels"], project)
    left = project / "data/labels/.tmp-labels.csv.k1ll3d_0"  # as write_bytes_atomic leaves it on kill -9
    left.write_bytes(b"image_name,weather_labels,gro")
    untracked = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    assert ".tmp-" not in untracked, "git must not offer to commit it"

    set_params(project, {"split": {"val": 0.2}})
    run([DVC, "repro", "encode_labels"], project)

    assert not left.exists()
    assert not list((project / "data/labels").glob(".tmp-*"))


@pytest.mark.slow
def test_a_split_restored_from_the_run_cache_leaves_the_killed_folder_to_the_next_run_unseen_by_git(project):
    """After a kill -9, ``dvc repro`` may restore the split from the run-cache, running no
    code of ours: the temporary folder stays until the stage next runs, ignored by git."""
    set_params(project, {"serialize": {"shard_mb": 0.05}})
    run([DVC, "repro", "serialize@train"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "a finished run"], project)
    # What a kill -9 of a rerun with other params leaves: DVC had removed the output, the
    # writer had started its temporary folder, dvc.lock still names the finished run.
    split = project / "data/tfrecords/train"
    subprocess.run(["rm", "-r", str(split)], check=True)
    left = project / "data/tfrecords/.tmp-train.k1ll3d_0"
    left.mkdir()
    (left / "planet-train.tfrecord-00000").write_bytes(b"\0" * 100)

    restored = run([DVC, "repro", "serialize@train"], project)
    assert "is cached - skipping run" in restored.stdout
    assert left.is_dir() and split.is_dir()
    assert run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout == ""

    set_params(project, {"serialize": {"shard_mb": 0.04}})
    run([DVC, "repro", "serialize@train"], project)
    assert not left.exists()
