"""The data stages under real ``dvc repro`` in throw-away git repositories."""

import csv
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from amazonia.data.kaggle import TAGS_CSV, image_path
from amazonia.data.labels import SPLITS
from amazonia.data.records.manifest import check_manifest
from amazonia.data.synthetic.generate import generate_dataset
from tests.conftest import BIN, TINY_HASH_SEED, kill_repro_when, ran_stages, run, set_params

DVC = str(BIN / "dvc")
PYTHON = str(BIN / "python")
DATA_STAGES = {"ingest", "encode_labels", *(f"serialize@{s}" for s in SPLITS)}
SERIALIZE = {f"serialize@{s}" for s in SPLITS}

pytestmark = pytest.mark.slow


def repro(repo, *args):
    """``dvc repro`` of the data stages (the model stages have their own tests); what ran."""
    return ran_stages(run([DVC, "repro", *args, *sorted(SERIALIZE)], repo).stdout)


def assert_records_match_labels(repo):
    with (repo / "data/labels/labels.csv").open(newline="") as handle:
        rows = Counter(row["split"] for row in csv.DictReader(handle))
    for split in SPLITS:
        manifest = check_manifest(repo / "data/tfrecords" / split)
        assert manifest.examples == rows[split] - len(manifest.skipped) > 0, split
    assert not list((repo / "data/tfrecords").glob(".tmp-*"))


def test_full_run_then_nothing_to_do(tiny_pipeline):
    repo = tiny_pipeline
    assert_records_match_labels(repo)
    assert (repo / "metrics/samples.png").is_file()
    assert (repo / "data/labels/label_map.json").is_file()
    assert repro(repo) == set()
    status = run([DVC, "status", "-q"], repo, check=False)
    assert status.returncode == 0, status.stdout
    dag = run([DVC, "dag", "--md"], repo).stdout
    assert "ingest" in dag and "encode_labels" in dag and "serialize@train" in dag


def test_changes_rerun_only_what_depends_on_them(pipeline_copy):
    project = pipeline_copy  # its data stages ran once, all of them
    shards = len(check_manifest(project / "data/tfrecords/train").shards)

    set_params(project, {"serialize": {"shard_mb": 0.02}})
    assert repro(project) == SERIALIZE
    assert len(check_manifest(project / "data/tfrecords/train").shards) > shards

    # Every data stage runs the vocabulary module (the renderer draws by tag): all rerun.
    with (project / "amazonia/data/labels.py").open("a") as handle:
        handle.write("\n# an edit to the labels module\n")
    assert repro(project) == DATA_STAGES

    # That an edit to the records code reruns serialize alone: tests/test_reruns.py.
    set_params(project, {"split": {"val": 0.2}})
    assert repro(project) == {"encode_labels", *SERIALIZE}

    set_params(project, {"data": {"n_images": 70}})
    assert repro(project) == DATA_STAGES
    assert_records_match_labels(project)


def kaggle_download_of_links(download: Path, chips: int, rendered: int = 20) -> None:
    """A download in Kaggle's layout of ``chips`` chips: ``rendered`` synthetic ones, and
    hard links to their files under the other names (rendering costs ~3 ms of CPU a chip)."""
    generate_dataset(download, rendered, seed=11, workers=1)
    with (download / TAGS_CSV).open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    with (download / TAGS_CSV).open("a", newline="") as handle:
        writer = csv.writer(handle)
        for index in range(rendered, chips):
            name, tags = rows[index % rendered]
            image_path(download, f"train_{index}").hardlink_to(image_path(download, name))
            writer.writerow([f"train_{index}", tags])


def test_kill_during_serialize_leaves_nothing_half_written(project, tmp_path):
    # Chips of ~21 KB in 0.02 MB shards: a shard per chip, and 1,200 of them take
    # serialize a few tenths of a second, long enough to be caught mid-write.
    kaggle_download_of_links(tmp_path / "kaggle", 1500)
    set_params(
        project,
        {
            "data": {"source": "kaggle", "kaggle_dir": str(tmp_path / "kaggle")},
            "serialize": {"shard_mb": 0.02},
        },
    )
    run([DVC, "repro", "encode_labels"], project)
    assert len(list((project / "data/raw/train-jpg").iterdir())) == 1500
    out = project / "data/tfrecords"
    kill_repro_when(
        project,
        ["serialize@train"],
        lambda: any(out.glob(".tmp-train.*/planet-train.tfrecord-00001")),
        "second shard (make serialize slower)",
        timeout_s=120,
    )

    assert not (out / "train").exists(), "a killed run must not leave a visible split"
    assert repro(project) == SERIALIZE
    assert_records_match_labels(project)


