"""Kaggle scale: the whole default pipeline on ``data.n_images: 40479`` in a temporary copy.

The project's tracked files are copied into a fresh git + DVC repository under the system's
temporary folder (removed afterwards), ``data.n_images`` is set (and ``train.epochs`` when
asked), and every stage is reproduced on its own (``dvc repro --single-item``), timed with
the peak RSS of its whole process tree (DVC, the stage, its workers). Then, with every stage
run, the no-op ``dvc repro`` and ``dvc status`` are timed, and where a no-op's time goes
(DVC's start-up, then each stage's deps and outs checks, in one process); and the model's
training speed is measured on the same shards at each ``train.precision``
(``bench.train_speed``, a process each).

Goals on 2 cores: the whole pipeline in 15 minutes or less, a no-op ``dvc repro`` and
``dvc status`` in 3 s or less.

``make bench-scale``, or ``python -m bench scale --scale-n 400 --scale-epochs 1`` to try it.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import get_args

from amazonia.common.params import TrainParams
from amazonia.common.paths import RECORDS_DIR
from amazonia.data.records.manifest import read_manifest
from bench.common import (
    BIN,
    PROJECT_ROOT,
    Settings,
    copy_project,
    cpu_busy_percent,
    machine_description,
    markdown_table,
    run_measured,
    save_results,
    set_params,
    timer,
    tool_env,
)

log = logging.getLogger(__name__)

STAGES = (
    "ingest",
    "encode_labels",
    "serialize@train",
    "serialize@val",
    "serialize@test",
    "train",
    "evaluate",
    "export",
    "smoke_check",
)
PRECISIONS: tuple[str, ...] = get_args(TrainParams.model_fields["precision"].annotation)
GOAL_TOTAL_S = 15 * 60
GOAL_NOOP_S = 3.0
NOOP_REPEATS = 5
# What a no-op check of the pipeline costs, part by part, timed in one process as DVC's
# CLI does it: import, open the repository, load dvc.yaml and dvc.lock (the index), then
# each stage's deps and outs (an output's check includes its cache check).
NOOP_BREAKDOWN = """
import json, time
started = time.perf_counter()
from dvc.repo import Repo
imported = time.perf_counter()
parts = {"import dvc": imported - started}
with Repo(".") as repo, repo.lock:
    opened = time.perf_counter()
    parts["open the repository"] = opened - imported
    stages = repo.index.stages
    parts["load dvc.yaml and dvc.lock"] = time.perf_counter() - opened
    for stage in stages:
        checked = time.perf_counter()
        changed = [d for d in stage.deps if d.workspace_status()]
        deps = time.perf_counter()
        changed += [o for o in stage.outs if o.status()]
        parts[f"{stage.addressing}: deps"] = deps - checked
        parts[f"{stage.addressing}: outs"] = time.perf_counter() - deps
        assert not changed, (stage.addressing, changed)
