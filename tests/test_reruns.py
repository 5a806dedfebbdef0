"""What an edit reruns under real ``dvc repro``: the stages that can run the edited code,
then only those whose inputs came out changed (DVC's early cutoff), and a replaced chip
reaches the shards through data/raw.md5."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from amazonia.data.kaggle import image_path
from amazonia.data.labels import SPLITS
from amazonia.data.synthetic.generate import generate_dataset
from tests.conftest import BIN, csv_rows, ran_stages, run, set_params

DVC = str(BIN / "dvc")
SERIALIZE = {f"serialize@{split}" for split in SPLITS}

pytestmark = pytest.mark.slow


def repro(repo: Path, *args: str) -> set[str]:
    """``dvc repro ARGS`` in ``repo``; the stages it ran."""
    return ran_stages(run([DVC, "repro", *args], repo).stdout)


def lock_outs(repo: Path) -> dict[str, str]:
    """Every output's md5 as ``dvc.lock`` records it, by path."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def add_comment(repo: Path, module: str) -> None:
    with (repo / module).open("a") as handle:
        handle.write("\n# a comment: no output can change\n")


def test_an_edit_reruns_only_the_stages_that_run_it_and_identical_outputs_stop_it(pipeline_copy):
    repo = pipeline_copy
    before = lock_outs(repo)
    # The error gallery is evaluate's alone; the Beam writer, the serialize stages' alone
    # (a lazy import, taken only with serialize.runner: beam). The shards come out the
    # same, so train, which reads them, does not rerun. stages/export.py is export's
    # alone: a new process exports the same model to the same files, so smoke_check, which
    # reads them, does not rerun.
    add_comment(repo, "amazonia/model/error_gallery.py")
    add_comment(repo, "amazonia/data/records/beam_writer.py")
    add_comment(repo, "stages/export.py")
    assert repro(repo) == {*SERIALIZE, "evaluate", "export"}
    after = lock_outs(repo)
    assert {path: after[path] for path in after if path.startswith("data/tfrecords/")} == {
        path: before[path] for path in before if path.startswith("data/tfrecords/")
    }
    assert after == before  # evaluate's and export's outputs too: same inputs, same bytes


def test_a_comment_in_trainers_code_reruns_train_to_the_same_model_keras_and_stops(pipeline_copy):
    repo = pipeline_copy
    before = lock_outs(repo)
    # Train's alone (evaluate, export and smoke_check do not run it): train reruns, from
    # scratch and deterministically, and writes the same bytes, so nothing after it reruns.
    add_comment(repo, "amazonia/model/trainer.py")
    assert repro(repo) == {"train"}
    assert lock_outs(repo)["models/model.keras"] == before["models/model.keras"]
    assert repro(repo) == set()


def test_a_chip_replaced_in_the_download_reaches_its_shards_after_a_forced_ingest(project, tmp_path):
    download = tmp_path / "kaggle"
    generate_dataset(download, 60, seed=7, workers=1)
    set_params(project, {"data": {"source": "kaggle", "kaggle_dir": str(download)}})
    targets = sorted(SERIALIZE)
    assert repro(project, *targets) == {"ingest", "encode_labels", *SERIALIZE}
    before = lock_outs(project)

    # A corrected chip, as unzip writes one: a new file under the old name. DVC does not
    # watch the download, and data/raw still holds the old chip (docs/data.md)...
    chip = image_path(download, "train_3")
    replacement = chip.with_name("replacement.jpg")
    Image.open(chip).rotate(90).save(replacement, format="JPEG", quality=90)
    os.replace(replacement, chip)
    assert repro(project, *targets) == set()
    # ...so the user forces ingest, as the docs say; then the list, not the folder, tells
    # the serialize stages, and the chip's split gets new shards, the others the same.
    assert repro(project, "--force", "ingest") == {"ingest"}
    assert repro(project, *targets) == {"encode_labels", *SERIALIZE}
    after = lock_outs(project)
    changed = next(
        row["split"] for row in csv_rows(project / "data/labels/labels.csv") if row["image_name"] == "train_3"
    )
    for split in SPLITS:
        shards = f"data/tfrecords/{split}"
        assert (after[shards] != before[shards]) == (split == changed), split
    assert after["data/labels/labels.csv"] == before["data/labels/labels.csv"]
    assert after["data/raw.md5"] != before["data/raw.md5"]
