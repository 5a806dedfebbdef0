"""Exact resume of the train stage: what a checkpoint is tied to, and what each epoch draws.

A resumed run must end with an uninterrupted run's weights: the last test checks that under
real ``dvc repro`` and kill -9 (the suite's one kill test of the train stage); the others, the
pieces it rests on: the fingerprint follows the code deps in dvc.yaml, an epoch's batches
(their d4 views too) and dropout masks depend on (seed, epoch) alone, and a checkpoint brings
back DVCLive's folder as it was after its epoch.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from amazonia.model import training
from tests.conftest import BIN, ROOT, first_epoch, folder_texts, kill_train_after, run, run_python, set_params

DVC = str(BIN / "dvc")


# --- The fingerprint follows the code the stage depends on -------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_code_digest_covers_exactly_the_train_stage_code_deps(tmp_path):
    deps = ["stages/train.py", "amazonia/common", "amazonia/model", "data/tfrecords/train"]
    _write(
        tmp_path,
        {
            "dvc.yaml": yaml.safe_dump(
                {"stages": {"train": {"cmd": "python -m stages.train", "deps": deps}}}
            ),
            "stages/train.py": "main()\n",
            "stages/evaluate.py": "other stage\n",
            "amazonia/common/paths.py": "X = 1\n",
            "amazonia/model/network.py": "def build(): ...\n",
            "amazonia/export/smoke.py": "not a train dep\n",
            "data/tfrecords/train/manifest.json": "{}\n",
        },
    )
    digest = training.code_digest("train", tmp_path / "dvc.yaml")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)

    # What Python or other stages write, and data, leave it alone.
    _write(
        tmp_path,
        {
            "amazonia/model/__pycache__/network.cpython-311.pyc": "bytecode",
            "amazonia/common/stale.pyc": "bytecode",
            "amazonia/export/smoke.py": "edited, but train does not run it\n",
            "stages/evaluate.py": "edited\n",
            "data/tfrecords/train/manifest.json": '{"examples": 1}\n',
            "README.md": "docs\n",
        },
    )
    assert training.code_digest("train", tmp_path / "dvc.yaml") == digest

    # Any change DVC sees in a code dep changes it: an edit, a comment, a new module, a rename.
    seen = {digest}
    for change in (
        lambda: _write(tmp_path, {"amazonia/model/network.py": "def build(): return 1\n"}),
        lambda: _write(tmp_path, {"stages/train.py": "main()\n# a comment\n"}),
        lambda: _write(tmp_path, {"amazonia/model/extra.py": "\n"}),
        lambda: (tmp_path / "amazonia/model/extra.py").rename(tmp_path / "amazonia/model/renamed.py"),
        lambda: _write(tmp_path, {"amazonia/common/sub/deep.py": "\n"}),
    ):
        change()
        digest = training.code_digest("train", tmp_path / "dvc.yaml")
        assert digest not in seen
        seen.add(digest)


def test_code_digest_names_what_is_missing(tmp_path):
    with pytest.raises(training.TrainingError, match="dvc.yaml: not found"):
        training.code_digest("train", tmp_path / "dvc.yaml")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {"deps": ["amazonia/gone"]}}}))
    with pytest.raises(training.TrainingError, match="no stage 'evaluate'"):
        training.code_digest("evaluate", tmp_path / "dvc.yaml")
    with pytest.raises(training.TrainingError, match="depends on amazonia/gone, which does not exist"):
        training.code_digest("train", tmp_path / "dvc.yaml")


def test_code_digest_reads_this_projects_dvc_yaml_from_the_root(monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # stages run from the project root, where dvc.yaml is
    deps = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    assert "amazonia/model/network.py" in deps and "stages/train.py" in deps
    assert training.code_digest("train") == training.code_digest("train", root / "dvc.yaml")


def test_a_train_checkpoint_survives_edits_to_code_train_never_runs(tmp_path):
    root = Path(__file__).resolve().parents[1]
    shutil.copy2(root / "dvc.yaml", tmp_path / "dvc.yaml")
    for folder in ("stages", "amazonia"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    digest = training.code_digest("train", tmp_path / "dvc.yaml")
    # The error gallery (evaluate's), the Beam writer (serialize's), the server: not train's.
    for rel in (
        "amazonia/model/error_gallery.py",
        "amazonia/data/records/beam_writer.py",
        "amazonia/serving/server.py",
    ):
        with (tmp_path / rel).open("a") as module:
            module.write("# a comment\n")
    assert training.code_digest("train", tmp_path / "dvc.yaml") == digest
    with (tmp_path / "amazonia/model/network.py").open("a") as module:
        module.write("# a comment\n")
    assert training.code_digest("train", tmp_path / "dvc.yaml") != digest


# --- What each epoch draws depends on (seed, epoch) alone ---------------------------------


def test_epoch_seeds_are_a_function_of_seed_epoch_and_stream():
    assert training.shuffle_seeds(42, range(2, 5)) == training.shuffle_seeds(42, range(0, 5))[2:]
    seeds = {
        training.epoch_seed(s, e, k) for s in (1, 42) for e in range(50) for k in ("shuffle", "layer-rng-0")
    }
    assert len(seeds) == 2 * 50 * 2 and all(0 <= s < 2**31 for s in seeds)


def test_reseed_gives_epoch_e_the_same_dropout_state_in_a_loaded_model(tmp_path):
    import keras

    from amazonia.model.network import build_model

    def states(model: keras.Model) -> list[list[int]]:
        return [state.numpy().tolist() for state in training.rng_states(model)]

    keras.utils.set_random_seed(1)
    model = build_model(8, filters=2, dense_units=4, dropout=0.5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert len(training.rng_states(model)) == 2  # one per Dropout
    # A .keras file does not keep them: a loaded model draws its own.
    assert states(loaded) != states(model)

    reseed = training.ReseedEachEpoch(seed=42)
    by_epoch = []
    for candidate in (model, loaded):
        reseed.set_model(candidate)
        reseed.on_epoch_begin(3)
        by_epoch.append(states(candidate))
    assert by_epoch[0] == by_epoch[1]
    (first, _), (second, _) = by_epoch[0]
    assert first != second, "two Dropout layers must not share a mask stream"
    reseed.on_epoch_begin(4)
    assert states(loaded) != by_epoch[0]


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["none", "d4"])
def test_an_epochs_batches_do_not_depend_on_the_epochs_before_or_the_cache(tiny_pipeline, augment):
    from amazonia.model.input_pipeline import batches_per_epoch, load_epochs

    split = tiny_pipeline / "data/tfrecords/train"

    def epochs(first: int, last: int, cache: bool = True) -> list[list[tuple]]:
        seeds = training.shuffle_seeds(7, range(first, last))
        data, manifest = load_epochs(
            split, 32, batch_size=16, epoch_seeds=seeds, file_seed=7, augment=augment, cache=cache
        )
        batches = [(x, y["weather"], y["ground"]) for x, y in data.as_numpy_iterator()]
        per_epoch = batches_per_epoch(manifest.examples, 16)
        assert len(batches) == per_epoch * (last - first)
        return [batches[i : i + per_epoch] for i in range(0, len(batches), per_epoch)]

    def same(a: list[tuple], b: list[tuple]) -> bool:
        return all(np.array_equal(u, v) for pa, pb in zip(a, b) for u, v in zip(pa, pb))

    from_start = epochs(0, 4)
    resumed = epochs(2, 4)  # a new pipeline, as in a resumed process
    assert same(from_start[2], resumed[0]) and same(from_start[3], resumed[1])
    assert not same(from_start[2], from_start[3]), "each epoch must get its own order"
    assert all(same(a, b) for a, b in zip(from_start, epochs(0, 4, cache=False)))


@pytest.mark.slow
def test_train_seed_0_shuffles_like_any_other_seed(tiny_pipeline):
    # TensorFlow special-cases a global seed of 0 by comparing the op seed with 0 in
    # Python: a seed tensor there stops training with OperatorNotAllowedInGraphError.
    import keras

    from amazonia.model.input_pipeline import batches_per_epoch, load_epochs

    keras.utils.set_random_seed(0)
    try:
        seeds = training.shuffle_seeds(0, range(2))
        data, manifest = load_epochs(
            tiny_pipeline / "data/tfrecords/train", 32, batch_size=16, epoch_seeds=seeds, file_seed=0
        )
        assert sum(1 for _ in data) == 2 * batches_per_epoch(manifest.examples, 16)
    finally:
        keras.utils.set_random_seed(42)


# --- DVCLive's curves on resume -----------------------------------------------------------


def test_a_checkpoint_brings_back_dvclives_folder_of_its_epoch(tmp_path):
    import keras

    from amazonia.model.network import build_model

    checkpoints, live = tmp_path / "checkpoints", tmp_path / "live"
    training.clear_checkpoints(checkpoints)
    callback = training.EpochCheckpoint(checkpoints, {"run": 1}, live_dir=live)
    callback.set_model(build_model(8, filters=2, dense_units=4, dropout=0.5))
    for epoch in range(2):  # as DVCLive leaves it after each epoch, before the checkpoint
        rows = "".join(f"{step}\t0.{9 - step}\n" for step in range(epoch + 1))
        _write(
            live, {"metrics.json": f'{{"step": {epoch}}}\n', "plots/metrics/loss.tsv": "step\tloss\n" + rows}
        )
        callback.on_epoch_end(epoch)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0002.keras", "live-0002", "state.json"]
    after_two = folder_texts(live)

    # The kill fell after DVCLive logged epoch 3, before its checkpoint; then dvc repro
    # deleted the stage's metrics and plots.
    _write(live, {"plots/metrics/loss.tsv": "step\tloss\n0\t0.9\n1\t0.8\n2\t0.7\n"})
    (live / "metrics.json").unlink()
    assert training.load_checkpoint(checkpoints, {"run": 2}) is None  # another fingerprint
    resume = training.load_checkpoint(checkpoints, {"run": 1})
    assert resume.initial_epoch == 2 and isinstance(resume.model, keras.Model)
    training.restore_live(resume.live, live)
    assert folder_texts(live) == after_two

    training.mark_complete(checkpoints)
    assert training.load_checkpoint(checkpoints, {"run": 1}) is None  # a finished run trains again


# --- Warm-up, then fine-tuning: phases a checkpoint knows ---------------------------------


def _train_params(**values):
    from amazonia.common.params import TrainParams

    return TrainParams(**values)


def test_pretrained_runs_warm_up_then_fine_tune_and_others_train_in_one_phase():
    from amazonia.model.trainer import Phase, schedule

    pretrained = {"architecture": "resnet50", "weights": "imagenet", "epochs": 10}
    assert schedule(_train_params(**pretrained, warmup_epochs=3, fine_tune_learning_rate=1e-5)) == [
        Phase("warm_up", 0, 3, 0.001),
        Phase("fine_tune", 3, 10, 1e-5),
    ]
    assert schedule(_train_params(**pretrained, warmup_epochs=0)) == [Phase("fine_tune", 0, 10, 0.0001)]
    assert schedule(_train_params(**pretrained, warmup_epochs=10)) == [Phase("warm_up", 0, 10, 0.001)]
    for architecture in ("article", "resnet50"):
        assert schedule(_train_params(architecture=architecture, epochs=4, warmup_epochs=2)) == [
            Phase("train", 0, 4, 0.001)
        ]


def test_a_checkpoint_continues_its_phase_only_from_inside_it():
    from amazonia.model.trainer import Phase, continues_phase
    from amazonia.model.training import Resume

    warm_up, fine_tune = Phase("warm_up", 0, 3, 0.001), Phase("fine_tune", 3, 10, 0.0001)

    def after(epoch: int, phase: str) -> Resume:
        return Resume(model=None, initial_epoch=epoch, live=None, phase=phase)

    assert not continues_phase(None, warm_up)
    assert continues_phase(after(2, "warm_up"), warm_up)
    # After the warm-up's last epoch: fine-tuning starts afresh (unfrozen, a new optimizer).
    assert not continues_phase(after(3, "warm_up"), fine_tune)
    assert continues_phase(after(4, "fine_tune"), fine_tune)


# In a process of its own: train_model sets Keras's global seed, policy and op determinism.
# Keras's training step is counted where Keras traces it.
COUNT_TRACES = """
import sys
from pathlib import Path
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
from amazonia.common.params import TrainParams
from amazonia.model.trainer import train_model

