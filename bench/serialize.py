"""Serialization: the original article's TFRecord writer against :func:`amazonia.writer.write_split`.

Both write the same synthetic chips (``BENCH_SERIALIZE_N``, 20,000 by default, so that
process start-up is not the figure), in the same run, from a warm page cache. The
article's method is reimplemented here as it was published: one process, Keras'
``load_img``/``img_to_array`` at 128x128, pixels stored as raw float32 bytes. Ours
checks each chip and stores its file's bytes in sharded TFRecords, timed inside a child
process without TensorFlow (``bench.run_write_split``), as the serialize stage runs.

Peak memory of ours is measured in child processes at two dataset sizes: it should stay
flat, since records are streamed to disk. Then Kaggle scale: the three serialize stages
as DVC runs them (``python -m stages.serialize <split>``, a process each, start-up
included) on 40,479 chips (``BENCH_SCALE_N``) in a temporary copy of the project.

Run alone with ``python -m bench.serialize``; ``python -m bench`` runs it with the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from amazonia.data.labels import LabelRow
from bench.common import (
    CHIPSET_STAMP,
    WORK_DIR,
    ChipSet,
    Settings,
    chip_set,
    cpu_busy_percent,
    machine_description,
    markdown_table,
    run_measured,
    save_results,
    timer,
    warm_file_cache,
)

log = logging.getLogger(__name__)

IMAGE_SIZE = 128  # the article's resolution: its writer stores 128x128x3 float32
SHARD_MB = 16
MEMORY_SCALE = 4  # the peak-memory runs use mem_n and MEMORY_SCALE * mem_n chips
GOAL_SPEEDUP = 10.0
GOAL_MEMORY_RATIO = 1.25  # "flat": 4x the chips may cost at most 25% more peak memory
GOAL_KAGGLE_S = 10.0  # the three serialize stages at Kaggle scale, on 2 cores
BUSY_WARN_PERCENT = 10.0  # CPU use by others above which the report flags its numbers
SCRATCH = WORK_DIR / "serialize"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- the two methods ------------------------------------------------------------------------


def article_serialize(rows: list[LabelRow], raw_dir: Path, out_file: Path, size: int) -> int:
    """The article's writer: float32 pixels in [0, 1] as raw bytes, one file; returns examples."""
    import tensorflow as tf
    from keras.utils import img_to_array, load_img

    from amazonia.data.kaggle import image_path
    from amazonia.data.labels import parse_vector
    from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values: list[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    written = 0
    with tf.io.TFRecordWriter(str(out_file)) as writer:
        for row in rows:
            chip = load_img(image_path(raw_dir, row.image_name), target_size=(size, size))
            image = img_to_array(chip) / 255.0
            feature = {
                "image": _bytes(image.tobytes()),
                "weather_labels": _ints(parse_vector(row.weather_labels, len(LABELS_WEATHER))),
                "ground_labels": _ints(parse_vector(row.ground_labels, len(LABELS_GROUND))),
                "image_name": _bytes(row.image_name.encode("utf-8")),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
            written += 1
    return written


# --- measurements ---------------------------------------------------------------------------


def _settle_disk() -> None:
    """Flush pending writes (rendered chips, the previous method's output) so that no
    background writeback competes with the next timed run."""
    os.sync()


def measure_article(chips: ChipSet, rows: list[LabelRow], size: int) -> dict:
    """One timed run of the article's method: seconds and output bytes."""
    out_file = SCRATCH / "article.tfrecord"
    _settle_disk()
    with timer() as took:
        written = article_serialize(rows, chips.root, out_file, size)
    file_bytes = out_file.stat().st_size
    out_file.unlink()  # ~190 KiB a chip: not worth keeping
    if written != len(rows):
        raise RuntimeError(f"article method wrote {written} of {len(rows)} examples")
    return {"seconds": took.seconds, "bytes": file_bytes}


def measure_ours(chips: ChipSet, rows: list[LabelRow]) -> dict:
    """One timed run of ``write_split``: its own seconds, the shard bytes and the child's peak RSS.

    In a child process without TensorFlow, as the serialize stage runs it.
    """
    out_dir = SCRATCH / "ours"
    _settle_disk()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable, "-m", "bench.run_write_split", str(chips.root), str(out_dir),
        "--n", str(len(rows)), "--shard-mb", str(SHARD_MB),
    ]  # fmt: skip
    report = SCRATCH / "ours.json"
    run = run_measured([*cmd, "--report", str(report)], env=env, cwd=PROJECT_ROOT)
    result = json.loads(report.read_text())
    shutil.rmtree(out_dir)
    return {**result, "peak_rss_mib": run.peak_rss_mib}


def _summary(method: str, images: int, runs: list[dict]) -> dict:
    """Median time over the runs; the output is identical each run, so its size is the first's."""
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "method": method,
        "images": images,
        "seconds_median": seconds,
        "seconds_all": [round(r["seconds"], 3) for r in runs],
        "images_per_s": images / seconds,
        "bytes_total": runs[0]["bytes"],
        "bytes_per_image": runs[0]["bytes"] / images,
    }


