"""Fitting the model with per-epoch checkpoints that survive a kill -9.

After each epoch the model (weights *and* optimizer state) is saved as
``epoch-NNNN.keras`` and then ``state.json`` is atomically pointed at it. A rerun
with the same fingerprint (params and data) resumes after the last finished epoch
and ends with the same number of epochs; any other rerun starts from scratch.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from amazonia.common.files import write_json_atomic

STATE_FILE = "state.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    model: keras.Model
    initial_epoch: int


def load_checkpoint(directory: Path | str, fingerprint: dict) -> Resume | None:
    """The model to resume from, or None when there is nothing (compatible) to resume."""
    state_path = Path(directory) / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError:
        log.warning("%s unreadable; training from scratch", state_path)
        return None
    if state.get("complete") or state.get("fingerprint") != fingerprint:
        log.info("checkpoint in %s is for another run; training from scratch", directory)
        return None
    model_path = Path(directory) / state["model"]
    log.info("resuming from %s after epoch %d", model_path, state["epoch"])
    return Resume(keras.saving.load_model(model_path), int(state["epoch"]))


def clear_checkpoints(directory: Path | str) -> None:
    """Forget earlier checkpoints (a fresh start); the folder itself stays for DVC."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.is_file():
            path.unlink()


def mark_complete(directory: Path | str) -> None:
    """A finished run's checkpoint is not resumed: a forced rerun trains again."""
    state_path = Path(directory) / STATE_FILE
    state = json.loads(state_path.read_text())
    write_json_atomic(state_path, {**state, "complete": True})


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the model after every epoch, then point ``state.json`` at it."""

    def __init__(self, directory: Path | str, fingerprint: dict):
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        name = f"epoch-{epoch + 1:04d}.keras"
        tmp = self.directory / f".tmp-{name}"
        self.model.save(tmp)
        os.replace(tmp, self.directory / name)
        write_json_atomic(
            self.directory / STATE_FILE,
            {"epoch": epoch + 1, "model": name, "fingerprint": self.fingerprint, "complete": False},
        )
        for old in self.directory.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink()
