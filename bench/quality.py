"""Model quality at Kaggle scale: each configuration trained and scored as a DVC experiment.

``make bench-quality`` (``python -m bench quality``: hours on 2 cores) keeps a git + DVC copy
of the project in ``bench/.work/quality-n<N>/repo``, runs the data stages there once at
``data.n_images: N`` (40,479 by default, Kaggle's labelled chips) and commits them as the
baseline, then runs each configuration of :data:`CONFIGS` as ``dvc exp run -n <name> -S ...``
in that workspace: train, evaluate, export and the smoke check, the data stages skipped as
unchanged. Each configuration is the baseline's params plus its own (``params.yaml`` is
restored before each run), so ``dvc exp show`` in the copy lists every run with exactly what
it changed, and DVC's run-cache restores a finished training instead of repeating it. The
runs go in the workspace, one after the other, not through ``--queue`` (``--temp``): a queued
experiment checks the 40,479 chips and their shards out into a folder of its own.

For each configuration: evaluate's test F2; the F2 of each of the five rarest ground labels
(fewest positives in train); seconds per epoch, from one of Keras's ``Epoch k/N`` lines to
the next as they arrive (an epoch's training, its validation and its checkpoint; the first
epoch, which also traces the model and decodes the chips into the cache, apart); training
images/s over such an epoch; parameters; the smoke check's verdict; and the share of the cores that other
processes used while it trained (the machine may be shared). Then the
``evaluate.thresholds`` strategies are compared on its predictions (:mod:`bench.thresholds`).

A finished configuration is saved to ``bench/.work/quality-n<N>/runs/<name>.json`` and not run
again while its params are the same (delete the file to rerun it; delete the folder to start
over, e.g. after changing the model code, which the copy does not follow). A training killed
half-way resumes from its last epoch's checkpoint when the bench is started again.

Sizes: ``--quality-n`` (``BENCH_QUALITY_N``), ``--quality-configs a,b``
(``BENCH_QUALITY_CONFIGS``, default all), ``--quality-epochs`` and ``--quality-image-size``
(``BENCH_QUALITY_EPOCHS``, ``BENCH_QUALITY_IMAGE_SIZE``; 0: each configuration's own),
``--no-quality-thresholds`` (``BENCH_QUALITY_THRESHOLDS=0``). A quick try of the mechanics:
``python -m bench quality --quality-n 400 --quality-epochs 1 --quality-image-size 32``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from amazonia.common.files import write_json_atomic
from amazonia.common.paths import EVAL_JSON, MODEL_KERAS, RECORDS_DIR, SMOKE_JSON
from amazonia.data.records.manifest import read_manifest
from bench.common import (
    BIN,
    PROJECT_ROOT,
    WORK_DIR,
    Settings,
    copy_project,
    machine_description,
    markdown_table,
    rarest_ground_labels,
    save_results,
    set_params,
    tool_env,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    """One run: ``params`` (dotted ``params.yaml`` keys) over the baseline's."""

    name: str
    params: dict[str, object] = field(default_factory=dict)


# Budgets for a few hours on 2 cores (docs/benchmarks.md, "Model quality at Kaggle scale",
# says why each): the baseline is the project's params.yaml, i.e. the article's network at
# 128 px, 10 epochs, train.augment d4, mixed_bfloat16. MobileNetV3 and EfficientNetV2 train in
# float32, faster than bfloat16 on a CPU (docs/benchmarks.md#architectures); the two large
# backbones get smaller inputs and fewer epochs.
CONFIGS: tuple[Config, ...] = (
    Config("article-none", {"train.augment": "none"}),
    Config("article-d4"),
    Config("article-d4-tta", {"evaluate.tta": "d4"}),
    Config("mobilenet_v3_small", {"train.architecture": "mobilenet_v3_small", "train.precision": "float32"}),
    Config(
        "efficientnet_v2_b0",
        {
            "train.architecture": "efficientnet_v2_b0",
            "train.precision": "float32",
            "train.image_size": 96,
            "train.epochs": 5,
        },
    ),
    Config("resnet50", {"train.architecture": "resnet50", "train.image_size": 96, "train.epochs": 3}),
    Config(
        "convnext_tiny", {"train.architecture": "convnext_tiny", "train.image_size": 96, "train.epochs": 3}
    ),
)
ARTICLE = "article-none"  # the article's model: its network, no augmentation
DEFAULT = "article-d4"  # params.yaml's defaults
RARE_LABELS = 5
GOAL_GAIN = 0.02
POLL_S = 2.0
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
LOCK_LINE = re.compile(r"^(Updating|Generating) lock file")
EPOCH_LINE = re.compile(r"^Epoch (\d+)/\d+$")


