"""docs/development.md's table of guarantees names tests that exist.

A test renamed, merged or removed leaves a row pointing at nothing: the guarantee then looks
checked while no test of that name runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

TABLE_HEADING = "## What each guarantee's test is"
# `test_x.py::test_name`, `test_x.py` alone, or `::test_name` (of the file named last)
TEST_REFERENCE = re.compile(r"`(test_\w+\.py)?(?:::(\w+))?`")


def table_rows(markdown: str) -> list[tuple[str, str]]:
    """(guarantee, tests cell) of each row of the guarantee table."""
    table = markdown[markdown.index(TABLE_HEADING) :].split("\n## ", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")]
    return [(cells[1].strip(), cells[2]) for cells in rows[1:]]  # rows[0]: the header


def named_tests(cell: str) -> list[tuple[str, str | None]]:
    """(file, test or None) for each test reference in a cell, in order."""
    named, current = [], None
    for match in TEST_REFERENCE.finditer(cell):
        current = match.group(1) or current
        if current and (match.group(1) or match.group(2)):
            named.append((current, match.group(2)))
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


def test_a_reference_to_a_renamed_test_is_found():
    cell = "`test_a.py::test_one`, `::test_two` (slow); `test_b.py`"
    assert named_tests(cell) == [("test_a.py", "test_one"), ("test_a.py", "test_two"), ("test_b.py", None)]
