"""dvc.yaml against the code: every module a stage runs is a dep, every param it reads is declared.

The walk is static (``ast``), over every import a module makes, lazy ones inside
functions included, so it sees what a stage may run, not just what one run ran.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from amazonia.common.params import Params
from tests.conftest import ROOT

PACKAGE = "amazonia"
# How a stage runs, never what it computes (workers, caching, which engine writes the same
# shards): declared by no stage on purpose, so changing them reruns nothing.
UNDECLARED_SECTIONS = {"runtime"}
UNDECLARED_KEYS = {"serialize.runner", "serialize.beam_options"}


@dataclass(frozen=True)
class Stage:
    name: str
    script: Path  # relative to ROOT
    deps: tuple[str, ...]
    params: tuple[str, ...]
    interpolated: tuple[str, ...]  # ${section.key} used in the stage's definition


def load_stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, Stage]:
    stages = {}
    for name, spec in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        spec = spec.get("do", spec)
        module = spec["cmd"].split()[2]  # python -m stages.<name> [args]
        params: list[str] = []
        for entry in spec.get("params", []):
            params.extend([entry] if isinstance(entry, str) else [k for keys in entry.values() for k in keys])
        text = yaml.safe_dump(spec)
        interpolated = tuple(
            part.split("}")[0] for part in text.split("${")[1:] if not part.startswith("item")
        )
        stages[name] = Stage(
            name=name,
            script=Path(*module.split(".")).with_suffix(".py"),
            deps=tuple(d for d in spec.get("deps", []) if "${" not in d),
            params=tuple(params),
            interpolated=interpolated,
        )
    return stages


def module_file(module: str) -> Path | None:
    """The file of ``amazonia.x.y`` (module or package), relative to ROOT; None if no such module."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """``amazonia`` modules imported anywhere in ``path`` (names that are submodules count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            submodules = (f"{node.module}.{a.name}" for a in node.names)
            found.update(m for m in submodules if module_file(m))
    return found


def with_parents(module: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def code_closure(script: Path) -> set[Path]:
    """Every file under ``amazonia/`` that running ``script`` may execute or read."""
    seen: set[str] = set()
    todo = [m for name in imported_modules(script) for m in with_parents(name)]
    while todo:
        module = todo.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        todo.extend(m for name in imported_modules(module_file(module)) for m in with_parents(name))
    files = {module_file(m) for m in seen}
    return files | {data for f in files for data in package_data_read_by(f)}


def package_data_read_by(path: Path) -> set[Path]:
    """Non-Python files beside ``path`` that its code names (``tag_combinations.csv``)."""
    source = (ROOT / path).read_text()
    return {
        sibling.relative_to(ROOT)
        for sibling in (ROOT / path).parent.iterdir()
        if sibling.is_file() and sibling.suffix not in {".py", ".pyc"} and f'"{sibling.name}"' in source
    }


def is_docstring_only(path: Path) -> bool:
    body = ast.parse((ROOT / path).read_text()).body
    return len(body) <= 1 and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def uncovered(stage: Stage) -> list[str]:
    """Files the stage runs that none of its deps (file or folder) covers."""
    closure = code_closure(stage.script) | {stage.script}
    missing = []
    for path in sorted(closure):
        if path.name == "__init__.py" and is_docstring_only(path):
            continue  # a docstring cannot change an output
        if not any(path == Path(d) or Path(d) in path.parents for d in stage.deps):
            missing.append(str(path))
    return missing


def params_read(script: Path) -> set[str]:
    """``section`` or ``section.key`` for every ``params.<section>[.<key>]`` in the script.

    Scripts bind ``params = load_params()`` and reach keys through that name only; a bare
    ``params.section`` (passed on whole) counts as reading the whole section.
    """
    tree = ast.parse((ROOT / script).read_text())
    read: set[str] = set()
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "params" and isinstance(node.ctx, ast.Load):
            chain = []
            current: ast.AST = node
            while isinstance(parents.get(current), ast.Attribute) and len(chain) < 2:
                current = parents[current]
                chain.append(current.attr)
            if not chain:
                raise AssertionError(f"{script}: 'params' is used whole; read params.<section>.<key>")
            read.add(".".join(chain))
    return read


def undeclared_params(stage: Stage) -> list[str]:
    read = params_read(stage.script) | set(stage.interpolated)
    declared = set(stage.params)
    return sorted(
        key
        for key in read
        if key.split(".")[0] not in UNDECLARED_SECTIONS
        and key not in UNDECLARED_KEYS
        and key not in declared
        and key.split(".")[0] not in declared
    )


def unread_params(stage: Stage) -> list[str]:
    """Declared params the stage never reads: changing them would rerun it for nothing."""
    read = params_read(stage.script) | set(stage.interpolated)
    unread = []
    for key in stage.params:
        section = key.split(".")[0]
        if key in read or section in read:
            continue
        if "." in key:
            unread.append(key)
        else:
            fields = (f"{key}.{f}" for f in getattr(Params(), key).model_dump())
            unread.extend(f for f in fields if f not in read)
    return unread


def declared_how_keys(stage: Stage) -> list[str]:
    """Keys that say how, not what, that the stage declares anyway (a whole section counts):
    changing them would rerun it for the same bytes."""
    declared = set(stage.params)
    return sorted(k for k in UNDECLARED_KEYS if k in declared or k.split(".")[0] in declared)


STAGES = load_stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_module_a_stage_runs_is_one_of_its_deps(name: str) -> None:
    assert uncovered(STAGES[name]) == [], f"dvc.yaml stage {name!r} runs code it does not depend on"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_param_a_stage_reads_is_declared_and_every_declared_one_read(name: str) -> None:
    stage = STAGES[name]
    assert undeclared_params(stage) == [], f"dvc.yaml stage {name!r} reads params it does not declare"
    assert unread_params(stage) == [], f"dvc.yaml stage {name!r} declares params it never reads"
    assert declared_how_keys(stage) == [], f"dvc.yaml stage {name!r} declares how-not-what params"


def test_the_check_fails_when_a_dep_or_a_param_line_is_removed() -> None:
    train = STAGES["train"]
    without_model = Stage(**{**train.__dict__, "deps": tuple(d for d in train.deps if d != "amazonia/model")})
    assert "amazonia/model/network.py" in uncovered(without_model)
    serialize = STAGES["serialize"]
    without_records = Stage(
        **{**serialize.__dict__, "deps": tuple(d for d in serialize.deps if d != "amazonia/data/records")}
    )
    assert "amazonia/data/records/schema.py" in uncovered(without_records)
    ingest = STAGES["ingest"]
    without_synthetic = Stage(
        **{**ingest.__dict__, "deps": tuple(d for d in ingest.deps if d != "amazonia/data/synthetic")}
    )
    assert "amazonia/data/synthetic/tag_combinations.csv" in uncovered(without_synthetic)
    whole = Stage(**{**serialize.__dict__, "params": ("serialize",)})
    assert declared_how_keys(whole) == ["serialize.beam_options", "serialize.runner"]
    export = STAGES["export"]
    narrowed = Stage(**{**export.__dict__, "params": ("export",)})
    assert undeclared_params(narrowed) == ["evaluate.tta"]
    encode = STAGES["encode_labels"]
    widened = Stage(**{**encode.__dict__, "params": (*encode.params, "serialize.shard_mb", "data")})
    data_keys = [f"data.{k}" for k in Params().data.model_dump()]
    assert unread_params(widened) == ["serialize.shard_mb", *data_keys]


def test_package_inits_are_docstrings_and_only_stages_read_params() -> None:
    inits = sorted(p.relative_to(ROOT) for p in (ROOT / PACKAGE).rglob("__init__.py"))
    assert inits and all(is_docstring_only(p) for p in inits), "an __init__.py runs code no dep covers"
    readers = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / PACKAGE).rglob("*.py")
        if "load_params(" in p.read_text() and p.name not in {"params.py", "cli.py"}
    )
    assert readers == [], "library code reads params.yaml behind its stage's declared params"
