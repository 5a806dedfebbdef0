"""docs/params.md, written from the params schema: ``python -m amazonia.params_doc`` (``make docs``).

Every key's type, default, accepted values and meaning live once, in the pydantic models
(:mod:`amazonia.common.params`, and :mod:`amazonia.serving.params` for ``serve:``); which
stages rerun when a key changes is read from ``dvc.yaml``. ``tests/test_params_doc.py``
fails while docs/params.md differs from what this writes.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from amazonia.common.files import write_text_atomic
from amazonia.common.params import Params
from amazonia.serving.params import SECTION as SERVE_SECTION
from amazonia.serving.params import ServeParams

DOC = Path("docs/params.md")
DVC_YAML = Path("dvc.yaml")

INTRO = """\
# Params

<!-- Written by `make docs` (python -m amazonia.params_doc) from amazonia/common/params.py,
amazonia/serving/params.py and dvc.yaml: edit those, not this page. -->

All in `params.yaml`, validated when a stage starts: an unknown key, a wrong type, a value out of
range, `.inf` or `.nan`, or a key given twice (which YAML would silently resolve to the last) stops
it with a message naming the key, the value and the accepted range, so every value that validates
can run. `serve.*` is validated when `amazonia serve` starts instead (no stage reads it; limits
under [Serving](serving.md)). *Reruns* lists the stages `dvc repro` runs again when the key
changes (and, through their outputs, those after them); "none" marks a key that says how a stage
runs, never what it computes.
"""

OUTRO = """\
Logs are quiet by default; `AMAZONIA_LOG_LEVEL=INFO dvc repro` shows more.
"""

_BOUND_SIGNS = {"gt": "<", "ge": "≤", "lt": "<", "le": "≤"}


def render(dvc_yaml: Path = DVC_YAML) -> str:
    """The text of docs/params.md for the schema as it is and the stages of ``dvc_yaml``."""
    declared = declared_params(dvc_yaml)
    parts = [INTRO]
    sections = [(name, field.annotation) for name, field in Params.model_fields.items()]
    for name, model in sections:
        if name == SERVE_SECTION:
            model = ServeParams  # Params keeps serve: opaque; its schema is the server's
        parts.append(_section(name, model, declared))
    parts.append(OUTRO)
    return "\n".join(parts)


def declared_params(dvc_yaml: Path = DVC_YAML) -> dict[str, list[str]]:
    """Each stage of ``dvc_yaml`` and the params it declares (a section or a dotted key);
    a ``foreach`` stage once, by its name."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    declared = {}
    for stage, body in stages.items():
        body = body.get("do", body)
        declared[stage] = [p for p in body.get("params") or [] if isinstance(p, str)]
    return declared


def _section(name: str, model: type[BaseModel], declared: dict[str, list[str]]) -> str:
    lines = [f"## `{name}`", ""]
    if model.__doc__:
        lines += [_one_paragraph(model.__doc__), ""]
    lines += ["| key | default | accepted | reruns | meaning |", "|---|---|---|---|---|"]
    for key, field in leaf_fields(name, model):
        reruns = ", ".join(f"`{s}`" for s in _stages_declaring(key, declared)) or "none"
        cells = [f"`{key}`", _default(field), _accepted(key, field), reruns, field.description or ""]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def leaf_fields(prefix: str, model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    """``(dotted key, field)`` for every leaf of ``model``, nested sections flattened."""
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from leaf_fields(key, field.annotation)
        else:
            yield key, field


def _stages_declaring(key: str, declared: dict[str, list[str]]) -> list[str]:
    return [stage for stage, params in declared.items() if any(_covers(p, key) for p in params)]


def _covers(declared: str, key: str) -> bool:
    """``train`` covers ``train.seed``; ``export`` covers ``export.bless.min_gain_over_baseline``."""
    return key == declared or key.startswith(declared + ".")


def _one_paragraph(docstring: str) -> str:
    text = docstring.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in text.splitlines()).replace("``", "`")


def _default(field: FieldInfo) -> str:
    return f"`{_yaml_scalar(field.get_default(call_default_factory=True))}`"


def _yaml_scalar(value: Any) -> str:
    """``value`` as params.yaml writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if value >= 100_000 else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return str(value)


def _accepted(key: str, field: FieldInfo) -> str:
    """What validates: the choices of a Literal, a number's range, a string's pattern."""
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    if annotation is bool:
        return "`true`, `false`"
    kind = {int: "integer", float: "number", str: "text"}.get(annotation)
    if kind is None and typing.get_origin(annotation) is list:
        return "a list of text"
    lower = upper = ""
    pattern = max_length = None
    for rule in field.metadata:
        for attr, sign in _BOUND_SIGNS.items():
            value = getattr(rule, attr, None)
            if value is None:
                continue
            shown = _yaml_scalar(value)
            if attr in ("gt", "ge"):
                lower = f"{shown} {sign} "
            else:
                upper = f" {sign} {shown}"
        pattern = getattr(rule, "pattern", None) or pattern
        max_length = getattr(rule, "max_length", None) or max_length
    name = key.rsplit(".", 1)[-1]
    if lower or upper:
        return f"{kind}, {lower}{name}{upper}"
    if pattern:
        return f"{kind} matching `{pattern}`"
    if max_length:
        return f"{kind}, at most {max_length} characters"
    return kind or str(annotation)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m amazonia.params_doc", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DOC, help=f"where to write (default {DOC})")
    args = parser.parse_args(argv)
    write_text_atomic(args.out, render())


if __name__ == "__main__":
    main()
