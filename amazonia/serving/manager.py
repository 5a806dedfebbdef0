"""The models a server serves, their version labels, and the model config file naming them.

:class:`ModelManager` is to ``amazonia serve`` what TF Serving's ``ServerCore`` is to
``tensorflow_model_server``: it holds a :class:`~amazonia.serving.repository.ModelRepository`
per model (each polling its folder for versions: loading, retries, availability), the
version labels, and answers which loaded version a request names. Its models are one
folder (``--model-base-path``) or those of a TF Serving model config file
(``--model_config_file``, :mod:`amazonia.serving.model_config`), re-read every
``--model_config_file_poll_wait_seconds`` (0: read once, TF Serving's default):

* a config is applied whole or not at all. One that cannot be read, parsed or accepted
  is a one-line error at start; at a re-read it is logged and the last good config
  serves on (TF Serving logs it too). A file that sets nothing (empty, as an editor may
  leave it mid-save) changes nothing, as in TF Serving;
* a label must name a version that is AVAILABLE when the config is applied, else the
  config is refused with TF Serving's ``Request to assign label to version N of model M,
  which is not currently available for inference``. With
  ``--allow_version_labels_for_unavailable_models`` a new label may name any version, but
  an existing label still moves only to an available one (TF Serving's rule). At start
  labels are checked once the models have loaded; TF Serving checks them before, so that
  there, without the flag, any label fails the start;
* models new in a config are loaded before it takes effect (TF Serving waits for them
  too); models gone from it are unloaded after; a model whose ``base_path`` changed is
  loaded anew from there and swapped in; a changed version policy takes effect at the
  model's next poll, which loads what it adds before unloading what it drops.

A request by label takes the label's version: an unknown label is TF Serving's 400
``Unrecognized servable version label: L``, a label whose version is not loaded its 404
``Servable not found for request: Specific(M, N)``.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from amazonia.serving import rest
from amazonia.serving.metrics import ServingMetrics, VersionLabel, VersionState
from amazonia.serving.model_config import ModelConfigError, ModelSource, read_model_config
from amazonia.serving.repository import (
    DEFAULT_MAX_SAVED_MODEL_BYTES,
    LoadedVersion,
    ModelRepository,
    servable_not_found,
    version_not_found,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Served:
    """What is served now; replaced whole, so that requests read it without a lock."""

    sources: tuple[ModelSource, ...]
    repositories: Mapping[str, ModelRepository]
    labels: Mapping[str, Mapping[str, int]]  # model -> label -> version


class ModelManager:
    """The served models (module docstring). Requests call :meth:`get` and :meth:`status`
    from any thread; :meth:`load` runs once, before; the config file is re-read in a
    thread of its own between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        poll_seconds: float,
        *,
        config_file: Path | None = None,
        config_poll_seconds: float = 0.0,
        allow_labels_for_unavailable_versions: bool = False,
        max_saved_model_bytes: int = DEFAULT_MAX_SAVED_MODEL_BYTES,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.poll_seconds = poll_seconds
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds
        self.allow_labels_for_unavailable_versions = allow_labels_for_unavailable_versions
        self.max_saved_model_bytes = max_saved_model_bytes
        self.metrics = metrics
        self._initial = tuple(sources)
        self._served = _Served((), {}, {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_config_error = ""  # logged once, not at every re-read
        if metrics is not None:
            metrics.watch(self.version_states, self.version_labels)

    # --- lifecycle -----------------------------------------------------------------------

    def load(self) -> None:
        """Load every model's versions, then check the labels against them.

        Raises:
            ModelConfigError: a label names a version that did not load (and
                ``allow_labels_for_unavailable_versions`` is off).
        """
        repositories = {}
        for source in self._initial:
            repository = self._repository(source)
            repository.refresh()
            if not repository.versions:
                log.warning(
                    "model %s: no loadable version under %s yet; polling every %g s",
                    source.name,
                    source.base_path,
                    self.poll_seconds,
                )
            repositories[source.name] = repository
        labels = self._checked_labels(self._initial, repositories, {})
        self._served = _Served(self._initial, repositories, labels)

    def start(self) -> None:
        """Poll every model's folder, and the config file if it is to be re-read."""
        for repository in self._served.repositories.values():
            repository.start()
        if self.config_file is not None and self.config_poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_config, name="poll-model-config", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for repository in self._served.repositories.values():
            repository.stop()

    # --- requests ------------------------------------------------------------------------

    def serves(self, name: str) -> bool:
        """Whether ``name`` is a model of the current config (loaded or not)."""
        return name in self._served.repositories

    def get(self, name: str, version: int | None, label: str | None = None) -> LoadedVersion:
        """The loaded version a request names: by ``label``, by ``version``, else the
        highest; TF Serving's 400 for an unknown label, its 404 for what is not loaded."""
        served = self._served
        if label is not None:
            version = served.labels.get(name, {}).get(label)
            if version is None:
                raise rest.bad_request(f"Unrecognized servable version label: {rest.echo(label)}")
        repository = served.repositories.get(name)
        if repository is None:
            raise servable_not_found(name, version)
        return repository.get(name, version)

    def status(self, name: str, version: int | None) -> list[dict]:
        """``model_version_status`` of a model (TF Serving's GetModelStatus)."""
        repository = self._served.repositories.get(name)
        if repository is None:
            raise version_not_found(name, version)
        return repository.status(name, version)

    def version_states(self) -> Iterator[VersionState]:
        """Each version known of each model, with its state (for the metrics)."""
        for name, repository in self._served.repositories.items():
            for version, state in sorted(repository.states().items()):
                yield VersionState(name, version, state)

    def version_labels(self) -> Iterator[VersionLabel]:
        for name, labels in self._served.labels.items():
            for label, version in labels.items():
                yield VersionLabel(name, label, version)

    # --- the model config file -----------------------------------------------------------

    def _poll_config(self) -> None:
        while not self._stop.wait(self.config_poll_seconds):
            try:
                self.reload_config()
            except Exception:  # keep polling; the next round may succeed
                log.exception("re-reading the model config file %s failed", self.config_file)

    def reload_config(self) -> None:
        """Re-read the model config file and apply it if it changed (module docstring);
        what is wrong with it is logged, once, and the last good config serves on."""
        assert self.config_file is not None
        try:
            sources = read_model_config(self.config_file)
            if sources is None:
                return
            if sources == self._served.sources:
                self._last_config_error = ""
                return
            dropped = self._apply(sources)
        except ModelConfigError as err:
            message = str(err)
            if message != self._last_config_error:
                log.error("%s; serving on with the last good model config", message)
                self._last_config_error = message
            return
        self._last_config_error = ""
        log.info("model config file %s applied: %s", self.config_file, ", ".join(s.name for s in sources))
        if dropped:
            gc.collect()  # an unloaded model's versions are held in reference cycles: free them now

    def _apply(self, sources: tuple[ModelSource, ...]) -> int:
        """Labels first (TF Serving's order), then new models loaded, then the swap, then
        what the new config drops unloaded; returns how many models it unloaded."""
        current = self._served
        labels = self._checked_labels(sources, current.repositories, current.labels)
        repositories: dict[str, ModelRepository] = {}
        new = []
        for source in sources:
            repository = current.repositories.get(source.name)
            if repository is not None and repository.base_path == source.base_path:
                repository.policy = source.policy
            else:
                repository = self._repository(source)
                repository.refresh()  # loaded before it is served, and before the old one goes
                new.append(repository)
            repositories[source.name] = repository
        self._served = _Served(sources, repositories, labels)
        for repository in new:
            repository.start()
        dropped = [r for name, r in current.repositories.items() if repositories.get(name) is not r]
        for repository in dropped:
            repository.stop()
            log.info(
                "model %s (%s): unloaded, the new model config drops it",
                repository.name,
                repository.base_path,
            )
        return len(dropped)

    def _repository(self, source: ModelSource) -> ModelRepository:
        return ModelRepository(
            source.base_path,
            source.name,
            self.poll_seconds,
            max_saved_model_bytes=self.max_saved_model_bytes,
            policy=source.policy,
            metrics=self.metrics,
        )

    def _checked_labels(
        self,
        sources: Sequence[ModelSource],
        repositories: Mapping[str, ModelRepository],
        current: Mapping[str, Mapping[str, int]],
    ) -> dict[str, dict[str, int]]:
        """The labels of ``sources``, each naming an available version (TF Serving's
        ``UpdateModelVersionLabelMap``)."""
        labels: dict[str, dict[str, int]] = {}
        for source in sources:
            repository = repositories.get(source.name)
            available = repository.versions if repository is not None else {}
            for label, version in source.labels.items():
                allowed = self.allow_labels_for_unavailable_versions and (
                    current.get(source.name, {}).get(label, version) == version  # new or not moved
                )
                if version not in available and not allowed:
                    raise self._label_error(source.name, label, version)
                labels.setdefault(source.name, {})[label] = version
        return labels

    def _label_error(self, model: str, label: str, version: int) -> ModelConfigError:
        where = f"{self.config_file}: " if self.config_file is not None else ""
        return ModelConfigError(
            f"{where}Request to assign label to version {version} of model {model}, which is not currently "
            f"available for inference (label {label!r}); label a version once it is AVAILABLE, or pass "
            "--allow_version_labels_for_unavailable_models"
        )
