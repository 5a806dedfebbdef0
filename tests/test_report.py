"""The pull-request report (amazonia/report.py): its tables from DVC's JSON, and
``make report BASE=HEAD~1`` in a repository with two committed runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amazonia import report
from tests.conftest import BIN, make, run

DVC = str(BIN / "dvc")

METRICS = {
    "metrics/eval.json": {
        "f2": {"old": 0.7415, "new": 0.7506, "diff": 0.0091},
        "weather_accuracy": {"old": 0.8, "new": 0.8, "diff": 0.0},
        "ground.primary.f2": {"old": 1.0, "new": 0.9, "diff": -0.1},
        "ground.primary.support": {"old": 5, "new": 5, "diff": 0},
        "ground.water.f2": {"old": None, "new": 0.5},
        "baseline.f2": {"old": 0.7, "new": 0.71, "diff": 0.01},
    },
    "metrics/smoke.json": {"passed": {"old": True, "new": False, "diff": -1}},
    "metrics/labels.json": {
        "rows": {"old": 60, "new": 80, "diff": 20},
        "dropped.no weather tag": {"old": 0, "new": 1, "diff": 1},
        "counts.train.images": {"old": 48, "new": 63, "diff": 15},
        "counts.train.haze": {"old": 5, "new": 6, "diff": 1},
    },
    "metrics/train/metrics.json": {"train.loss": {"old": 1.9, "new": 1.7, "diff": -0.2}},
}


def test_values_and_deltas_are_formatted_for_tables() -> None:
    assert report.fmt(None) == "—"
    assert report.fmt(0.123456) == "0.1235"
    assert report.fmt(True) == "✅ passed" and report.fmt(False) == "❌ failed"
    assert report.fmt("a|b") == "a\\|b"
    assert report.fmt_delta({"diff": 0.0091}) == "+0.0091"
    assert report.fmt_delta({"diff": -3}) == "-3"
    assert report.fmt_delta({"diff": 0}) == "0"
    assert report.fmt_delta({"old": None, "new": 0.5}) == ""


def test_params_section_lists_each_change() -> None:
    lines = report.params_section({"params.yaml": {"train.epochs": {"old": 2, "new": 3, "diff": 1}}})
    assert "| `train.epochs` | 2 | 3 |" in lines
    assert report.params_section({}) == ["## Params", "", "No params changed."]
    lines = report.params_section({"params.yaml": {"train.learning_rate": {"old": 1e-4, "new": 5e-05}}})
    assert "| `train.learning_rate` | 0.0001 | 5e-05 |" in lines


def test_metric_sections_show_base_change_and_delta(tmp_path: Path) -> None:
    text = "\n".join(report.headline_section(METRICS) + report.per_label_section(METRICS))
    assert "| eval F2 (ground, test split) | 0.7415 | 0.7506 | +0.0091 |" in text
    assert "| weather accuracy | 0.8000 | 0.8000 | 0 |" in text
    assert "| primary | 1.0000 | 0.9000 | -0.1000 | 5 |" in text
    assert "| water | — | 0.5000 |  | — |" in text

    (tmp_path / "metrics").mkdir()
    checks = [
        {"name": "files", "passed": True},
        {"name": "signatures", "passed": False, "detail": "no serving_bytes"},
    ]
    (tmp_path / "metrics/smoke.json").write_text(json.dumps({"passed": False, "checks": checks}))
    smoke = "\n".join(report.smoke_section(METRICS, tmp_path))
    assert "| passed | ✅ passed | ❌ failed |" in smoke
    assert "- **signatures**: no serving_bytes" in smoke and "files" not in smoke

    dataset = "\n".join(report.dataset_section(METRICS))
    assert "| chips listed | 60 | 80 | +20 |" in dataset
    assert "| dropped: no weather tag | 0 | 1 | +1 |" in dataset
    assert "| train images | 48 | 63 | +15 |" in dataset

    # What no table shows is still listed, folded away; what a table shows is not repeated.
    other = "\n".join(report.other_changes_section(METRICS))
    assert "`baseline.f2`" in other and "`counts.train.haze`" in other
    assert "`f2`" not in other and "train.loss" not in other and "`rows`" not in other


def test_curves_and_confusion_come_from_the_plot_files(tmp_path: Path) -> None:
    for split, values in (("train", "2.0\n1.5"), ("eval", "1.8\n1.2")):
        folder = tmp_path / report.CURVES_DIR / split
        folder.mkdir(parents=True)
        (folder / "loss.tsv").write_text(
            "step\tloss\n" + "\n".join(f"{i}\t{v}" for i, v in enumerate(values.split()))
        )
    curves = "\n".join(report.curves_section(tmp_path))
    assert "| epoch | loss | val loss |" in curves
    assert "| 2 | 1.5000 | 1.2000 |" in curves

    (tmp_path / report.CONFUSION_CSV).parent.mkdir(parents=True)
    (tmp_path / report.CONFUSION_CSV).write_text("actual,predicted\nclear,clear\nclear,clear\nhaze,clear\n")
    (tmp_path / report.LABEL_MAP_JSON).parent.mkdir(parents=True)
    weather = ["clear", "cloudy", "haze", "partly_cloudy"]
    (tmp_path / report.LABEL_MAP_JSON).write_text(json.dumps({"weather": weather}))
    confusion = "\n".join(report.confusion_section(tmp_path))
    assert "| actual \\ predicted | clear | cloudy | haze | partly_cloudy |" in confusion
    assert "| **clear** | 2 | 0 | 0 | 0 |" in confusion
    assert "| **haze** | 1 | 0 | 0 | 0 |" in confusion


def test_plots_section_says_where_the_plots_are(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    text = "\n".join(report.plots_section("main", Path("dvc_plots"), None))
    assert "`dvc_plots/index.html`" in text and "artifact" not in text
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "team/amazonia")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    text = "\n".join(report.plots_section("main", Path("dvc_plots"), None))
    assert "https://github.com/team/amazonia/actions/runs/42" in text and "`dvc-plots` artifact" in text
    assert "failed" in "\n".join(report.plots_section("main", Path("dvc_plots"), "boom"))


def test_outside_a_dvc_repository_it_says_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert report.main(["--base", "main", "--out", str(tmp_path / "r.md")]) == 1
    err = capsys.readouterr().err
    assert "error: `dvc params diff main --json` failed" in err and str(tmp_path) in err
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_make_report_shows_the_param_change_and_metric_deltas(history_copy: Path) -> None:
    repo = history_copy  # HEAD~1: the tiny run; HEAD: train.learning_rate 0.001 -> 0.003
    stdout = make("report", repo, BASE="HEAD~1").stdout

    assert stdout.count("# Pipeline report: base `HEAD~1`") == 1
    assert "| `train.learning_rate` | 0.001 | 0.003 |" in stdout
    for heading in ("## Evaluation", "## Per-label F2 (ground)", "## Smoke check", "## Dataset", "## Plots"):
        assert heading in stdout
    assert "| eval F2 (ground, test split) |" in stdout and "| weather accuracy |" in stdout
    assert "| passed | ✅ passed | ✅ passed |" in stdout
    assert "| `train.loss` |" in stdout and "## Weather confusion matrix" in stdout

    # Every delta DVC computes for the last-epoch training metrics is in the report.
    changed = json.loads(run([DVC, "metrics", "diff", "HEAD~1", "--json"], repo).stdout)
    training = changed["metrics/train/metrics.json"]
    assert training, "the two runs should differ"
    for key, change in training.items():
        assert f"| `{key}` | {report.fmt(change['old'])} | {report.fmt(change['new'])} | " in stdout

    assert (repo / "report.md").read_text() in stdout
    assert (repo / "dvc_plots/index.html").is_file()