def measure_throughput(chips: ChipSet, n: int, repeats: int) -> dict:
    """Both methods on the first ``n`` chips, this process having loaded TensorFlow already."""
    import tensorflow  # noqa: F401  (import cost belongs to neither method)

    rows = chips.head(n)
    warmed = warm_file_cache(chips.paths(rows))
    log.info("page cache warmed: %d chips, %.1f MiB", n, warmed / 2**20)
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)  # leftovers of an interrupted run
    SCRATCH.mkdir(parents=True)
    busy = cpu_busy_percent()
    if busy > BUSY_WARN_PERCENT:
        log.warning("%.0f%% CPU in use by other processes before timing: numbers will be low", busy)
    ours_runs, article_runs = [], []
    for _ in range(repeats):
        # Interleaved, so that changing load on a shared machine hits both methods alike.
        ours_runs.append(measure_ours(chips, rows))
        article_runs.append(measure_article(chips, rows, IMAGE_SIZE))
        log.info("ours %.2f s, article %.2f s", ours_runs[-1]["seconds"], article_runs[-1]["seconds"])
    ours = _summary("ours (write_split: checked chip files in TFRecords)", n, ours_runs)
    ours["shards"] = ours_runs[0]["shards"]
    ours["peak_rss_mib"] = max(r["peak_rss_mib"] for r in ours_runs)
    article = _summary(f"article (load_img at {IMAGE_SIZE} px, float32, 1 process)", n, article_runs)
    speedup = ours["images_per_s"] / article["images_per_s"]
    return {
        "repeats": repeats,
        "cpu_busy_percent_before": busy,
        "article": article,
        "ours": ours,
        "speedup": speedup,
        "size_ratio": ours["bytes_per_image"] / article["bytes_per_image"],
        "goal_speedup_met": speedup >= GOAL_SPEEDUP,
    }


def measure_peak_memory(chips: ChipSet, sizes: Sequence[int]) -> dict:
    """Peak RSS of ``write_split`` run as a child, per chip count."""
    runs = []
    for n in sizes:
        warm_file_cache(chips.paths(chips.head(n)))
        result = measure_ours(chips, chips.head(n))
        log.info("peak memory at %d chips: %.0f MiB", n, result["peak_rss_mib"])
        runs.append({"images": n, "peak_rss_mib": result["peak_rss_mib"], "seconds": result["seconds"]})
    ratio = runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    return {"runs": runs, "ratio": ratio, "goal_flat_met": ratio <= GOAL_MEMORY_RATIO}


def measure_kaggle_scale(chips: ChipSet) -> dict:
    """The three serialize stages, each a process as DVC starts it, on every chip of ``chips``.

    A temporary copy of the project gets the chips as ``data/raw`` (hard links) and its
    ``labels.csv`` from the encode_labels stage; then ``python -m stages.serialize <split>``
    runs for each split, timed from process start to exit.
    """
    from bench.common import copy_project, tool_env

    with tempfile.TemporaryDirectory(prefix="amazonia-serialize-", dir=WORK_DIR) as tmp:
        repo = copy_project(Path(tmp) / "repo")
        for source in chips.root.rglob("*"):
            target = repo / "data" / "raw" / source.relative_to(chips.root)
            if source.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif source.name != CHIPSET_STAMP:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
        env = tool_env()
        subprocess.run([sys.executable, "-m", "stages.encode_labels"], cwd=repo, env=env, check=True)
        warm_file_cache(chips.paths(chips.rows))
        busy = cpu_busy_percent()
        stages = {}
        for split in ("train", "val", "test"):
            _settle_disk()
            run = run_measured([sys.executable, "-m", "stages.serialize", split], env=env, cwd=repo)
            examples = json.loads((repo / "data" / "tfrecords" / split / "manifest.json").read_text())[
                "examples"
            ]
            stages[split] = {"wall_s": run.wall_s, "peak_rss_mib": run.peak_rss_mib, "examples": examples}
            log.info("serialize@%s: %d chips in %.2f s", split, examples, run.wall_s)
    total = sum(stage["wall_s"] for stage in stages.values())
    return {
        "chips": len(chips.rows),
        "cpu_busy_percent_before": busy,
        "stages": stages,
        "total_s": total,
        "goal_met": total <= GOAL_KAGGLE_S,
    }