def chosen_configs(settings: Settings) -> list[Config]:
    """:data:`CONFIGS`, or those ``settings.quality_configs`` names, in :data:`CONFIGS`' order."""
    names = [name.strip() for name in settings.quality_configs.split(",") if name.strip()]
    known = {config.name for config in CONFIGS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"unknown quality configuration(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    return [config for config in CONFIGS if not names or config.name in names]


def effective_params(config: Config, settings: Settings) -> dict[str, object]:
    """The config's params with the settings' epoch and input-size overrides applied."""
    params = dict(config.params)
    if settings.quality_epochs:
        params["train.epochs"] = settings.quality_epochs
    if settings.quality_image_size:
        params["train.image_size"] = settings.quality_image_size
    return params


# --- the project copy -------------------------------------------------------------------------


def dvc(repo: Path, *args: str) -> str:
    """Run ``dvc args`` in ``repo``; its stdout. Raises with DVC's message if it fails."""
    result = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=tool_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} in {repo} exited with {result.returncode}: {result.stderr}")
    return result.stdout


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=tool_env(), check=True, capture_output=True)


def baseline(folder: Path, n_images: int) -> Path:
    """The copy with its data stages run at ``n_images`` and committed; reused when complete."""
    repo, stamp = folder / "repo", folder / "baseline.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("n_images") == n_images:
        log.info("reusing the Kaggle-scale copy in %s", repo)
        return repo
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    copy_project(repo)
    set_params(repo, {"data": {"n_images": n_images}})
    log.info("data stages at %d chips in %s", n_images, repo)
    started = time.time()
    dvc(repo, "repro", "serialize")  # ingest, encode_labels and the three serialize stages
    data_s = time.time() - started
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"baseline: the data stages at data.n_images {n_images}")
    source = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    write_json_atomic(stamp, {"n_images": n_images, "source_commit": source, "data_stages_s": data_s})
    return repo


# --- one run, watched -------------------------------------------------------------------------


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (psutil's cpu_percent arithmetic)."""
    times = psutil.cpu_times()
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0)


