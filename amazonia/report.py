"""A markdown report of what a change does to the pipeline, for pull requests.

``python -m amazonia.report --base REV [--out report.md] [--plots-dir dvc_plots]``
compares the workspace with git revision ``REV`` through DVC itself
(``dvc params diff --json``, ``dvc metrics diff --all --json`` and
``dvc plots diff REV --out DIR``), prints the markdown and writes it to ``--out``.
``make report BASE=main`` runs it; the pull-request workflow posts its output.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from amazonia.common.errors import AmazoniaError

LABELS_JSON = "metrics/labels.json"
EVAL_JSON = "metrics/eval.json"
SMOKE_JSON = "metrics/smoke.json"
TRAIN_JSON = "metrics/train/metrics.json"
CONFUSION_CSV = Path("metrics/eval/weather_confusion.csv")
LABEL_MAP_JSON = Path("data/labels/label_map.json")
CURVES_DIR = Path("metrics/train/plots/metrics")
SPLITS = ("train", "val", "test")
HEADLINE = (
    ("f2", "eval F2 (ground, test split)"),
    ("weather_accuracy", "weather accuracy"),
    ("weather_macro_f1", "weather macro F1"),
    ("gain_over_baseline.f2", "F2 gain over the baseline"),
    ("gain_over_baseline.weather_accuracy", "weather accuracy gain over the baseline"),
)
CURVE_METRICS = ("loss", "weather_accuracy", "ground_f2")

Diff = dict[str, dict[str, dict[str, Any]]]  # file -> key -> {"old", "new", "diff"}


class ReportError(AmazoniaError):
    """A DVC command the report needs failed."""


def dvc(args: list[str], cwd: Path) -> str:
    """Run ``dvc ARGS`` with this interpreter's DVC and return its stdout."""
    command = [sys.executable, "-m", "dvc", *args]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReportError(
            f"`dvc {' '.join(args)}` failed in {cwd} (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}\n"
            "Is the base revision fetched (`git fetch origin <branch>`, or fetch-depth: 0 in CI) "
            "and is this a DVC repository?"
        )
    return result.stdout


def dvc_json(args: list[str], cwd: Path) -> dict:
    """``dvc ARGS --json``, parsed (an empty dict when DVC prints nothing)."""
    out = dvc([*args, "--json"], cwd).strip()
    return json.loads(out) if out else {}


def params_diff(base: str, cwd: Path) -> Diff:
    """Params that differ between ``base`` and the workspace."""
    return dvc_json(["params", "diff", base], cwd)


def metrics_diff(base: str, cwd: Path) -> Diff:
    """Every metric at ``base`` and in the workspace (``--all``: unchanged ones too)."""
    return dvc_json(["metrics", "diff", base, "--all"], cwd)


def plots_diff(base: str, out_dir: Path, cwd: Path) -> str | None:
    """Render ``dvc plots diff`` into ``out_dir``; the error text when that fails.

    The tables carry the report, so failing plots are noted rather than fatal."""
    try:
        dvc(["plots", "diff", base, "--out", str(out_dir)], cwd)
    except ReportError as err:
        return str(err)
    return None


def fmt(value: Any) -> str:
    """A metric or param as a table cell: 4 decimals, missing as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "✅ passed" if value else "❌ failed"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace("|", "\\|")


def fmt_param(value: Any) -> str:
    """A param as written in params.yaml (no rounding: 5e-05 must not read 0.0001)."""
    return "—" if value is None else fmt(value if not isinstance(value, float) else repr(value))


def fmt_delta(entry: Mapping[str, Any]) -> str:
    """``new - old`` with a sign, blank when DVC gives no numeric difference."""
    delta = entry.get("diff")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        return ""
    if delta == 0:
        return "0"
    return f"{delta:+.4f}" if isinstance(delta, float) else f"{delta:+d}"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """A markdown table."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def entry(diff: Diff, path: str, key: str) -> dict[str, Any]:
    """One metric's ``{"old", "new", "diff"}``; empty when neither side has it."""
    return diff.get(path, {}).get(key, {})


def params_section(params: Diff) -> list[str]:
    """Every changed param, base -> this change."""
    rows = [
        [f"`{key}`", fmt_param(change.get("old")), fmt_param(change.get("new"))]
        for path, changes in sorted(params.items())
        for key, change in sorted(changes.items())
    ]
    if not rows:
        return ["## Params", "", "No params changed."]
    return ["## Params", "", *table(["param", "base", "this change"], rows)]


