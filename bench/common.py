"""Helpers shared by the benchmark modules: settings, chips, timing, memory, tables.

Everything a benchmark writes goes under :data:`WORK_DIR` (``bench/.work/``,
git-ignored). Helpers log; only the benchmark reports are printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

from amazonia.common.files import atomic_dir, write_json_atomic
from amazonia.data.kaggle import IMAGE_DIR, TAGS_CSV, image_path
from amazonia.data.labels import LabelRow, encode_tags, read_tags_csv

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = PROJECT_ROOT / "bench" / ".work"
BIN = Path(sys.executable).parent  # the virtualenv's: its python, dvc and amazonia
CHIPSET_STAMP = "chipset.json"  # written last: a chip folder without it is incomplete


@dataclass(frozen=True)
class Settings:
    """Sizes shared by all benchmarks; environment variables give the defaults."""

    n: int = 2000  # chips for throughput and size (BENCH_N)
    serialize_n: int = 20_000  # chips of the serialize comparison: start-up must not be the figure
    mem_n: int = 1000  # smaller size of the peak-memory runs; the larger is 4x (BENCH_MEM_N)
    seed: int = 0  # synthetic chip seed (BENCH_SEED)
    repeats: int = 3  # timed runs per method; the median is reported (BENCH_REPEATS)
    scale_n: int = 40479  # data.n_images of the scale benchmark: Kaggle's labelled chips (BENCH_SCALE_N)
    scale_epochs: int = 0  # train.epochs of the scale benchmark; 0 = params.yaml's (BENCH_SCALE_EPOCHS)
    quality_n: int = 40479  # data.n_images of the quality benchmark (BENCH_QUALITY_N)
    quality_configs: str = ""  # its configurations, comma-separated; "" = all (BENCH_QUALITY_CONFIGS)
    quality_epochs: int = 0  # train.epochs of every one; 0 = each its own (BENCH_QUALITY_EPOCHS)
    quality_image_size: int = 0  # train.image_size of every one; 0 = each its own (BENCH_QUALITY_IMAGE_SIZE)
    quality_thresholds: int = 1  # 1: compare the threshold strategies on each run (BENCH_QUALITY_THRESHOLDS)

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults overridden by ``BENCH_N``, ``BENCH_SERIALIZE_N``, ``BENCH_MEM_N``, ``BENCH_SEED``,
        ``BENCH_REPEATS``, ``BENCH_SCALE_N``, ``BENCH_SCALE_EPOCHS`` and the ``BENCH_QUALITY_*`` above."""
        return cls(
            n=_env_int("BENCH_N", cls.n),
            serialize_n=_env_int("BENCH_SERIALIZE_N", cls.serialize_n),
            mem_n=_env_int("BENCH_MEM_N", cls.mem_n),
            seed=_env_int("BENCH_SEED", cls.seed, minimum=0),
            repeats=_env_int("BENCH_REPEATS", cls.repeats),
            scale_n=_env_int("BENCH_SCALE_N", cls.scale_n),
            scale_epochs=_env_int("BENCH_SCALE_EPOCHS", cls.scale_epochs, minimum=0),
            quality_n=_env_int("BENCH_QUALITY_N", cls.quality_n),
            quality_configs=os.environ.get("BENCH_QUALITY_CONFIGS", cls.quality_configs),
            quality_epochs=_env_int("BENCH_QUALITY_EPOCHS", cls.quality_epochs, minimum=0),
            quality_image_size=_env_int("BENCH_QUALITY_IMAGE_SIZE", cls.quality_image_size, minimum=0),
            quality_thresholds=_env_int("BENCH_QUALITY_THRESHOLDS", cls.quality_thresholds, minimum=0),
        )


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    value = int(text)
    if value < minimum:
        raise ValueError(f"{name}={text!r}: must be an integer >= {minimum}")
    return value


# --- chips ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipSet:
    """A folder of synthetic chips in Kaggle's layout and its encoded label rows."""

    root: Path
    rows: list[LabelRow]  # every row in split "train"

    def head(self, n: int) -> list[LabelRow]:
        """The first ``n`` rows: benchmarks of several sizes share one chip set."""
        if n > len(self.rows):
            raise ValueError(f"asked for {n} chips, {self.root} holds {len(self.rows)}")
        return self.rows[:n]

    def paths(self, rows: Iterable[LabelRow]) -> list[Path]:
        return [image_path(self.root, row.image_name) for row in rows]


def chip_set(n: int, seed: int) -> ChipSet:
    """``n`` synthetic chips under ``bench/.work/``, rendered once and reused after.

    Rendering 4,000 chips takes a minute or two on two cores, so a folder whose stamp
    matches ``n`` and ``seed`` is reused as is.
    """
    root = WORK_DIR / f"chips-n{n}-seed{seed}"
    stamp = {"n": n, "seed": seed, "generator": "amazonia.data.synthetic.generate.generate_dataset"}
    if _stamp_matches(root, stamp):
        log.info("reusing %d chips in %s", n, root)
    else:
        from amazonia.data.synthetic.generate import (
            generate_dataset,  # imports the renderer only when needed,
        )

        log.info("rendering %d synthetic chips (seed %d) into %s", n, seed, root)
        # atomic_dir: a run killed half-way leaves no folder that looks complete.
        with atomic_dir(root) as tmp:
            generate_dataset(tmp, n, seed, workers=0)
            write_json_atomic(tmp / CHIPSET_STAMP, stamp)
    return ChipSet(root=root, rows=all_rows(root))


