"""The pull-request report (amazonia/report.py): DVC's own tables, what it adds (failed smoke
checks, where the plots and galleries are), against a base that predates the plots, and
``make report BASE=HEAD~1`` over two committed runs whose models differ."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from amazonia import report
from amazonia.model import error_gallery
from tests.conftest import BIN, copy_project, make, run, set_params

DVC = str(BIN / "dvc")
NEW_PLOTS = ("metrics/eval/ground_pr.csv", report.ERRORS_PNG)


def cells(line: str) -> list[str]:
    """The cells of one markdown table row, stripped of DVC's padding."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def rows(text: str) -> list[list[str]]:
    return [cells(line) for line in text.splitlines() if line.startswith("|")]


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def without_new_plots(repo: Path) -> None:
    """Make ``repo`` look like a revision from before the error gallery and PR curves."""
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    plots = dvc_yaml["stages"]["evaluate"]["plots"]
    dvc_yaml["stages"]["evaluate"]["plots"] = [
        p for p in plots if (p if isinstance(p, str) else next(iter(p))) not in NEW_PLOTS
    ]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    for path in NEW_PLOTS:
        (repo / path).unlink(missing_ok=True)


@pytest.fixture
def predating(tmp_path: Path) -> Path:
    """HEAD: the project before the new plots, with the committed metrics. Workspace: today's
    dvc.yaml, a gallery and curves, a param and a metric changed. Nothing is run."""
    repo = copy_project(tmp_path / "repo")
    today = (repo / "dvc.yaml").read_text()
    without_new_plots(repo)
    commit(repo, "before the gallery")

    (repo / "dvc.yaml").write_text(today)
    set_params(repo, {"train": {"epochs": 3}})
    scores = json.loads((repo / "metrics/eval.json").read_text())
    scores["f2"] = 0.5
    (repo / "metrics/eval.json").write_text(json.dumps(scores, indent=2))
    (repo / "metrics/eval/ground_pr.csv").write_text(
        "label,threshold,precision,recall,tuned\nagriculture,0.00,0.5,1.0,0\nagriculture,0.50,1.0,0.5,1\n"
    )
    # DVC reads the workspace's gallery from the file itself (git-ignored, not yet in dvc.lock).
    (repo / report.ERRORS_PNG).write_bytes(error_gallery.render_gallery([]))
    return repo


@pytest.mark.slow
def test_params_and_metrics_are_dvcs_own_tables(predating: Path) -> None:
    params = report.params_section("HEAD", predating)
    assert ["params.yaml", "train.epochs", "10", "3"] in rows("\n".join(params))
    metrics = report.metrics_section("HEAD", predating)
    f2 = [row for row in rows("\n".join(metrics)) if row[:2] == ["metrics/eval.json", "f2"]]
    assert len(f2) == 1 and f2[0][3] == "0.5"
    assert rows("\n".join(metrics))[0] == ["Path", "Metric", "HEAD", "workspace", "Change"]