@dataclass
class CpuWatch:
    """CPU seconds used by the whole machine and by a run's own process tree, sampled every
    :data:`POLL_S` seconds by a thread: the difference is other work sharing the cores."""

    pid: int
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (time, machine, ours)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ours: dict[int, float] = field(default_factory=dict)  # pid -> its CPU seconds when last seen

    def _poll(self) -> None:
        try:
            root = psutil.Process(self.pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    self._ours[proc.pid] = times.user + times.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        except psutil.NoSuchProcess:
            pass
        self.samples.append((time.time(), cpu_busy_seconds(), sum(self._ours.values())))

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll()

    def __enter__(self) -> CpuWatch:
        self._poll()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def others_percent(self, start: float, end: float) -> float | None:
        """The share of all cores other processes kept busy between ``start`` and ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, machine0, ours0), (t1, machine1, ours1) = inside[0], inside[-1]
        others = max(0.0, (machine1 - machine0) - (ours1 - ours0))
        return round(100 * others / ((t1 - t0) * psutil.cpu_count()), 1)


def run_experiment(repo: Path, name: str, params: dict[str, object], log_path: Path) -> dict:
    """``dvc exp run -n name -S key=value ...`` over the baseline's params, its output kept in
    ``log_path`` and each line's arrival timed: stage and epoch times, and the load meanwhile."""
    git(repo, "checkout", "--", "params.yaml")
    if name in dvc(repo, "exp", "list", "--name-only").split():
        dvc(repo, "exp", "remove", name)  # a run that finished but was not recorded here
    sets = [arg for key, value in params.items() for arg in ("-S", f"{key}={value}")]
    env = {**tool_env(), "PYTHONUNBUFFERED": "1"}  # each line when it happens
    started = time.time()
    stage_starts: dict[str, float] = {}
    lock_lines: list[float] = []  # DVC writes dvc.lock after each stage
    epoch_starts: dict[int, float] = {}  # Keras's "Epoch k/N", printed as epoch k begins
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dvc"), "exp", "run", "-n", name, *sets],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with CpuWatch(proc.pid) as watch:
            for line in proc.stdout:
                now = time.time()
                out.write(line)
                out.flush()
                if match := STAGE_LINE.match(line):
                    stage_starts[match.group(1)] = now
                elif LOCK_LINE.match(line):
                    lock_lines.append(now)
                elif (match := EPOCH_LINE.match(line)) and "train" in stage_starts:
                    epoch_starts[int(match.group(1))] = now
            returncode = proc.wait()
    ended = time.time()
    if returncode != 0:
        raise RuntimeError(f"dvc exp run -n {name} exited with {returncode}; its output: {log_path}")
    stage_ends = {
        stage: min((t for t in lock_lines if t >= start), default=ended)
        for stage, start in stage_starts.items()
    }
    result = {
        "wall_s": round(ended - started, 1),
        "stages_s": {stage: round(stage_ends[stage] - start, 1) for stage, start in stage_starts.items()},
        "train": {"note": "not trained"},  # unchanged since the run before, or from DVC's run-cache
    }
    if "train" in stage_starts and epoch_starts:
        train_start, train_end = stage_starts["train"], stage_ends["train"]
        result["train"] = epoch_times(epoch_starts, train_end)
        result["train"]["others_cpu_percent"] = watch.others_percent(train_start, train_end)
    return result


def epoch_times(starts: dict[int, float], train_end: float) -> dict:
    """Each epoch from its start to the next one's (the last: to the train stage's end, which
    adds saving the model, about a second): the first apart, as it also traces the model and
    decodes the chips into the cache; the mean of the others."""
    order = sorted(starts)
    ends = [starts[e + 1] if e + 1 in starts else train_end for e in order]
    seconds = {e: end - starts[e] for e, end in zip(order, ends)}
    later = [s for e, s in seconds.items() if e != 1]
    return {
        "epochs_timed": len(order),
        "first_epoch_s": round(seconds[1], 1) if 1 in seconds else None,
        "seconds_per_epoch": round(statistics.mean(later), 1) if later else None,
    }


# --- results ----------------------------------------------------------------------------------


def parameter_count(repo: Path) -> int:
    from amazonia.model.architectures import load_model

    return int(load_model(repo / MODEL_KERAS, compile=False).count_params())


def score(repo: Path, rare: dict[str, int]) -> dict:
    """evaluate's test F2, the rare labels' F2 and the smoke check's verdict, from the metrics."""
    evaluation = json.loads((repo / EVAL_JSON).read_text())
    smoke = json.loads((repo / SMOKE_JSON).read_text())
    return {
        "f2": evaluation["f2"],
        "baseline_f2": evaluation["baseline"]["f2"],
        "rare_f2": {label: evaluation["ground"][label]["f2"] for label in rare},
        "rare_test_support": {label: evaluation["ground"][label]["support"] for label in rare},
        "smoke_passed": bool(smoke["passed"]),
    }


def run_config(repo: Path, runs: Path, config: Config, settings: Settings, rare: dict[str, int]) -> dict:
    """One configuration, from ``runs/<name>.json`` when it is there with the same params."""
    params = effective_params(config, settings)
    done = runs / f"{config.name}.json"
    if done.is_file():
        found = json.loads(done.read_text())
        if found.get("params") == params:
            log.info("%s: done before (%s)", config.name, done)
            return found
    log.info("%s: dvc exp run %s", config.name, params or "(the baseline's params)")
    result = {"name": config.name, "params": params}
    result.update(run_experiment(repo, config.name, params, runs / f"{config.name}.log"))
    result.update(score(repo, rare))
    result["parameters"] = parameter_count(repo)
    examples = read_manifest(repo / RECORDS_DIR / "train").examples
    seconds = result["train"].get("seconds_per_epoch") or result["train"].get("first_epoch_s")
    result["train"]["examples"] = examples
    result["train"]["images_per_s"] = round(examples / seconds, 1) if seconds else None
    log.info("%s: test F2 %.4f, %s", config.name, result["f2"], result["train"])
    if settings.quality_thresholds:
        from bench.thresholds import compare

        result["thresholds"] = compare(repo)["strategies"]
    write_json_atomic(done, result)
    return result


def measure(settings: Settings) -> dict:
    configs = chosen_configs(settings)
    folder = WORK_DIR / f"quality-n{settings.quality_n}"
    repo = baseline(folder, settings.quality_n)
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    rare = rarest_ground_labels(repo / RECORDS_DIR / "train", RARE_LABELS)
    results = []
    for config in configs:
        try:
            results.append(run_config(repo, runs, config, settings, rare))
        except Exception as error:  # one failed configuration must not cost the others' hours
            log.error("%s failed: %s", config.name, error)
            params = effective_params(config, settings)
            results.append({"name": config.name, "params": params, "error": str(error)})
    baseline_params = json.loads((folder / "baseline.json").read_text())
    return {
        "n_images": settings.quality_n,
        "repo": str(repo),
        "baseline": baseline_params,
        "train_params": _train_params(repo),
        "rare_labels": rare,
        "runs": results,
    }


def _train_params(repo: Path) -> dict:
    import yaml

    text = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    params = yaml.safe_load(text)
    return {"train": params["train"], "evaluate": params["evaluate"]}


# --- report -----------------------------------------------------------------------------------


def _setting(run: dict, defaults: dict, key: str) -> object:
    section, name = key.split(".")
    return run["params"].get(key, defaults[section][name])


def format_report(results: dict) -> str:
    defaults = results["train_params"]
    rare = list(results["rare_labels"])
    good = [r for r in results["runs"] if "error" not in r]
    by_name = {r["name"]: r for r in good}
    article = by_name.get(ARTICLE)
    rows, rare_rows = [], []
    for r in results["runs"]:
        if "error" in r:
            rows.append((r["name"], "failed: " + r["error"].splitlines()[0][:120], *[""] * 11))
            continue
        train = r["train"]
        others = train.get("others_cpu_percent")
        gain = f"{r['f2'] - article['f2']:+.4f}" if article else ""
        rows.append(
            (
                r["name"],
                _setting(r, defaults, "train.architecture"),
                _setting(r, defaults, "train.precision"),
                f"{_setting(r, defaults, 'train.augment')} / {_setting(r, defaults, 'evaluate.tta')}",
                _setting(r, defaults, "train.image_size"),
                _setting(r, defaults, "train.epochs"),
                f"{r['f2']:.4f}",
                gain,
                f"{statistics.mean(r['rare_f2'].values()):.4f}",
                _seconds(train),
                f"{train['images_per_s']:,.0f}" if train.get("images_per_s") else "",
                f"{r['parameters']:,}",
                "" if others is None else f"{others:.0f} %",
                "passed" if r["smoke_passed"] else "**failed**",
            )
        )
        rare_rows.append((r["name"], *(f"{r['rare_f2'][label]:.4f}" for label in rare)))
    lines = [
        f"## Model quality at Kaggle scale: {results['n_images']:,} chips",
        "",
        markdown_table(
            [
                "configuration",
                "architecture",
                "precision",
                "augment / TTA",
                "px",
                "epochs",
                "test F2",
                f"vs {ARTICLE}",
                f"F2, {RARE_LABELS} rarest",
                "s / epoch (first)",
                "images/s",
                "parameters",
                "others' CPU",
                "smoke check",
            ],
            rows,
        ),
        "",
        "Rarest ground labels (positives in train): "
        + ", ".join(f"{label} ({n:,})" for label, n in results["rare_labels"].items())
        + ".",
        "",
        markdown_table(["configuration", *rare], rare_rows),
        "",
        *goal_lines(good, article, rare),
    ]
    thresholds = threshold_table(good)
    if thresholds:
        lines += ["", thresholds]
    lines += ["", f"Every run's params and metrics: `dvc exp show` in {results['repo']}."]
    return "\n".join(lines)


def _seconds(train: dict) -> str:
    steady, first = train.get("seconds_per_epoch"), train.get("first_epoch_s")
    if steady is None and first is None:
        return train.get("note", "")
    return f"{steady or first:,.0f}" + (f" ({first:,.0f})" if first is not None and steady else "")


def goal_lines(good: list[dict], article: dict | None, rare: list[str]) -> list[str]:
    if not good or article is None:
        return []
    best = max(good, key=lambda r: r["f2"])
    gain = best["f2"] - article["f2"]
    above = [r["name"] for r in good if all(r["rare_f2"][label] > 0 for label in rare)]
    return [
        f"- best: {best['name']}, test F2 {best['f2']:.4f}, {gain:+.4f} over {ARTICLE}: goal "
        f"≥ +{GOAL_GAIN}: {'met' if gain >= GOAL_GAIN else 'not met'}",
        "- every rare label above 0: " + (", ".join(above) if above else "no configuration"),
    ]


def threshold_table(good: list[dict]) -> str:
    """Test F2 of each threshold strategy per configuration, and its mean re-split gain."""
    compared = [r for r in good if r.get("thresholds")]
    if not compared:
        return ""
    strategies = list(compared[0]["thresholds"])
    rows = []
    for strategy in strategies:
        cells = [f"{r['thresholds'][strategy]['f2']:.4f}" for r in compared]
        gains = [r["thresholds"][strategy]["resplit_gain"] for r in compared]
        wins = [r["thresholds"][strategy]["resplit_wins"] for r in compared]
        rows.append((strategy, *cells, f"{statistics.mean(gains):+.4f}", f"{statistics.mean(wins):.0%}"))
    return "\n".join(
        [
            "Ground thresholds (`python -m bench.thresholds` on each run): test F2 per strategy, and over "
            "100 re-splits of val + test its mean gain over `per_label` and how often it beat it, "
            "averaged over the runs.",
            "",
            markdown_table(
                ["evaluate.thresholds", *(r["name"] for r in compared), "re-split gain", "beats per_label"],
                rows,
            ),
        ]
    )


def run(settings: Settings) -> str:
    """Train and score every chosen configuration; save ``bench/.work/quality.json``."""
    results = measure(settings)
    save_results("quality", settings, results)
    return format_report(results)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"Machine: {machine_description()}\n")
    print(run(Settings.from_env()))