def _stamp_matches(root: Path, stamp: dict) -> bool:
    try:
        found = json.loads((root / CHIPSET_STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return found == stamp and (root / TAGS_CSV).is_file() and (root / IMAGE_DIR).is_dir()


def all_rows(root: Path) -> list[LabelRow]:
    """The chips of ``root`` encoded as ``labels.csv`` rows, all in one split."""
    # encode_tags refuses an empty val or test split; the benchmarks ignore the split.
    encoded = encode_tags(read_tags_csv(root / TAGS_CSV), val=0.1, test=0.1)
    return [replace(row, split="train") for row in encoded.table]


def warm_file_cache(paths: Iterable[Path]) -> int:
    """Read every file once so that timed runs all start from the page cache; returns bytes."""
    total = 0
    for path in paths:
        total += len(Path(path).read_bytes())
    return total


# --- project copies -------------------------------------------------------------------------


def tool_env(**extra: str) -> dict[str, str]:
    """The environment the benchmarks' and tests' commands run in: this virtualenv first on
    PATH (stages run ``python``), quiet TF and DVC, no progress bars, a git identity; then
    ``extra``."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        TQDM_DISABLE="1",
        GIT_AUTHOR_NAME="amazonia",
        GIT_AUTHOR_EMAIL="amazonia@example.com",
        GIT_COMMITTER_NAME="amazonia",
        GIT_COMMITTER_EMAIL="amazonia@example.com",
    )
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def python_last_line(code: str, *args: object) -> str:
    """Run ``code`` in a fresh interpreter of this virtualenv (``tool_env``, in the project
    root) with ``args``; the last line it printed. Raises RuntimeError with its stderr's
    tail if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=PROJECT_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def file_digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by path relative to it."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def copy_project(dest: Path) -> Path:
    """This checkout's tracked (and untracked, not ignored) files as a new git repository at
    ``dest``, without ``dvc.lock``, so that every stage runs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = PROJECT_ROOT / rel
        if src.is_file() and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = tool_env()
    for args in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(args, cwd=dest, env=env, check=True, capture_output=True)
    return dest


def set_params(repo: Path, updates: dict) -> dict:
    """Merge ``updates`` (section by section: a key given replaces that key's value whole)
    into ``repo``'s params.yaml; returns the params."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in updates.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def rarest_ground_labels(train_dir: Path, k: int) -> dict[str, int]:
    """The ``k`` ground labels with the fewest positives in a serialized train split, rarest
    first (ties by name), with their counts: the labels a model learns last."""
    from amazonia.data.records.manifest import read_manifest
    from amazonia.data.vocabulary import LABELS_GROUND

    counts = read_manifest(train_dir).label_counts
    return {label: counts[label] for label in sorted(LABELS_GROUND, key=lambda x: (counts[x], x))[:k]}


# --- timing and memory ----------------------------------------------------------------------


@dataclass
class Timing:
    seconds: float = 0.0


@contextmanager
def timer() -> Iterator[Timing]:
    """Wall-clock time of the ``with`` body (``perf_counter``)."""
    timing = Timing()
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing.seconds = time.perf_counter() - start


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """System-wide CPU use over ``seconds`` while this process sleeps: what others use.

    Benchmarks on a shared machine are only as good as its idleness; reports show this.
    """
    return psutil.cpu_percent(interval=seconds)


def tree_rss(root: psutil.Process) -> int:
    """Resident set size of a process and all its descendants, in bytes.

    Pages shared between processes (libraries, copy-on-write) count once per process:
    the same figure ``ps``/``top`` would add up to, an upper bound of real use.
    """
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that exited between listing and reading
    return total


@dataclass
class PeakRss:
    """Peak of :func:`tree_rss` over a run, and how many samples saw it."""

    peak_bytes: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def _sample_until_stopped(proc: psutil.Process, result: PeakRss, interval: float) -> None:
    while not result._stop.is_set():
        try:
            result.peak_bytes = max(result.peak_bytes, tree_rss(proc))
            result.samples += 1
        except psutil.NoSuchProcess:
            return  # the root process is gone: nothing more to sample
        result._stop.wait(interval)


@contextmanager
def peak_rss(pid: int, interval: float = 0.05) -> Iterator[PeakRss]:
    """Sample the process tree of ``pid`` every ``interval`` seconds in a thread."""
    result = PeakRss()
    thread = threading.Thread(
        target=_sample_until_stopped, args=(psutil.Process(pid), result, interval), daemon=True
    )
    thread.start()
    try:
        yield result
    finally:
        result._stop.set()
        thread.join()


@dataclass(frozen=True)
class ProcessRun:
    wall_s: float
    peak_rss_mib: float
    samples: int


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    interval: float = 0.05,
) -> ProcessRun:
    """Run ``cmd`` to completion, sampling its process tree's RSS; raises if it fails."""
    with timer() as took:
        proc = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with peak_rss(proc.pid, interval) as peak:
            stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{stderr[-4000:]}")
    if stdout.strip():
        log.info("%s", stdout.strip())
    return ProcessRun(wall_s=took.seconds, peak_rss_mib=peak.peak_mib, samples=peak.samples)


# --- reporting ------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers are expected pre-formatted as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    import tensorflow as tf  # the benchmarks load it anyway; its version matters to them

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }


def machine_description() -> str:
    """One line, e.g. ``AMD EPYC, 2 cores, 23.5 GiB RAM, Python 3.11.9, TensorFlow 2.21.0``."""
    m = machine()
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
        f"Python {m['python']}, TensorFlow {m['tensorflow']}"
    )


def save_results(name: str, settings: Settings, results: dict) -> Path:
    """Write ``bench/.work/<name>.json`` with the machine and settings beside the numbers."""
    path = WORK_DIR / f"{name}.json"
    write_json_atomic(
        path,
        {
            "benchmark": name,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "settings": asdict(settings),
            "results": results,
        },
    )
    log.info("results saved to %s", path)
    return path