# --- report ---------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def format_report(results: dict) -> str:
    """The markdown tables and goal lines of one run."""
    t, m, k = results["throughput"], results["memory"], results["kaggle"]
    article, ours = t["article"], t["ours"]
    table = markdown_table(
        ["method", "images/s", "bytes/image", "peak RSS", "speed-up", "size ratio"],
        [
            [
                article["method"],
                f"{article['images_per_s']:,.0f}",
                f"{article['bytes_per_image']:,.0f}",
                "",
                "1.0×",
                "1",
            ],
            [
                ours["method"],
                f"{ours['images_per_s']:,.0f}",
                f"{ours['bytes_per_image']:,.0f}",
                f"{ours['peak_rss_mib']:,.0f} MiB",
                f"{t['speedup']:.1f}×",
                f"{t['size_ratio']:.3f} (1/{1 / t['size_ratio']:.0f})",
            ],
        ],
    )
    memory = markdown_table(
        ["chips", "peak RSS (MiB)", "write_split s"],
        [[f"{r['images']:,}", f"{r['peak_rss_mib']:,.0f}", f"{r['seconds']:.2f}"] for r in m["runs"]],
    )
    kaggle = markdown_table(
        ["stage", "chips", "wall s (process start to exit)", "peak RSS (MiB)"],
        [
            [f"serialize@{split}", f"{s['examples']:,}", f"{s['wall_s']:.2f}", f"{s['peak_rss_mib']:,.0f}"]
            for split, s in k["stages"].items()
        ],
    )
    small, large = m["runs"][0]["images"], m["runs"][-1]["images"]
    loaded = " (numbers unreliable)." if t["cpu_busy_percent_before"] > BUSY_WARN_PERCENT else "."
    return "\n".join(
        [
            f"## Serialization: {article['images']:,} chips",
            "",
            f"Median of {t['repeats']} interleaved runs each, same chips, warm page cache; "
            f"CPU busy with other work just before: {t['cpu_busy_percent_before']:.0f}%{loaded}",
            "",
            table,
            "",
            f"- goal ≥ {GOAL_SPEEDUP:g}× the article's writer: "
            f"{_met(t['goal_speedup_met'])} ({t['speedup']:.1f}×)",
            "",
            "### Peak memory of write_split",
            "",
            memory,
            "",
            f"- {large:,} / {small:,} chips: peak ratio {m['ratio']:.2f} "
            f"(goal flat, ≤ {GOAL_MEMORY_RATIO:g}: {_met(m['goal_flat_met'])})",
            "",
            f"### Kaggle scale: the three serialize stages on {k['chips']:,} chips",
            "",
            kaggle,
            "",
            f"- total {k['total_s']:.1f} s (goal ≤ {GOAL_KAGGLE_S:g} s: {_met(k['goal_met'])}); "
            f"CPU busy with other work just before: {k['cpu_busy_percent_before']:.0f}%",
        ]
    )


def run(settings: Settings) -> str:
    """Measure, save ``bench/.work/serialize.json`` and return the markdown report."""
    mem_sizes = (settings.mem_n, MEMORY_SCALE * settings.mem_n)
    # One chip set serves every size: the smaller runs take its first rows.
    chips = chip_set(max(settings.serialize_n, settings.scale_n, *mem_sizes), settings.seed)
    results = {
        "throughput": measure_throughput(chips, settings.serialize_n, settings.repeats),
        "memory": measure_peak_memory(chips, mem_sizes),
        "kaggle": measure_kaggle_scale(
            chips if len(chips.rows) == settings.scale_n else chip_set(settings.scale_n, settings.seed)
        ),
    }
    shutil.rmtree(SCRATCH, ignore_errors=True)
    save_results("serialize", settings, results)
    return format_report(results)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"Machine: {machine_description()}\n")
    print(run(Settings.from_env()))
