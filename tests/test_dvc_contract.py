"""dvc.yaml against the code: each stage's code deps are exactly the files it can run, and
every param it reads is declared (and none it never reads).

The walk is static (``ast``), over every import a module makes, lazy ones inside
functions included (imports under ``if TYPE_CHECKING:`` never run and do not count), so it
sees what a stage may run, not just what one run ran. It starts at ``stages/__init__.py``
(Python runs it before any stage) and the stage's script, and follows the project's
imports, package ``__init__.py`` files included, and the data files a module names
(``tag_combinations.csv``). A stage's code deps are those files, a folder standing for
its files only where the stage reaches every file DVC sees in it.

Run as a program, it prints the dep lines each stage lacks or has too many, and with
``--write`` puts the exact ones into dvc.yaml (data deps and comments stay)::

    python -m tests.test_dvc_contract           # exits 1 when dvc.yaml is out of date
    python -m tests.test_dvc_contract --write
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from amazonia.common.params import Params
from amazonia.common.paths import CODE_DIRS
from tests.conftest import ROOT

DVC_YAML = ROOT / "dvc.yaml"
STAGES_INIT = Path("stages/__init__.py")
# How a stage runs, never what it computes (workers, caching, which engine writes the same
# shards): declared by no stage on purpose, so changing them reruns nothing.
UNDECLARED_SECTIONS = {"runtime"}
UNDECLARED_KEYS = {"serialize.runner", "serialize.beam_options"}
WRITE_COMMAND = "python -m tests.test_dvc_contract --write"


@dataclass(frozen=True)
class Stage:
    name: str
    script: Path  # relative to ROOT
    deps: tuple[str, ...]
    params: tuple[str, ...]
    interpolated: tuple[str, ...]  # ${section.key} used in the stage's definition


def load_stages(dvc_yaml: Path = DVC_YAML) -> dict[str, Stage]:
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


# --- The code a stage can run --------------------------------------------------------------


def is_code(dep: str | Path) -> bool:
    """Whether a dep (or a file) is the project's code rather than data."""
    return Path(dep).parts[0] in CODE_DIRS


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of ``amazonia.x.y`` (module or package), relative to ``root``; None if no such module."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runnable_nodes(tree: ast.AST):
    """Every node of ``tree`` but the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """The project's modules imported anywhere in ``path`` (names that are submodules count)."""
    parts = path.with_suffix("").parts
    package = parts[:-1]  # of a module; a package's __init__ is its own package
    found: set[str] = set()
    for node in _runnable_nodes(ast.parse((root / path).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [base])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in CODE_DIRS and module_file(name, root))
    return found


