"""The smoke check of an exported SavedModel, before anyone serves it.

It runs on the export stage's candidate, which :mod:`amazonia.export.publish` puts
where servers poll only once it passed. It reads what ``saved_model_cli show --all``
shows (tag-sets, signatures, input and output names, dtypes, shapes) and holds it
against :data:`amazonia.export.contract.SIGNATURES`, the chip size being the Keras
model's; it makes sure no function needs XLA, which TF Serving leaves off on CPU; then it
runs both signatures on random input and on real test chips, compares
them with the Keras model (predicting with the export's ``evaluate.tta``) and with each
other, and replays TF Serving's warmup file through the signatures it names; then, once
all of that passed, it runs ``saved_model_cli run`` once, as an outside client would.

Every check but that last runs even when an earlier one failed (unless it needs that
one's result), and a failure is a line in the report, not a traceback: the report says
all that is wrong with an export at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from amazonia.common.errors import AmazoniaError
from amazonia.common.tf_errors import tf_error_message
from amazonia.export.chips import model_inputs, read_chips
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    LABEL_MAP_ASSET,
    SAVED_MODEL_PB,
    SERVE_TAG,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    SIGNATURES,
    THRESHOLDS_ASSET,
    check_label_map,
    check_thresholds,
    load_assets,
)
from amazonia.export.saved_model import load_trained_model
from amazonia.export.warmup import WARMUP_FILE, WarmupFileError, read_warmup_requests
from amazonia.model import augment
from amazonia.model.names import INPUT_NAME, OUTPUT_GROUND, OUTPUT_WEATHER
from amazonia.model.preprocessing import model_input_size

log = logging.getLogger(__name__)

SMOKE_CHIPS = 8  # real test chips pushed through both signatures
RANDOM_BATCH = 4
SOFTMAX_TOLERANCE = 1e-5  # |sum of a weather row - 1|
KERAS_TOLERANCE = 1e-5  # SavedModel vs models/model.keras, same input
# One preprocessing function on both paths, so the pixels are identical; what remains is
# float noise from running the batch through a different graph.
BYTES_TOLERANCE = 1e-5
# The same graph on the same input in another process: saved_model_cli runs it through a
# Session whose graph rewrites round at other points, 1.25e-6 apart on a barely trained
# ResNet50 (whose outputs move 1.5e-6 for a 1-ulp change of an input): float32 noise, as
# KERAS_TOLERANCE allows.
CLI_TOLERANCE = 1e-5
CLI_TIMEOUT_S = 300
_INIT_OP_SIGNATURE = "__saved_model_init_op"  # SavedModel bookkeeping, not a serving signature
# The attribute of a function TensorFlow must compile with XLA (tf.function(jit_compile=True)).
_XLA_MUST_COMPILE = "_XlaMustCompile"
_OUTPUTS = sorted(SIGNATURES[SIGNATURE_FLOAT].outputs)

Outputs = dict[str, np.ndarray]


class SmokeCheckError(AmazoniaError):
    """The exported SavedModel failed a smoke check; the message names the check."""


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    ran: bool = True  # False: skipped because a check it needs failed

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class SmokeReport:
    """All checks of one export; :meth:`to_json` is what ``metrics/smoke.json`` holds."""

    model: str
    checks: list[CheckResult] = field(default_factory=list)
    signatures: dict[str, dict] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model": self.model,
            "checks": [c.to_json() for c in self.checks],
            "signatures": self.signatures,
            "max_abs_diff": self.max_abs_diff,
        }

    def raise_if_failed(self) -> None:
        """Raise :class:`SmokeCheckError` naming every check that failed (not those skipped)."""
        if self.passed:
            return
        failed = [c for c in self.checks if c.ran and not c.passed]
        skipped = sum(not c.ran for c in self.checks)
        message = "; ".join(f"check '{c.name}' failed: {c.detail}" for c in failed)
        more = f" ({skipped} check(s) depending on them not run)" if skipped else ""
        raise SmokeCheckError(f"smoke check of {self.model}: {message}{more}")


def run_smoke_check(
    saved_model_dir: Path | str,
    keras_model: Path | str,
    test_split: Path | str,
    *,
    tta: str = augment.NONE,
    chips: int = SMOKE_CHIPS,
    seed: int = 0,
) -> SmokeReport:
    """Check the export at ``saved_model_dir``; never raises for a failed check.

    ``keras_model`` is the ``.keras`` file it was exported from (its input size is the
    chip size the signatures must take), ``test_split`` a TFRecord split folder, ``tta``
    the test-time augmentation the export was made with: the Keras reference predicts
    with it too (:func:`amazonia.model.augment.predict`). Call
    :meth:`SmokeReport.raise_if_failed` after saving the report.
    """
    smoke = _SmokeCheck(Path(saved_model_dir), Path(keras_model), Path(test_split), tta, chips, seed)
    report = SmokeReport(model=str(saved_model_dir))
    run = partial(_run_check, report)
    run("files", smoke.check_files)
    run("tag-sets", smoke.check_tag_sets)
    run("signatures", smoke.check_signature_names, needs=["tag-sets"])
    run("no XLA", smoke.check_no_xla, needs=["tag-sets"])
    run("keras model", smoke.load_keras)
    for name in SIGNATURES:
        for side in ("inputs", "outputs"):
            run(
                f"signature {name} {side}",
                partial(smoke.check_signature, name, side),
                needs=["tag-sets", "keras model"],
            )
    run("assets", smoke.check_assets)
    run("load", smoke.load)
    run("test chips", smoke.read_chips, needs=["keras model"])
    run(f"{SIGNATURE_FLOAT} on random input", smoke.run_float_random, needs=["load", "keras model"])
    run(f"{SIGNATURE_FLOAT} on test chips", smoke.run_float_chips, needs=["load", "test chips"])
    run(f"{SIGNATURE_BYTES} on test chips", smoke.run_bytes_chips, needs=["load", "test chips"])
    run("warmup requests", smoke.replay_warmup, needs=["load"])
    run(
        "saved model vs keras",
        smoke.compare_keras,
        needs=[f"{SIGNATURE_FLOAT} on random input", f"{SIGNATURE_FLOAT} on test chips", "keras model"],
    )
    run(
        f"{SIGNATURE_BYTES} vs {SIGNATURE_FLOAT}",
        smoke.compare_bytes,
        needs=[f"{SIGNATURE_FLOAT} on test chips", f"{SIGNATURE_BYTES} on test chips"],
    )
    # Last, and only once every other check passed: the slowest check (a second process
    # loads TensorFlow and the whole model again), and a failed export already fails the stage.
    run("saved_model_cli run", smoke.run_cli, needs=[c.name for c in report.checks if c.ran])
    report.signatures = smoke.signatures
    report.max_abs_diff = smoke.max_abs_diff
    return report


def describe_saved_model(saved_model_dir: Path | str) -> dict[str, dict]:
    """What ``saved_model_cli show --all`` shows, as data read from ``saved_model.pb``:
    ``{tag-set: {signature: {"method", "inputs", "outputs"}}}``, each tensor as
    ``{"dtype", "shape"}`` (-1 for an unknown dimension, ``None`` for unknown rank)."""
    return _describe(_read_saved_model_pb(saved_model_dir))


def xla_functions(saved_model_dir: Path | str) -> list[str]:
    """The names of the functions in ``saved_model.pb`` that TensorFlow must compile with XLA."""
    return _xla_functions(_read_saved_model_pb(saved_model_dir))


def _read_saved_model_pb(saved_model_dir: Path | str) -> saved_model_pb2.SavedModel:
    return saved_model_pb2.SavedModel.FromString((Path(saved_model_dir) / SAVED_MODEL_PB).read_bytes())


def _describe(proto: saved_model_pb2.SavedModel) -> dict[str, dict]:
    described = {}
    for meta_graph in proto.meta_graphs:
        tag_set = ",".join(sorted(meta_graph.meta_info_def.tags))
        described[tag_set] = {
            name: {
                "method": sig.method_name,
                "inputs": {k: _describe_tensor(v) for k, v in sorted(sig.inputs.items())},
                "outputs": {k: _describe_tensor(v) for k, v in sorted(sig.outputs.items())},
            }
            for name, sig in sorted(meta_graph.signature_def.items())
            if name != _INIT_OP_SIGNATURE
        }
    return described


def _xla_functions(proto: saved_model_pb2.SavedModel) -> list[str]:
    return sorted(
        function.signature.name
        for meta_graph in proto.meta_graphs
        for function in meta_graph.graph_def.library.function
        if function.attr[_XLA_MUST_COMPILE].b
    )


class _CheckFailed(Exception):
    """A check found something wrong; the message is the report's detail."""