@pytest.mark.slow
def test_nothing_changed_says_so(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    assert report.params_section("HEAD", repo) == ["## Params", "", "No params changed."]
    assert "No metrics changed." in report.metrics_section("HEAD", repo)


@pytest.mark.slow
def test_report_renders_against_a_base_that_predates_the_plots(predating: Path) -> None:
    stdout = make("report", predating, BASE="HEAD").stdout
    assert stdout.endswith((predating / "report.md").read_text())  # after make's echo of the command
    stdout = (predating / "report.md").read_text()
    lines = stdout.splitlines()
    assert lines[0] == report.COMMENT_MARKER
    assert lines[1].startswith("# Pipeline report: base `HEAD`")
    for heading in ("## Params", "## Metrics", "## Smoke check", "## Plots"):
        assert heading in lines
    assert "- base (`HEAD`): none (DVC: no such plot at this revision)." in stdout
    gallery = "dvc_plots/static/workspace_metrics_eval_errors.png"
    assert f"- this change (`workspace`): `{gallery}`" in stdout
    assert (predating / gallery).read_bytes() == (predating / report.ERRORS_PNG).read_bytes()
    page = (predating / "dvc_plots/index.html").read_text()
    assert "metrics/eval/ground_pr.csv" in page and "workspace_metrics_eval_errors.png" in page


def test_smoke_section_lists_the_failed_checks(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    checks = [
        {"name": "files", "passed": True},
        {"name": "signatures", "passed": False, "detail": "no serving_bytes"},
    ]
    (tmp_path / "metrics/smoke.json").write_text(json.dumps({"passed": False, "checks": checks}))
    text = "\n".join(report.smoke_section(tmp_path))
    assert "1 of 2 checks failed; the model was not published:" in text
    assert "- **signatures**: no serving_bytes" in text and "files" not in text
    checks[1]["passed"] = True
    (tmp_path / "metrics/smoke.json").write_text(json.dumps({"passed": True, "checks": checks}))
    assert report.smoke_section(tmp_path)[-1] == "All 2 checks passed."


def test_plots_section_links_the_ci_artifact_and_names_each_gallery(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    listing = {
        "data": {
            report.ERRORS_PNG: [
                {"type": "image", "revisions": ["main"], "url": str(tmp_path / "p/static/main_errors.png")},
                {"type": "image", "revisions": ["workspace"], "url": "elsewhere/workspace_errors.png"},
            ]
        }
    }
    text = "\n".join(report.plots_section("main", Path("p"), listing, None, tmp_path))
    assert "`p/index.html`" in text and "artifact" not in text
    assert "- base (`main`): `p/static/main_errors.png`" in text
    assert "- this change (`workspace`): `elsewhere/workspace_errors.png`" in text

    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "team/amazonia")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    missing = {"errors": [{"name": report.ERRORS_PNG, "rev": "main", "msg": "No storage files available"}]}
    text = "\n".join(report.plots_section("main", Path("p"), missing, None, tmp_path))
    assert (
        f"`{report.ARTIFACT}` artifact of [this workflow run](https://github.com/team/amazonia/actions/runs/42)"
        in text
    )
    assert "- base (`main`): none (DVC: No storage files available)." in text
    assert "failed" in "\n".join(report.plots_section("main", Path("p"), {}, "boom", tmp_path))


def test_outside_a_dvc_repository_it_says_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert report.main(["--base", "main", "--out", str(tmp_path / "r.md")]) == 1
    err = capsys.readouterr().err
    assert "error: `dvc params diff main --md` failed" in err and str(tmp_path) in err
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_both_galleries_of_a_model_change_are_in_the_plots_and_the_report(history_copy: Path) -> None:
    repo = history_copy  # HEAD~1: the tiny run; HEAD: train.image_size 32 -> 24, rerun

    # What a reviewer runs: DVC itself finds each revision's gallery (from its cache).
    diff = json.loads(run([DVC, "plots", "diff", "HEAD~1", "--json", "--out", "p"], repo).stdout)
    images = {rev: item["url"] for item in diff["data"][report.ERRORS_PNG] for rev in item["revisions"]}
    assert set(images) == {"HEAD~1", "workspace"}
    digests = {rev: hashlib.sha256(Path(url).read_bytes()).hexdigest() for rev, url in images.items()}
    assert digests["HEAD~1"] != digests["workspace"], "another model: another gallery"

    stdout = make("report", repo, BASE="HEAD~1").stdout
    assert ["params.yaml", "train.image_size", "32", "24"] in rows(stdout)
    assert any(row[:2] == ["metrics/eval.json", "f2"] for row in rows(stdout))
    for rev, side in (("HEAD~1", "base"), ("workspace", "this change")):
        gallery = f"dvc_plots/static/{rev}_metrics_eval_errors.png"
        assert f"- {side} (`{rev}`): `{gallery}`" in stdout
        assert hashlib.sha256((repo / gallery).read_bytes()).hexdigest() == digests[rev]
    assert "## Smoke check" in stdout and "checks passed." in stdout
    assert stdout.endswith((repo / "report.md").read_text())