def with_parents(module: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def package_data_read_by(path: Path, root: Path = ROOT) -> set[Path]:
    """Non-Python files beside ``path`` that its code names (``tag_combinations.csv``)."""
    source = (root / path).read_text()
    return {
        sibling.relative_to(root)
        for sibling in (root / path).parent.iterdir()
        if sibling.is_file() and sibling.suffix not in {".py", ".pyc"} and f'"{sibling.name}"' in source
    }


def code_closure(script: Path, root: Path = ROOT) -> set[Path]:
    """Every project file that running ``script`` as a stage may execute or read:
    ``stages/__init__.py`` and the script, what they import, and so on."""
    start = {".".join(p.with_suffix("").parts) for p in (STAGES_INIT.parent, script)}
    todo = [m for name in start for m in with_parents(name)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        todo.extend(
            m for name in imported_modules(module_file(module, root), root) for m in with_parents(name)
        )
    files = {module_file(m, root) for m in seen}
    return files | {data for f in files for data in package_data_read_by(f, root)}


# --- dvc.yaml's code deps from it ----------------------------------------------------------


def dvc_files(dep: str | Path, root: Path = ROOT) -> set[Path]:
    """The files DVC hashes for a dep: the file, or every file below the folder except
    Python's bytecode (``.dvcignore``)."""
    path = root / dep
    if path.is_file():
        return {Path(dep)}
    return {
        rel
        for rel in (p.relative_to(root) for p in path.rglob("*") if p.is_file())
        if "__pycache__" not in rel.parts and rel.suffix != ".pyc"
    }


def _dep_order(dep: str) -> tuple[int, str]:
    return CODE_DIRS.index(Path(dep).parts[0]), dep  # the stage's script first, then its library


def exact_code_deps(closure: set[Path], root: Path = ROOT) -> list[str]:
    """The dep lines that cover ``closure`` and nothing else: each file, or the highest
    folder above it whose every file is in ``closure``."""
    deps = set()
    for path in closure:
        dep = path
        for folder in path.parents[:-1]:  # deepest first, the project root excluded
            if not dvc_files(folder, root) <= closure:
                break  # an unreached file here is below every folder above too
            dep = folder
        deps.add(dep.as_posix())
    return sorted(deps, key=_dep_order)


def declared_code_deps(stage: Stage) -> list[str]:
    return [d.rstrip("/") for d in stage.deps if is_code(d)]


def code_deps_diff(stage: Stage, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(lines to add, lines to remove) for ``stage``'s code deps to be exact."""
    exact = exact_code_deps(code_closure(stage.script, root), root)
    declared = declared_code_deps(stage)
    return [d for d in exact if d not in declared], [d for d in declared if d not in exact]


def diff_message(stage: Stage, add: list[str], remove: list[str]) -> str:
    lines = [f"dvc.yaml, stage {stage.name!r}: its code deps are not the code {stage.script} can run."]
    if add:
        lines += ["Add to its deps:", *(f"  - {d}" for d in add)]
    if remove:
        lines += ["Remove from its deps:", *(f"  - {d}" for d in remove)]
    lines.append(f"({WRITE_COMMAND} makes the change.)")
    return "\n".join(lines)


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#-][^:]*):\s*(#.*)?$")
_ITEM = re.compile(r"^(?P<indent> *)- (?P<value>[^#]*?)\s*(#.*)?$")


def rewrite_code_deps(text: str, exact: dict[str, list[str]]) -> str:
    """``text`` (a dvc.yaml) with each named stage's code deps replaced by ``exact[stage]``,
    put where its first code dep was (else first); data deps and comments stay.

    Raises:
        ValueError: a stage in ``exact`` has no ``deps:`` list.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    done: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        key = _KEY.match(line)
        if key and len(key["indent"]) == 2:
            stage = key["key"]
        elif key and not key["indent"]:
            stage = None
        out.append(line)
        i += 1
        if not (key and key["key"] == "deps" and stage in exact):
            continue
        item_indent = None
        block: list[str] = []  # the list's lines, code deps replaced by one marker
        while i < len(lines):
            item = _ITEM.match(lines[i])
            stripped = lines[i].strip()
            deeper = item_indent is not None and len(lines[i]) - len(lines[i].lstrip()) > len(item_indent)
            if item and item_indent is None:
                item_indent = item["indent"]
            if item and item["indent"] == item_indent:
                block.append(None if is_code(item["value"].strip("'\"")) else lines[i])
            elif stripped.startswith("#") or (stripped and deeper):
                block.append(lines[i])  # a comment, or the rest of a multi-line item
            else:
                break
            i += 1
        indent = item_indent if item_indent is not None else key["indent"] + "  "
        first = block.index(None) if None in block else 0
        block = [line for line in block if line is not None]
        block[first:first] = [f"{indent}- {dep}\n" for dep in exact[stage]]
        out.extend(block)
        done.add(stage)
    if missing := sorted(set(exact) - done):
        raise ValueError(f"dvc.yaml: stage(s) {', '.join(missing)} have no 'deps:' list; add one")
    return "".join(out)


# --- Params ----------------------------------------------------------------------------------


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


# --- Tests -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_depends_on_exactly_the_code_it_can_run(name: str) -> None:
    stage = STAGES[name]
    add, remove = code_deps_diff(stage)
    assert (add, remove) == ([], []), diff_message(stage, add, remove)
    covered = set().union(*(dvc_files(d) for d in declared_code_deps(stage)))
    assert covered == code_closure(stage.script)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_param_a_stage_reads_is_declared_and_every_declared_one_read(name: str) -> None:
    stage = STAGES[name]
    assert undeclared_params(stage) == [], f"dvc.yaml stage {name!r} reads params it does not declare"
    assert unread_params(stage) == [], f"dvc.yaml stage {name!r} declares params it never reads"
    assert declared_how_keys(stage) == [], f"dvc.yaml stage {name!r} declares how-not-what params"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_closure_follows_stages_init_lazy_and_relative_imports_and_named_data_only(tmp_path) -> None:
    root = _tree(
        tmp_path,
        {
            "stages/__init__.py": "from amazonia.common import quiet\n",
            "stages/fit.py": (
                "from typing import TYPE_CHECKING\n"
                "from amazonia.model import net\n"
                "if TYPE_CHECKING:\n    from amazonia.model import hints\n"
                "def main():\n    import amazonia.model.lazy\n"
            ),
            "stages/other.py": "import amazonia.export.thing\n",
            "amazonia/__init__.py": '"""Doc."""\n',
            "amazonia/common/__init__.py": "",
            "amazonia/common/quiet.py": "",
            "amazonia/common/unused.py": "",
            "amazonia/model/__init__.py": "",
            "amazonia/model/net.py": "from .layers import dense\nTABLE = 'x'\n",
            "amazonia/model/layers/__init__.py": "",
            "amazonia/model/layers/dense.py": 'FILE = "table.csv"\n',
            "amazonia/model/layers/table.csv": "a,b\n",
            "amazonia/model/layers/notes.txt": "named by nobody\n",
            "amazonia/model/lazy.py": "",
            "amazonia/model/hints.py": "",
            "amazonia/model/__pycache__/net.cpython-311.pyc": "bytecode",
            "amazonia/export/__init__.py": "",
            "amazonia/export/thing.py": "",
        },
    )
    closure = code_closure(Path("stages/fit.py"), root)
    assert closure == {
        Path(p)
        for p in (
            "stages/__init__.py",
            "stages/fit.py",
            "amazonia/__init__.py",
            "amazonia/common/__init__.py",
            "amazonia/common/quiet.py",
            "amazonia/model/__init__.py",
            "amazonia/model/net.py",
            "amazonia/model/layers/__init__.py",
            "amazonia/model/layers/dense.py",
            "amazonia/model/layers/table.csv",
            "amazonia/model/lazy.py",
        )
    }
    # Folders only where every file DVC sees in them is reached (bytecode aside): not
    # amazonia/model (hints.py), not layers/ (notes.txt), not common/ (unused.py).
    assert exact_code_deps(closure, root) == [
        "stages/__init__.py",
        "stages/fit.py",
        "amazonia/__init__.py",
        "amazonia/common/__init__.py",
        "amazonia/common/quiet.py",
        "amazonia/model/__init__.py",
        "amazonia/model/layers/__init__.py",
        "amazonia/model/layers/dense.py",
        "amazonia/model/layers/table.csv",
        "amazonia/model/lazy.py",
        "amazonia/model/net.py",
    ]
    (root / "amazonia/model/hints.py").unlink()
    (root / "amazonia/model/layers/notes.txt").unlink()
    (root / "amazonia/common/unused.py").unlink()
    assert exact_code_deps(closure, root) == [
        "stages/__init__.py",
        "stages/fit.py",
        "amazonia/__init__.py",
        "amazonia/common",
        "amazonia/model",
    ]


@pytest.mark.slow
def test_a_missing_or_extra_dep_line_is_named_and_write_puts_the_exact_ones() -> None:
    train = STAGES["train"]
    exact = exact_code_deps(code_closure(train.script))
    # The folder form: too coarse (the error gallery, which train never runs) and the
    # network's file dropped.
    coarse = replace(
        train,
        deps=tuple(d for d in train.deps if not d.startswith("amazonia/model")) + ("amazonia/model",),
    )
    add, remove = code_deps_diff(coarse)
    assert remove == ["amazonia/model"] and "amazonia/model/network.py" in add
    message = diff_message(coarse, add, remove)
    assert "Remove from its deps:\n  - amazonia/model\n" in message
    assert "  - amazonia/model/network.py\n" in message and WRITE_COMMAND in message
    assert "amazonia/model/error_gallery.py" not in exact
    assert Path("amazonia/model/error_gallery.py") in code_closure(STAGES["evaluate"].script)
    # stages/__init__.py runs first in every stage, and what it imports with it.
    assert "stages/__init__.py" in exact
    assert Path("amazonia/common/tf_logging.py") in code_closure(STAGES["encode_labels"].script)
    beam = Path("amazonia/data/records/beam_writer.py")
    assert beam in code_closure(STAGES["serialize"].script) and beam not in code_closure(train.script)

    text = DVC_YAML.read_text()
    stale = text.replace(
        "      - amazonia/model/network.py\n", "      - amazonia/model/error_gallery.py\n", 1
    )
    assert stale != text
    wanted = {name: exact_code_deps(code_closure(s.script)) for name, s in STAGES.items()}
    assert rewrite_code_deps(stale, wanted) == text
    assert rewrite_code_deps(text, wanted) == text


def test_write_keeps_data_deps_and_comments_in_place(tmp_path) -> None:
    text = (
        "stages:\n"
        "  a:\n"
        "    cmd: python -m stages.a\n"
        "    deps:\n"
        "      - stages/a.py\n"
        "      - amazonia/old  # folder\n"
        "      # the data\n"
        "      - data/raw\n"
        "    outs:\n"
        "      - out\n"
        "  b:\n"
        "    foreach: [x]\n"
        "    do:\n"
        "      cmd: python -m stages.b ${item}\n"
        "      deps:\n"
        "        - data/in\n"
        "      outs:\n"
        "        - data/out/${item}\n"
    )
    wanted = {"a": ["stages/a.py", "amazonia/new.py"], "b": ["stages/b.py"]}
    assert rewrite_code_deps(text, wanted) == text.replace(
        "      - amazonia/old  # folder\n", "      - amazonia/new.py\n"
    ).replace("        - data/in\n", "        - stages/b.py\n        - data/in\n")
    with pytest.raises(ValueError, match="stage.s. c have no 'deps:' list"):
        rewrite_code_deps(text, {**wanted, "c": []})


def test_the_params_check_fails_when_a_param_line_is_removed_or_added() -> None:
    serialize = STAGES["serialize"]
    whole = replace(serialize, params=("serialize",))
    assert declared_how_keys(whole) == ["serialize.beam_options", "serialize.runner"]
    export = STAGES["export"]
    narrowed = replace(export, params=("export",))
    assert undeclared_params(narrowed) == ["evaluate.tta"]
    encode = STAGES["encode_labels"]
    widened = replace(encode, params=(*encode.params, "serialize.shard_mb", "data"))
    data_keys = [f"data.{k}" for k in Params().data.model_dump()]
    assert unread_params(widened) == ["serialize.shard_mb", *data_keys]


def test_package_inits_are_docstrings_and_only_stages_read_params() -> None:
    inits = sorted(p.relative_to(ROOT) for p in (ROOT / "amazonia").rglob("__init__.py"))
    assert inits and all(is_docstring_only(p) for p in inits), "an __init__.py runs code"
    readers = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "amazonia").rglob("*.py")
        if "load_params(" in p.read_text() and p.name not in {"params.py", "cli.py"}
    )
    assert readers == [], "library code reads params.yaml behind its stage's declared params"


def is_docstring_only(path: Path) -> bool:
    body = ast.parse((ROOT / path).read_text()).body
    return len(body) <= 1 and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


# --- As a program ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Print each stage's missing and extra code dep lines; with ``--write``, fix dvc.yaml."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.test_dvc_contract",
        description="Check (or, with --write, set) each dvc.yaml stage's code deps to the files it can run.",
    )
    parser.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = parser.parse_args(argv)
    stages = load_stages()
    stale = {name: code_deps_diff(stage) for name, stage in stages.items()}
    stale = {name: diff for name, diff in stale.items() if diff != ([], [])}
    if args.write:
        exact = {name: exact_code_deps(code_closure(stage.script)) for name, stage in stages.items()}
        DVC_YAML.write_text(rewrite_code_deps(DVC_YAML.read_text(), exact))
        for name, (add, remove) in stale.items():
            print(f"{name}: +{len(add)} -{len(remove)} dep lines")
        print(f"dvc.yaml: code deps of {len(stale)} stage(s) rewritten" if stale else "dvc.yaml: up to date")
        return 0
    for name, (add, remove) in stale.items():
        print(diff_message(stages[name], add, remove), end="\n\n")
    print(f"{len(stale)} stage(s) out of date" if stale else "dvc.yaml: every stage's code deps are exact")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