def _run_check(report: SmokeReport, name: str, check: Callable[[], str], needs: Iterable[str] = ()) -> None:
    passed = {c.name for c in report.checks if c.passed}
    unmet = [n for n in needs if n not in passed]
    if unmet:
        detail = "not run: needs " + ", ".join(f"'{n}'" for n in unmet) + ", which did not pass"
        report.checks.append(CheckResult(name, False, detail, ran=False))
        return
    try:
        result = CheckResult(name, True, check())
    except _CheckFailed as failure:
        result = CheckResult(name, False, str(failure))
    except Exception as err:  # a broken export raises anything from anywhere in TF
        result = CheckResult(name, False, _describe_error(err))
    log.log(logging.INFO if result.passed else logging.WARNING, "check %r: %s", name, result.detail)
    report.checks.append(result)


class _SmokeCheck:
    """The checks, as methods sharing what earlier ones loaded and computed."""

    def __init__(
        self,
        saved_model_dir: Path,
        keras_path: Path,
        test_split: Path,
        tta: str,
        chips: int,
        seed: int,
    ):
        self.dir = saved_model_dir
        self.keras_path = keras_path
        self.test_split = test_split
        self.tta = tta
        self.n_chips = chips
        self.seed = seed
        self.image_size = 0  # the Keras model's, once loaded
        self.random_input = np.zeros((0, 0, 0, 3), np.float32)
        self.saved_model = saved_model_pb2.SavedModel()  # saved_model.pb, once read
        self.signatures: dict[str, dict] = {}
        self.max_abs_diff: dict[str, float] = {}
        self.outputs: dict[str, Outputs] = {}
        self.loaded: Any = None
        self.keras_model: Any = None
        self.chips = np.zeros((0, 0, 0, 3), np.float32)
        self.files: list[bytes] = []  # the test chips' stored files, as serving_bytes gets them

    # What saved_model_cli show --all shows

    def check_files(self) -> str:
        if not self.dir.is_dir():
            raise _CheckFailed(f"{self.dir} is not a folder; run 'dvc repro export'")
        required = [
            SAVED_MODEL_PB,
            "variables/variables.index",
            f"{ASSETS_EXTRA}/{LABEL_MAP_ASSET}",
            f"{ASSETS_EXTRA}/{THRESHOLDS_ASSET}",
        ]
        missing = [f for f in required if not (self.dir / f).is_file()]
        if not any((self.dir / "variables").glob("variables.data-*")):
            missing.insert(2, "variables/variables.data-*")
        if missing:
            raise _CheckFailed(
                f"missing {', '.join(missing)} in {self.dir} (an incomplete export); rerun 'dvc repro export'"
            )
        return f"{SAVED_MODEL_PB}, variables/, {ASSETS_EXTRA}/{{{LABEL_MAP_ASSET},{THRESHOLDS_ASSET}}}"

    def check_tag_sets(self) -> str:
        self.saved_model = _read_saved_model_pb(self.dir)
        self.signatures = _describe(self.saved_model)
        tag_sets = sorted(self.signatures)
        if tag_sets != [SERVE_TAG]:
            raise _CheckFailed(f"expected tag-sets {SERVE_TAG}; found {'; '.join(tag_sets) or 'none'}")
        return SERVE_TAG

    def check_signature_names(self) -> str:
        expected, found = sorted(SIGNATURES), sorted(self.signatures[SERVE_TAG])
        if found != expected:
            raise _CheckFailed(
                f"expected signatures {', '.join(expected)}; found {', '.join(found) or 'none'}"
            )
        return ", ".join(found)

    def check_no_xla(self) -> str:
        # TF Serving runs with --xla_cpu_compilation_enabled=false unless told otherwise; its
        # flag's help says such a model returns a bad status on its first compilation request.
        names = _xla_functions(self.saved_model)
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise _CheckFailed(
                f"{len(names)} function(s) must be compiled by XLA ({shown}), which TF Serving leaves off "
                "on CPU (--xla_cpu_compilation_enabled=false: such a model returns a bad status on its "
                "first compilation request, TF Serving documents). "
                "Export what amazonia.model.network.for_inference makes of the model (depthwise grouped "
                "convolutions as DepthwiseConv2D), or leave out the layers that need XLA"
            )
        return "no function needs XLA (TF Serving's --xla_cpu_compilation_enabled is off by default)"

    def check_signature(self, name: str, side: str) -> str:
        found_sig = self.signatures[SERVE_TAG].get(name)
        if found_sig is None:
            raise _CheckFailed(f"no signature {name!r} in tag-set {SERVE_TAG!r}")
        expected, found = SIGNATURES[name].describe(self.image_size)[side], found_sig[side]
        if sorted(expected) != sorted(found):
            raise _CheckFailed(
                f"expected {side} {', '.join(sorted(expected))}; found {', '.join(sorted(found)) or 'none'}"
            )
        wrong = [
            f"{side[:-1]} {t}: expected {_format_tensor(expected[t])}, found {_format_tensor(found[t])}"
            for t in sorted(expected)
            if expected[t] != found[t]
        ]
        if wrong:
            raise _CheckFailed("; ".join(wrong))
        return ", ".join(f"{t} {_format_tensor(found[t])}" for t in sorted(found))

    def check_assets(self) -> str:
        label_map, thresholds = load_assets(self.dir)
        where = self.dir / ASSETS_EXTRA
        check_label_map(label_map, str(where / LABEL_MAP_ASSET))
        check_thresholds(thresholds, str(where / THRESHOLDS_ASSET))
        return f"{len(label_map['weather'])} weather + {len(label_map['ground'])} ground labels, thresholds"

    # Loading what is compared

    def load(self) -> str:
        self.loaded = tf.saved_model.load(str(self.dir), tags=[SERVE_TAG])
        return f"signatures {', '.join(sorted(self.loaded.signatures))}"

    def load_keras(self) -> str:
        self.keras_model = load_trained_model(self.keras_path)
        self.image_size = model_input_size(self.keras_model)
        size = self.image_size
        self.random_input = np.random.default_rng(self.seed).random((RANDOM_BATCH, size, size, 3), np.float32)
        return f"{self.keras_path} ({self.keras_model.count_params()} parameters, {size} px chips)"

    def read_chips(self) -> str:
        chips = read_chips(self.test_split, limit=self.n_chips)
        if not len(chips):
            raise _CheckFailed(f"{self.test_split} holds no chips; the smoke check needs at least one")
        self.files = chips.files
        # What training and evaluation feed the model from these chips.
        self.chips = model_inputs(chips.files, self.image_size)
        return f"{len(chips)} chips from {self.test_split} ({chips.names[0]}, ...)"

    # Running the signatures

    def run_float_random(self) -> str:
        return self._run("float random", SIGNATURE_FLOAT, INPUT_NAME, self.random_input)

    def run_float_chips(self) -> str:
        return self._run("float chips", SIGNATURE_FLOAT, INPUT_NAME, self.chips)

    def run_bytes_chips(self) -> str:
        return self._run("bytes chips", SIGNATURE_BYTES, INPUT_BYTES, np.array(self.files, dtype=object))

    def _run(self, key: str, signature: str, input_name: str, batch: np.ndarray) -> str:
        if signature not in self.loaded.signatures:
            raise _CheckFailed(f"the loaded SavedModel has no signature {signature!r}")
        result = self.loaded.signatures[signature](**{input_name: tf.constant(batch)})
        outputs = {name: value.numpy() for name, value in result.items()}
        detail = _check_outputs(outputs, len(batch))
        self.outputs[key] = outputs
        return detail

    def replay_warmup(self) -> str:
        """Every request of TF Serving's warmup file through the signature it names, as a
        server replays them before the version answers."""
        where = f"{WARMUP_FILE} of {self.dir}"
        try:
            requests = list(read_warmup_requests(self.dir))
        except FileNotFoundError:
            raise _CheckFailed(f"no {where}; rerun 'dvc repro export'") from None
        except WarmupFileError as err:
            raise _CheckFailed(f"{err} (in {self.dir}); rerun 'dvc repro export'") from None
        counts = Counter(request.signature_name for request in requests)
        cold = [name for name in SIGNATURES if not counts[name]]
        if cold:
            raise _CheckFailed(f"{where}: no request for {', '.join(cold)}, which would answer cold")
        for index, request in enumerate(requests):
            contract = SIGNATURES.get(request.signature_name)
            if contract is None:
                raise _CheckFailed(f"{where}: request {index} names signature {request.signature_name!r}")
            if sorted(request.inputs) != sorted(contract.inputs):
                raise _CheckFailed(
                    f"{where}: request {index} ({request.signature_name}) has inputs "
                    f"{', '.join(sorted(request.inputs))}, not {', '.join(sorted(contract.inputs))}"
                )
            what = f"{where}: request {index} ({request.signature_name})"
            (rows,) = {len(value) for value in request.inputs.values()}
            try:
                result = self.loaded.signatures[request.signature_name](
                    **{name: tf.constant(value) for name, value in request.inputs.items()}
                )
                _check_outputs({name: value.numpy() for name, value in result.items()}, rows)
            except _CheckFailed as failure:
                raise _CheckFailed(f"{what}: {failure}") from None
            except Exception as err:  # whatever TensorFlow raises for inputs a signature refuses
                raise _CheckFailed(f"{what}: {_describe_error(err)}") from None
        shown = ", ".join(f"{counts[name]} {name}" for name in sorted(counts))
        return f"{len(requests)} requests ({shown}) answered with finite outputs of the contract's shapes"

    # Comparing

    def compare_keras(self) -> str:
        diff = max(
            _max_abs_diff(_as_numpy(augment.predict(self.keras_model, batch, self.tta)), self.outputs[key])
            for key, batch in (("float random", self.random_input), ("float chips", self.chips))
        )
        self.max_abs_diff["saved_model_vs_keras"] = diff
        if diff > KERAS_TOLERANCE:
            raise _CheckFailed(
                f"outputs differ from {self.keras_path} with tta {self.tta} by {diff:.2e} "
                f"(tolerance {KERAS_TOLERANCE:g}); was the export made with another evaluate.tta?"
            )
        inputs = f"random input and test chips, tta {self.tta}"
        return f"max |difference| {diff:.2e} <= {KERAS_TOLERANCE:g} on {inputs}"

    def compare_bytes(self) -> str:
        diff = _max_abs_diff(self.outputs["bytes chips"], self.outputs["float chips"])
        self.max_abs_diff["bytes_vs_float"] = diff
        if diff > BYTES_TOLERANCE:
            raise _CheckFailed(
                f"{SIGNATURE_BYTES} differs from {SIGNATURE_FLOAT} on the same chips by {diff:.2e} "
                f"(tolerance {BYTES_TOLERANCE:g}): the graph decodes or scales differently from training"
            )
        return f"max |difference| {diff:.2e} <= {BYTES_TOLERANCE:g} on {len(self.files)} chips"

    def run_cli(self) -> str:
        cli = _saved_model_cli()
        with tempfile.TemporaryDirectory(prefix="amazonia-smoke-") as tmp:
            npy, outdir = Path(tmp) / f"{INPUT_NAME}.npy", Path(tmp) / "out"
            np.save(npy, self.chips)
            command = [str(cli), "run", "--dir", str(self.dir), "--tag_set", SERVE_TAG]
            command += [
                "--signature_def",
                SIGNATURE_FLOAT,
                "--inputs",
                f"{INPUT_NAME}={npy}",
                "--outdir",
                str(outdir),
            ]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
            done = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise _CheckFailed(f"saved_model_cli run exited {done.returncode}: {last[:300]}")
            missing = [n for n in _OUTPUTS if not (outdir / f"{n}.npy").is_file()]
            if missing:
                raise _CheckFailed(f"saved_model_cli run wrote no {', '.join(f'{n}.npy' for n in missing)}")
            outputs = {n: np.load(outdir / f"{n}.npy") for n in _OUTPUTS}
        diff = _max_abs_diff(outputs, self.outputs["float chips"])
        self.max_abs_diff["cli_vs_python"] = diff
        if diff > CLI_TOLERANCE:
            raise _CheckFailed(f"saved_model_cli's outputs differ from the Python API's by {diff:.2e}")
        return (
            f"saved_model_cli run --signature_def {SIGNATURE_FLOAT} on {len(self.chips)} chips: "
            f"max |difference| {diff:.2e} <= {CLI_TOLERANCE:g}"
        )