def metric_rows(metrics: Diff, path: str, keys: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Rows ``name | base | this change | delta`` for the keys either side has."""
    rows = []
    for key, name in keys:
        change = entry(metrics, path, key)
        if change:
            rows.append([name, fmt(change.get("old")), fmt(change.get("new")), fmt_delta(change)])
    return rows


def headline_section(metrics: Diff) -> list[str]:
    """Eval F2, weather accuracy and the gains over the trivial baseline."""
    rows = metric_rows(metrics, EVAL_JSON, HEADLINE)
    if not rows:
        return ["## Evaluation", "", f"No `{EVAL_JSON}` at either revision."]
    return ["## Evaluation", "", *table(["metric", "base", "this change", "Δ"], rows)]


def per_label_section(metrics: Diff) -> list[str]:
    """F2 of every ground label, with its test support."""
    labels = sorted(
        {
            key.split(".")[1]
            for key in metrics.get(EVAL_JSON, {})
            if key.startswith("ground.") and key.endswith(".f2")
        }
    )
    rows = []
    for label in labels:
        f2 = entry(metrics, EVAL_JSON, f"ground.{label}.f2")
        support = entry(metrics, EVAL_JSON, f"ground.{label}.support")
        rows.append([label, fmt(f2.get("old")), fmt(f2.get("new")), fmt_delta(f2), fmt(support.get("new"))])
    if not rows:
        return []
    return [
        "## Per-label F2 (ground)",
        "",
        *table(["label", "base", "this change", "Δ", "test support"], rows),
    ]


def smoke_section(metrics: Diff, workdir: Path) -> list[str]:
    """Whether the exported model passed its smoke check, and which checks failed."""
    passed = entry(metrics, SMOKE_JSON, "passed")
    if not passed:
        return ["## Smoke check", "", f"No `{SMOKE_JSON}` at either revision."]
    lines = [
        "## Smoke check",
        "",
        *table(["", "base", "this change"], [["passed", fmt(passed.get("old")), fmt(passed.get("new"))]]),
    ]
    # `dvc metrics diff` drops lists, so the failed checks come from the file itself.
    path = workdir / SMOKE_JSON
    if passed.get("new") is False and path.is_file():
        checks = json.loads(path.read_text()).get("checks", [])
        lines += ["", "Failed checks:", ""]
        lines += [f"- **{c.get('name')}**: {c.get('detail', '')}" for c in checks if not c.get("passed")]
    return lines


def dataset_section(metrics: Diff) -> list[str]:
    """Chips read, encoded and dropped, and images per split."""
    keys = [("rows", "chips listed"), ("encoded", "chips encoded")]
    keys += [
        (key, f"dropped: {key.split('.', 1)[1]}")
        for key in sorted(metrics.get(LABELS_JSON, {}))
        if key.startswith("dropped.")
    ]
    keys += [(f"counts.{split}.images", f"{split} images") for split in SPLITS]
    rows = metric_rows(metrics, LABELS_JSON, keys)
    if not rows:
        return []
    return ["## Dataset", "", *table(["count", "base", "this change", "Δ"], rows)]


def training_section(metrics: Diff) -> list[str]:
    """DVCLive's last-epoch summary (train and validation)."""
    keys = sorted(metrics.get(TRAIN_JSON, {}))
    rows = metric_rows(metrics, TRAIN_JSON, [(key, f"`{key}`") for key in keys])
    if not rows:
        return []
    return ["## Training (last epoch)", "", *table(["metric", "base", "this change", "Δ"], rows)]


def shown_in_tables(path: str, key: str) -> bool:
    """Whether a metric already has a row in one of the report's own tables."""
    if path == TRAIN_JSON:
        return True
    if path == EVAL_JSON:
        return key in dict(HEADLINE) or (key.startswith("ground.") and key.endswith(".f2"))
    if path == LABELS_JSON:
        return key in ("rows", "encoded") or key.startswith("dropped.") or key.endswith(".images")
    return path == SMOKE_JSON and key == "passed"


def other_changes_section(metrics: Diff) -> list[str]:
    """Every other metric that changed, folded away."""
    rows = [
        [f"`{path}`", f"`{key}`", fmt(change.get("old")), fmt(change.get("new")), fmt_delta(change)]
        for path, changes in sorted(metrics.items())
        for key, change in sorted(changes.items())
        if not shown_in_tables(path, key) and change.get("old") != change.get("new")
    ]
    if not rows:
        return []
    body = table(["file", "metric", "base", "this change", "Δ"], rows)
    return [
        f"<details><summary>All other changed metrics ({len(rows)})</summary>",
        "",
        *body,
        "",
        "</details>",
    ]


def read_tsv(path: Path) -> dict[int, float]:
    """A DVCLive ``step<TAB>value`` file as ``{step: value}``."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)
        return {int(row[0]): float(row[1]) for row in reader if row}


def curves_section(workdir: Path) -> list[str]:
    """This change's training curves as a table, one row per epoch."""
    columns: dict[str, dict[int, float]] = {}
    for metric in CURVE_METRICS:
        for split, prefix in (("train", ""), ("eval", "val ")):
            path = workdir / CURVES_DIR / split / f"{metric}.tsv"
            if path.is_file():
                columns[prefix + metric] = read_tsv(path)
    steps = sorted({step for values in columns.values() for step in values})
    if not steps:
        return []
    rows = [[str(step + 1), *(fmt(values.get(step)) for values in columns.values())] for step in steps]
    return ["## Training curves (this change)", "", *table(["epoch", *columns], rows)]


def confusion_section(workdir: Path) -> list[str]:
    """This change's weather confusion matrix, counted from DVC's per-image CSV."""
    path = workdir / CONFUSION_CSV
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        pairs = Counter((row["actual"], row["predicted"]) for row in csv.DictReader(handle))
    # Every weather class, also those never seen in this test split, when the label map is here.
    label_map = workdir / LABEL_MAP_JSON
    known = json.loads(label_map.read_text()).get("weather", []) if label_map.is_file() else []
    classes = [*known, *sorted({name for pair in pairs for name in pair} - set(known))]
    rows = [[f"**{actual}**", *(str(pairs.get((actual, p), 0)) for p in classes)] for actual in classes]
    return [
        "## Weather confusion matrix (this change, test split)",
        "",
        "Rows: actual; columns: predicted.",
        "",
        *table(["actual \\ predicted", *classes], rows),
    ]


def plots_section(base: str, plots_dir: Path, error: str | None) -> list[str]:
    """Where ``dvc plots diff`` put the interactive base-vs-change plots."""
    lines = ["## Plots", ""]
    if error:
        return [*lines, f"`dvc plots diff {base}` failed, no plots this time:", "", "```", error, "```"]
    lines.append(
        f"Training curves, the weather confusion matrix, per-label F2 and sample chips, base and this change "
        f"overlaid: `dvc plots diff {base} --out {plots_dir}` wrote `{plots_dir}/index.html` (HTML + Vega)."
    )
    run_url = github_run_url()
    if run_url:
        lines.append(
            f"In CI: download the `dvc-plots` artifact of [this workflow run]({run_url}), open `index.html`."
        )
    return lines


def github_run_url() -> str | None:
    """The GitHub Actions run page, when the report is built by a workflow."""
    server, repo, run_id = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else None


def short_sha(rev: str, cwd: Path) -> str:
    """``rev``'s short commit id, or ``?`` where git does not know it."""
    result = subprocess.run(["git", "rev-parse", "--short", rev], cwd=cwd, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "?"


def build_report(base: str, workdir: Path, plots_dir: Path) -> tuple[str, list[str]]:
    """The whole markdown report (``base`` against the workspace in ``workdir``) and warnings."""
    params = params_diff(base, workdir)
    metrics = metrics_diff(base, workdir)
    plots_error = plots_diff(base, plots_dir, workdir)
    warnings = [f"dvc plots diff failed, the report has no plots: {plots_error}"] if plots_error else []
    head = short_sha("HEAD", workdir)
    sections = [
        [f"# Pipeline report: base `{base}` ({short_sha(base, workdir)}) vs this change ({head})"],
        params_section(params),
        headline_section(metrics),
        per_label_section(metrics),
        smoke_section(metrics, workdir),
        dataset_section(metrics),
        training_section(metrics),
        curves_section(workdir),
        confusion_section(workdir),
        plots_section(base, plots_dir, plots_error),
        other_changes_section(metrics),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n", warnings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m amazonia.report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--base", required=True, help="git revision to compare with (main, origin/main, HEAD~1)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report.md"), help="markdown file to write (report.md)"
    )
    parser.add_argument(
        "--plots-dir", type=Path, default=Path("dvc_plots"), help="where `dvc plots diff` writes (dvc_plots)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the report and write it to ``--out``; a failing DVC command exits 1 with its message."""
    args = parse_args(argv)
    try:
        report, warnings = build_report(args.base, Path.cwd(), args.plots_dir)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    args.out.write_text(report)
    print(report, end="")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
