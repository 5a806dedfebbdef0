"""docs/development.md's table of guarantees names tests that exist.

A test renamed, merged or removed leaves a row pointing at nothing: the guarantee then looks
checked while no test of that name runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

TABLE_HEADING = "## What each guarantee's test is"
# `test_x.py::test_name`, `test_x.py` alone, or `::test_name` (of the file named last); a
# parametrized test's id, `[...]`, may follow.
TEST_REFERENCE = re.compile(r"(?:tests/)?(test_\w+\.py)?(?:::(\w+))?(?:\[[^\]]*\])?")
CODE_SPAN = re.compile(r"`([^`]+)`")


def table_rows(markdown: str) -> list[tuple[str, str]]:
    """(guarantee, tests cell) of each row of the guarantee table."""
    table = markdown[markdown.index(TABLE_HEADING) :].split("\n## ", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")]
    return [(cells[1].strip(), cells[2]) for cells in rows[1:]]  # rows[0]: the header


def named_tests(cell: str) -> list[tuple[str, str | None]]:
    """(file, test or None) for each test reference in a cell, in order.

    Raises:
        ValueError: a code span that names a test file or function in no form above.
    """
    named, current = [], None
    for span in CODE_SPAN.findall(cell):
        if ".py" not in span and not span.startswith("::"):
            continue  # a folder, a command: not a test
        reference = TEST_REFERENCE.fullmatch(span)
        if not reference or not (reference.group(1) or current):
            raise ValueError(f"`{span}`: not a test reference (test_x.py::test_name, ::test_name)")
        current = reference.group(1) or current
        named.append((current, reference.group(2)))
    return named


def functions_in(path: Path) -> set[str]:
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_every_test_the_guarantee_table_names_exists():
    rows = table_rows((ROOT / "docs/development.md").read_text())
    assert len(rows) >= 25
    missing = []
    for guarantee, cell in rows:
        named = named_tests(cell)
        assert named, f"the row {guarantee!r} names no test"
        for file, test in named:
            path = ROOT / "tests" / file
            if not path.is_file() or (test and test not in functions_in(path)):
                missing.append(f"{guarantee}: tests/{file}{'::' + test if test else ''}")
    assert not missing, "docs/development.md names tests that do not exist:\n" + "\n".join(missing)


def test_cell_references_parse_to_file_and_test():
    cell = "`test_a.py::test_one`, `::test_two[x]` (slow); `test_b.py`; `tests/fixtures/`"
    assert named_tests(cell) == [("test_a.py", "test_one"), ("test_a.py", "test_two"), ("test_b.py", None)]
    for unreadable in ("`test_a.py::Class::test_one`", "`::test_one` first", "`a.py::test_one`"):
        with pytest.raises(ValueError, match="not a test reference"):
            named_tests(unreadable)