def _check_outputs(outputs: Outputs, batch: int) -> str:
    """Output names and shapes, softmax rows summing to 1, sigmoids in [0, 1]."""
    if sorted(outputs) != _OUTPUTS:
        raise _CheckFailed(f"expected outputs {', '.join(_OUTPUTS)}; found {', '.join(sorted(outputs))}")
    for name, contract in SIGNATURES[SIGNATURE_FLOAT].outputs.items():
        shape = (batch, *contract.shape[1:])
        if outputs[name].shape != shape:
            raise _CheckFailed(f"output {name} has shape {outputs[name].shape}, expected {shape}")
        if not np.isfinite(outputs[name]).all():
            raise _CheckFailed(f"output {name} holds NaN or infinite values")
    weather, ground = outputs[OUTPUT_WEATHER], outputs[OUTPUT_GROUND]
    off = np.abs(weather.sum(axis=1) - 1)
    if off.size and off.max() > SOFTMAX_TOLERANCE:
        row = int(off.argmax())
        raise _CheckFailed(
            f"{OUTPUT_WEATHER} row {row} sums to {weather[row].sum():.6f}, not 1 ± {SOFTMAX_TOLERANCE:g} "
            "(is the head still a softmax?)"
        )
    for name, values in ((OUTPUT_WEATHER, weather), (OUTPUT_GROUND, ground)):
        if values.size and (values.min() < 0 or values.max() > 1):
            raise _CheckFailed(f"{name} values span [{values.min():.4f}, {values.max():.4f}], outside [0, 1]")
    if not batch:
        return "0 rows"
    return (
        f"{batch} rows; {OUTPUT_WEATHER} sums within {off.max():.1e} of 1; "
        f"{OUTPUT_GROUND} in [{ground.min():.3g}, {ground.max():.3g}]"
    )