def test_kaggle_download_is_linked_not_copied(project, tmp_path):
    download = tmp_path / "kaggle"
    generate_dataset(download, 30, seed=11, workers=1)
    odd = image_path(download, "train_3")
    Image.open(odd).convert("RGBA").resize((300, 200)).save(odd, format="PNG")  # PNG bytes in a .jpg
    set_params(project, {"data": {"source": "kaggle", "kaggle_dir": str(download)}})

    # The stage itself links (DVC then caches data/raw like any output: see the README).
    run([PYTHON, "-m", "stages.ingest"], project)
    raw = image_path(project / "data/raw", "train_0")
    assert raw.stat().st_ino == image_path(download, "train_0").stat().st_ino, "expected a hard link"

    assert repro(project) == DATA_STAGES
    assert_records_match_labels(project)
    formats = Counter()
    for split in SPLITS:
        formats.update(check_manifest(project / "data/tfrecords" / split).formats)
    assert formats == {"JPEG": 29, "PNG": 1}


def test_kaggle_source_without_a_download_stops_before_writing(project):
    set_params(project, {"data": {"source": "kaggle", "kaggle_dir": "nowhere"}})
    result = run([DVC, "repro"], project, check=False)
    assert result.returncode != 0
    assert "nowhere: no such folder (data.kaggle_dir)" in result.stderr
    assert not (project / "data/raw").exists()


def test_bad_params_stop_the_first_stage_naming_the_key(project):
    set_params(project, {"serialize": {"shard_mb": -1}})
    result = run([DVC, "repro"], project, check=False)
    assert result.returncode != 0
    assert "serialize.shard_mb: Input should be greater than 0 (got -1)" in result.stderr
    assert not (project / "data/raw").exists()


def test_listed_chip_without_a_file_stops_encode_labels(tiny_pipeline, tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-a", str(tiny_pipeline), str(repo)], check=True)
    image_path(repo / "data/raw", "train_5").unlink()
    (repo / "data/labels/labels.csv").unlink()
    result = run([PYTHON, "-m", "stages.encode_labels"], repo, check=False)
    assert result.returncode == 1
    assert "1 listed image(s) have no file: data/raw/train-jpg/train_5.jpg" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / "data/labels/labels.csv").exists()


def test_bad_tags_stop_encode_labels_naming_the_row(tiny_pipeline, tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-a", str(tiny_pipeline), str(repo)], check=True)
    csv = repo / "data/raw/train_v2.csv"
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].split(",")[0] + ",clear primary volcano"
    csv.write_text("\n".join(lines) + "\n")
    before = (repo / "data/labels/labels.csv").read_bytes()
    result = run([PYTHON, "-m", "stages.encode_labels"], repo, check=False)
    assert result.returncode == 1
    assert "data/raw/train_v2.csv, row 5 (train_3): unknown tag(s) volcano" in result.stderr
    assert (repo / "data/labels/labels.csv").read_bytes() == before


def data_stage_outputs(repo) -> dict[str, list[tuple[str, str]]]:
    """``dvc.lock``'s recorded outputs (path, md5) of the data stages."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: [(o["path"], o["md5"]) for o in lock[name]["outs"]] for name in sorted(DATA_STAGES)}


def test_data_stages_give_the_same_bytes_whatever_the_hash_seed_and_workers(pipeline_copy):
    """The promise a teammate's ``dvc pull`` and the run-cache rely on: same inputs, same bytes."""
    project = pipeline_copy  # run by tiny_pipeline: one ingest process, hash seed TINY_HASH_SEED
    first = data_stage_outputs(project)
    samples = (project / "metrics/samples.png").read_bytes()
    set_params(project, {"runtime": {"workers": 2}})
    other_seed = str(int(TINY_HASH_SEED) + 1)
    run([DVC, "repro", "--force", *sorted(SERIALIZE)], project, env_extra={"PYTHONHASHSEED": other_seed})
    assert data_stage_outputs(project) == first
    assert (project / "metrics/samples.png").read_bytes() == samples
    manifests = [json.loads((project / "data/tfrecords" / s / "manifest.json").read_text()) for s in SPLITS]
    assert all(m["examples"] > 0 for m in manifests)


# Under dvc repro, one refusal by the params and one by the data: each message of each kind
# is tests/test_params.py's and tests/test_labels.py's, in process.
@pytest.mark.parametrize(
    "params, message",
    [
        ({"split": {"val": 0}}, "split.val is 0, which leaves the val split empty"),
        ({"data": {"n_images": 3}}, "leave no examples in split(s)"),
    ],
)
def test_degenerate_splits_are_refused_before_anything_trains(project, params, message):
    set_params(project, params)
    result = run([DVC, "repro", "encode_labels"], project, check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert not (project / "data/labels/labels.csv").exists()