records, work = Path(sys.argv[1]), Path(sys.argv[2])
traces = []
train_step = TensorFlowTrainer.train_step


def counted(self, data):
    traces.append(1)
    return train_step(self, data)


TensorFlowTrainer.train_step = counted
train = TrainParams(image_size=32, epochs=2, batch_size=16)
train_model(
    train, train_dir=records / "train", val_dir=records / "val", pretrained_dir=work / "pretrained",
    checkpoint_dir=work / "checkpoints", live_dir=work / "live",
)
print("traces", len(traces))
"""


@pytest.mark.slow
def test_a_phase_traces_its_training_step_once(tiny_pipeline, tmp_path):
    """Keras creates the optimizer's and metrics' variables inside the first trace unless they
    exist, and TensorFlow then traces the step again: seconds of CPU per phase for a backbone."""
    done = run_python(COUNT_TRACES, tiny_pipeline / "data/tfrecords", tmp_path, cwd=ROOT)
    assert done.stdout.splitlines()[-1] == "traces 1"


@pytest.mark.slow
def test_a_killed_run_resumes_bit_for_bit_and_a_code_edit_discards_the_checkpoint(pipeline_copy):
    """The one kill -9 test of the train stage. Three kills: inside the warm-up (the frozen
    backbone's optimizer state resumes), at the warm-up's last checkpoint (fine-tuning starts
    as it would have), inside the fine-tuning; ``dvc repro`` resumes after the last finished
    epoch. A copy of the killed repository gets a comment in the trainer's code: DVC sees a
    changed dep, the checkpoint is of other code, training starts from scratch, uninterrupted,
    and ends with the resumed run's weights, optimizer state and DVCLive curves, bit for bit."""
    from amazonia.model.pretrained import WEIGHTS
    from tests.conftest import saved_arrays, write_keras_weights

    repo = pipeline_copy
    warmup, epochs = 3, 6
    write_keras_weights(
        "mobilenet_v3_small", repo / "models/pretrained" / WEIGHTS["mobilenet_v3_small"].name, 1
    )
    # Augmented: what each epoch draws (order, views, dropout) must not depend on the kills.
    set_params(
        repo,
        {
            "train": {
                "architecture": "mobilenet_v3_small",
                "weights": "imagenet",
                "epochs": epochs,
                "warmup_epochs": warmup,
                "augment": "d4",
            }
        },
    )
    state = "models/checkpoints/state.json"
    kills = [kill_train_after(repo, min_epoch=1)]
    assert json.loads((repo / state).read_text())["phase"] == "warm_up" and kills[0] < warmup
    # Fine-tuning's first epoch waits on a new trace: the kill lands on the warm-up's end.
    kills.append(kill_train_after(repo, min_epoch=warmup))
    kills.append(kill_train_after(repo, min_epoch=max(kills) + 1))
    killed = json.loads((repo / state).read_text())
    assert killed["phase"] == "fine_tune" and warmup < kills[2] < epochs
    # The same killed run, its trainer's code edited: the uninterrupted run to compare with.
    edited = repo.parent / "edited"
    shutil.copytree(repo, edited, symlinks=True)
    with open(edited / "amazonia/model/network.py", "a") as module:
        module.write("# edited after the kill\n")

    result = run([DVC, "repro", "train"], repo)
    assert first_epoch(result.stdout) == kills[2] + 1, "training should resume after the last finished epoch"
    final = json.loads((repo / state).read_text())
    assert final == {**final, "epoch": epochs, "complete": True}
    live = "metrics/train"
    resumed, resumed_live = saved_arrays(repo / "models/model.keras"), folder_texts(repo / live)

    result = run([DVC, "repro", "train"], edited)
    assert first_epoch(result.stdout) == 1, "a code edit must start training from scratch"
    fingerprint = json.loads((edited / state).read_text())["fingerprint"]
    assert fingerprint["code"] != killed["fingerprint"]["code"]
    assert {**fingerprint, "code": None} == {**killed["fingerprint"], "code": None}, "only the code differs"
    uninterrupted = saved_arrays(edited / "models/model.keras")
    assert resumed.keys() == uninterrupted.keys()
    assert any(name.startswith("optimizer/") for name in resumed), "Adam's state must be saved"
    assert [name for name in resumed if not np.array_equal(resumed[name], uninterrupted[name])] == []
    assert resumed_live == folder_texts(edited / live)
    assert len(resumed_live["plots/metrics/train/loss.tsv"].splitlines()) == 1 + epochs
    print("killed after epochs", kills)