def _max_abs_diff(a: Outputs, b: Outputs) -> float:
    for name in _OUTPUTS:
        if name not in a or name not in b or a[name].shape != b[name].shape:
            raise _CheckFailed(f"cannot compare output {name}: missing or of another shape")
    return max(float(np.abs(a[n].astype(np.float64) - b[n]).max(initial=0)) for n in _OUTPUTS)


def _as_numpy(outputs: Mapping[str, Any]) -> Outputs:
    if not isinstance(outputs, Mapping):
        raise _CheckFailed(f"the Keras model returns a {type(outputs).__name__}, not a dict of named outputs")
    return {name: np.asarray(value) for name, value in outputs.items()}


def _describe_tensor(info: Any) -> dict[str, Any]:
    shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": shape}


def _format_tensor(tensor: dict[str, Any]) -> str:
    shape = "unknown rank" if tensor["shape"] is None else "(" + ", ".join(map(str, tensor["shape"])) + ")"
    return f"{tensor['dtype']} {shape}"


def _describe_error(err: Exception) -> str:
    if isinstance(err, AmazoniaError):
        return str(err)
    return f"{type(err).__name__}: {tf_error_message(err)[:300]}"


def _saved_model_cli() -> Path:
    """The CLI installed with this TensorFlow, next to the running Python."""
    beside = Path(sys.executable).parent / "saved_model_cli"
    if beside.is_file():
        return beside
    found = shutil.which("saved_model_cli")
    if found is None:
        raise _CheckFailed(
            f"saved_model_cli not found next to {sys.executable} nor on PATH; install tensorflow"
        )
    return Path(found)
