"""docs/params.md is written from the params schema, and params.yaml writes out its defaults."""

from __future__ import annotations

import pytest

from amazonia.common.params import Params, load_params
from amazonia.params_doc import leaf_fields, render
from amazonia.serving.params import ServeParams
from tests.conftest import ROOT

SECTIONS = [(name, field.annotation) for name, field in Params.model_fields.items() if name != "serve"]


def test_docs_params_md_is_what_the_schema_writes():
    assert (ROOT / "docs" / "params.md").read_text() == render(ROOT / "dvc.yaml"), (
        "docs/params.md is stale: run 'make docs' (python -m amazonia.params_doc) and commit it"
    )


def test_params_yaml_holds_the_schemas_defaults():
    # serve: is checked against ServeParams in tests/test_serve_params.py.
    written = load_params(ROOT / "params.yaml").model_dump(exclude={"serve"})
    assert written == Params().model_dump(exclude={"serve"})


@pytest.mark.parametrize("section, model", [*SECTIONS, ("serve", ServeParams)])
def test_every_key_says_what_it_means(section, model):
    assert [key for key, field in leaf_fields(section, model) if not field.description] == []


def test_the_page_names_the_stages_a_key_reruns():
    text = render(ROOT / "dvc.yaml")
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if line.startswith("| `")}
    assert "| `train` |" in rows["train.seed"]
    assert "| `serialize` |" in rows["serialize.shard_mb"]  # a foreach stage, by its name
    assert "| `evaluate`, `export`, `smoke_check` |" in rows["evaluate.tta"]
    assert "| none |" in rows["runtime.workers"] and "| none |" in rows["serialize.runner"]
