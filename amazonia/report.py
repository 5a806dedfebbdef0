"""A markdown report of what a change does to the pipeline, for pull requests.

``python -m amazonia.report --base REV [--out report.md] [--plots-dir dvc_plots]``
compares the workspace with git revision ``REV``. What DVC prints, DVC prints:
``dvc params diff --md`` and ``dvc metrics diff --md`` are the report's tables, and
``dvc plots diff REV --out DIR`` draws every plot, base and change side by side, in
``DIR/index.html``. Added here is only what DVC has no command for: which smoke checks
failed (``dvc metrics diff`` drops lists) and where the plots page and the error
gallery images are. ``make report BASE=main`` runs it; the pull-request workflow
keeps its output as one comment per pull request, found again by ``COMMENT_MARKER``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from amazonia.common.errors import AmazoniaError
from amazonia.common.paths import EVAL_ERRORS_PNG, SMOKE_JSON

# The report's first line, invisible on GitHub: the workflow edits the comment that starts with it.
COMMENT_MARKER = "<!-- amazonia-pr-report -->"
ERRORS_PNG = EVAL_ERRORS_PNG.as_posix()
ARTIFACT = "dvc-plots"  # the upload step's artifact name in .github/workflows/pr-report.yml
PRECISION = 4  # decimals in the metrics table (`dvc metrics diff --precision`; DVC would print 5)


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


def dvc_table(args: list[str], cwd: Path) -> list[str]:
    """The markdown table ``dvc ARGS --md`` prints; empty when it has no row."""
    lines = [line for line in dvc([*args, "--md"], cwd).splitlines() if line.startswith("|")]
    return lines if len(lines) > 2 else []


def params_section(base: str, cwd: Path) -> list[str]:
    """``dvc params diff BASE --md``: every param that differs."""
    rows = dvc_table(["params", "diff", base], cwd)
    return ["## Params", "", *(rows or ["No params changed."])]


def metrics_section(base: str, cwd: Path) -> list[str]:
    """``dvc metrics diff BASE --md``: every metric that differs, base -> this change."""
    rows = dvc_table(["metrics", "diff", base, "--precision", str(PRECISION)], cwd)
    note = f"Unchanged metrics are left out: `dvc metrics diff {base} --all` lists them too."
    return ["## Metrics", "", *(rows or ["No metrics changed."]), "", note]


def smoke_section(workdir: Path) -> list[str]:
    """Which checks of this change's smoke check failed: the list ``dvc metrics diff`` drops."""
    path = workdir / SMOKE_JSON
    if not path.is_file():
        return ["## Smoke check", "", f"No `{SMOKE_JSON}` in this change."]
    checks = json.loads(path.read_text()).get("checks", [])
    failed = [check for check in checks if not check.get("passed")]
    if not failed:
        return ["## Smoke check", "", f"All {len(checks)} checks passed."]
    return [
        "## Smoke check",
        "",
        f"{len(failed)} of {len(checks)} checks failed; the model was not published:",
        "",
        *(f"- **{check.get('name')}**: {check.get('detail', '')}" for check in failed),
    ]


def plots_diff(base: str, out_dir: Path, cwd: Path) -> tuple[dict, str | None]:
    """Render ``dvc plots diff`` into ``out_dir``; DVC's JSON of it, or the error text.

    The HTML page goes to ``out_dir/index.html`` and images to ``out_dir/static/``; a
    second, ``--json`` run over the same ``static/`` names the images of each revision.
    The tables carry the report, so failing plots are noted rather than fatal."""
    try:
        dvc(["plots", "diff", base, "--out", str(out_dir)], cwd)
        listing = dvc(["plots", "diff", base, "--json", "--out", str(out_dir / "static")], cwd)
    except ReportError as err:
        return {}, str(err)
    return json.loads(listing or "{}"), None


def gallery_images(listing: dict, path: str, cwd: Path) -> dict[str, str]:
    """``{revision: image file}`` of the image plot ``path``, relative to ``cwd`` where possible."""
    images = {}
    for item in listing.get("data", {}).get(path, []):
        if item.get("type") != "image":
            continue
        url = Path(item["url"])
        shown = url.relative_to(cwd) if url.is_relative_to(cwd) else url
        images.update({rev: shown.as_posix() for rev in item.get("revisions", [])})
    return images


def image_errors(listing: dict, path: str) -> dict[str, str]:
    """``{revision: DVC's reason}`` for the revisions where DVC could not load ``path``."""
    return {
        e["rev"]: e.get("msg", e.get("type", "")) for e in listing.get("errors", []) if e.get("name") == path
    }


def plots_section(base: str, plots_dir: Path, listing: dict, error: str | None, cwd: Path) -> list[str]:
    """Where ``dvc plots diff`` put the page, and the error gallery of each side."""
    lines = ["## Plots", ""]
    if error:
        return [*lines, f"`dvc plots diff {base}` failed, no plots this time:", "", "```", error, "```"]
    lines.append(
        f"`dvc plots diff {base} --out {plots_dir}` drew every plot, base and this change side by side, "
        f"in `{plots_dir}/index.html`: training curves, the weather confusion matrix, per-label F2, "
        "per-label precision-recall curves (a dot on each tuned threshold), sample chips and "
        "the error gallery."
    )
    run_url = github_run_url()
    if run_url:
        lines += [
            "",
            f"In CI: download the `{ARTIFACT}` artifact of [this workflow run]({run_url}), "
            "unzip it and open `index.html`; the galleries are the files named below, under `static/`.",
        ]
    images, errors = gallery_images(listing, ERRORS_PNG, cwd), image_errors(listing, ERRORS_PNG)
    lines += [
        "",
        f"**Error gallery** (`{ERRORS_PNG}`): the test chips the model gets most confidently wrong, "
        "red frame a false positive, blue a false negative, each captioned with its true and predicted "
        "tags and the probabilities and thresholds that decided them.",
        "",
    ]
    for rev, side in ((base, "base"), ("workspace", "this change")):
        if rev in images:
            lines.append(f"- {side} (`{rev}`): `{images[rev]}`")
        else:
            why = errors.get(rev, "no such plot at this revision")
            lines.append(
                f"- {side} (`{rev}`): none (DVC: {why}). A revision older than the gallery has none; "
                "otherwise its image is in neither the DVC cache nor the remote (DVC reads it from "
                "the remote when one is set up and holds it)."
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
    params = params_section(base, workdir)
    metrics = metrics_section(base, workdir)
    listing, plots_error = plots_diff(base, plots_dir, workdir)
    warnings = [f"dvc plots diff failed, the report has no plots: {plots_error}"] if plots_error else []
    title = f"# Pipeline report: base `{base}` ({short_sha(base, workdir)}) vs this change"
    sections = [
        [COMMENT_MARKER, f"{title} ({short_sha('HEAD', workdir)})"],
        params,
        metrics,
        smoke_section(workdir),
        plots_section(base, plots_dir, listing, plots_error, workdir),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n", warnings


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