print(json.dumps(parts))
"""
SPEED_STEPS, SPEED_WARMUP = 120, 20  # timed batches per precision, after untimed ones


def time_command(args: list[str], repo: Path, repeats: int) -> list[float]:
    """Wall seconds of each of ``repeats`` runs of ``args`` in ``repo`` (it must succeed)."""
    runs = []
    for _ in range(repeats):
        with timer() as took:
            subprocess.run(args, cwd=repo, env=tool_env(), check=True, capture_output=True)
        runs.append(took.seconds)
    return runs


def noop_breakdown(repo: Path) -> dict[str, float]:
    """Seconds of each part of a no-op check of ``repo``'s pipeline (:data:`NOOP_BREAKDOWN`)."""
    result = subprocess.run(
        [sys.executable, "-c", NOOP_BREAKDOWN], cwd=repo, env=tool_env(), check=True, capture_output=True
    )
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def training_speed(split_dir: Path, precision: str, image_size: int, batch_size: int) -> dict:
    """Images/s of the model at ``precision`` on ``split_dir`` (``bench.train_speed``)."""
    result = subprocess.run(
        [
            sys.executable, "-m", "bench.train_speed", str(split_dir), "--precision", precision,
            "--image-size", str(image_size), "--batch-size", str(batch_size),
            "--steps", str(SPEED_STEPS), "--warmup", str(SPEED_WARMUP),
        ],
        cwd=PROJECT_ROOT, env=tool_env(), capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        log.warning("%s training failed:\n%s", precision, result.stderr[-2000:])
        return {"precision": precision, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(repo: Path, settings: Settings) -> dict:
    """Run the pipeline in ``repo`` stage by stage, then the no-op and speed measurements."""
    updates: dict = {"data": {"n_images": settings.scale_n}}
    if settings.scale_epochs:
        updates["train"] = {"epochs": settings.scale_epochs}
    params = set_params(repo, updates)
    busy = cpu_busy_percent()
    stages = []
    for stage in STAGES:
        run = run_measured([str(BIN / "dvc"), "repro", "--single-item", stage], env=tool_env(), cwd=repo)
        log.info("%s: %.1f s, peak %.0f MiB", stage, run.wall_s, run.peak_rss_mib)
        stages.append({"stage": stage, "wall_s": run.wall_s, "peak_rss_mib": run.peak_rss_mib})
    total = sum(s["wall_s"] for s in stages)
    noop_busy = cpu_busy_percent()
    noop_repro = time_command([str(BIN / "dvc"), "repro"], repo, NOOP_REPEATS)
    status = time_command([str(BIN / "dvc"), "status"], repo, NOOP_REPEATS)
    breakdown = noop_breakdown(repo)
    train_dir = repo / RECORDS_DIR / "train"
    train_examples = read_manifest(train_dir).examples
    train = next(s for s in stages if s["stage"] == "train")
    epochs = params["train"]["epochs"]
    image_size, batch_size = params["train"]["image_size"], params["train"]["batch_size"]
    speeds = [training_speed(train_dir, p, image_size, batch_size) for p in PRECISIONS]
    return {
        "n_images": settings.scale_n,
        "epochs": epochs,
        "precision": params["train"]["precision"],
        "train_examples": train_examples,
        "cpu_busy_percent_before": busy,
        "stages": stages,
        "total_s": total,
        "cpu_busy_percent_before_noop": noop_busy,
        "noop_repro_s": statistics.median(noop_repro),
        "noop_repro_runs_s": noop_repro,
        "status_s": statistics.median(status),
        "status_runs_s": status,
        "noop_breakdown_s": breakdown,
        "train_stage_images_per_s": train_examples * epochs / train["wall_s"],
        "training_speed": speeds,
        "goal_total_met": total <= GOAL_TOTAL_S,
        "goal_noop_met": max(statistics.median(noop_repro), statistics.median(status)) <= GOAL_NOOP_S,
    }


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def breakdown_table(parts: dict[str, float], noop_repro_s: float, shown_s: float = 0.05) -> str:
    """The parts of a no-op check of ``shown_s`` or more, the others summed, and what is left
    of the no-op ``dvc repro``'s time."""
    shown = {name: seconds for name, seconds in parts.items() if seconds >= shown_s}
    others = [seconds for name, seconds in parts.items() if name not in shown]
    rows = [[name, f"{seconds:.2f}"] for name, seconds in shown.items()]
    rows.append([f"{len(others)} other checks, each under {shown_s:g} s", f"{sum(others):.2f}"])
    rows.append(["**in one process**", f"**{sum(parts.values()):.2f}**"])
    rows.append(["the rest of a no-op `dvc repro` (median)", f"{noop_repro_s - sum(parts.values()):.2f}"])
    return markdown_table(["part", "s"], rows)


def format_report(r: dict) -> str:
    """The markdown tables and goal lines of one run."""
    stages = markdown_table(
        ["stage", "wall s", "peak RSS, process tree (MiB)"],
        [[s["stage"], f"{s['wall_s']:.1f}", f"{s['peak_rss_mib']:,.0f}"] for s in r["stages"]]
        + [["**whole pipeline**", f"**{r['total_s']:.1f}**", ""]],
    )
    speeds = markdown_table(
        ["train.precision", "training images/s"],
        [
            [s["precision"], f"{s['images_per_s']:,.0f}" if "images_per_s" in s else f"failed: {s['error']}"]
            for s in r["training_speed"]
        ],
    )
    minutes = r["total_s"] / 60
    return "\n".join(
        [
            f"## Kaggle scale: {r['n_images']:,} chips, {r['epochs']} epochs, {r['precision']}",
            "",
            f"Each stage by `dvc repro --single-item` (DVC's start-up included); CPU busy with other "
            f"work just before: {r['cpu_busy_percent_before']:.0f}%.",
            "",
            stages,
            "",
            f"- no-op `dvc repro`: {r['noop_repro_s']:.2f} s; `dvc status`: {r['status_s']:.2f} s "
            f"(median of {NOOP_REPEATS}; fastest {min(r['noop_repro_runs_s']):.2f} / "
            f"{min(r['status_runs_s']):.2f} s); CPU busy with other work just before: "
            f"{r['cpu_busy_percent_before_noop']:.0f}%",
            f"- train stage: {r['train_stage_images_per_s']:,.0f} images/s over {r['train_examples']:,} "
            "examples × epochs (start-up and validation included)",
            "",
            f"Training alone, {SPEED_STEPS} batches after {SPEED_WARMUP} untimed, on the same shards:",
            "",
            speeds,
            "",
            "Where a no-op check's time goes (one process, as the CLI; the rest of the no-op "
            "`dvc repro` is the CLI's own start-up and its locks):",
            "",
            breakdown_table(r["noop_breakdown_s"], r["noop_repro_s"]),
            "",
            f"- goal whole pipeline ≤ {GOAL_TOTAL_S // 60} min: {_met(r['goal_total_met'])} "
            f"({minutes:.1f} min)",
            f"- goal no-op `dvc repro` and `dvc status` ≤ {GOAL_NOOP_S:g} s: {_met(r['goal_noop_met'])} "
            f"({r['noop_repro_s']:.2f} s, {r['status_s']:.2f} s)",
        ]
    )


def run(settings: Settings) -> str:
    """Measure in a temporary copy (removed after), save ``bench/.work/scale.json``, return the report."""
    with tempfile.TemporaryDirectory(prefix="amazonia-scale-") as tmp:
        repo = copy_project(Path(tmp) / "repo")
        log.info("pipeline copy in %s: %d chips", repo, settings.scale_n)
        results = measure(repo, settings)
    save_results("scale", settings, results)
    return format_report(results)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"Machine: {machine_description()}\n")
    print(run(Settings.from_env()))
