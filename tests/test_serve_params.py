"""``serve:`` in params.yaml: validated when ``amazonia serve`` starts, never by a stage
(every stage depends on amazonia/common; a serve default must rerun none of them)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from amazonia.common.params import ParamsError, load_params
from amazonia.serving.params import ServeParams, load_serve_params
from tests.conftest import BIN, ROOT, tool_env

HOST_MESSAGE = (
    "neither an IP address nor a host name (letters, digits, '-' and '.'); "
    "use 0.0.0.0 to listen on every interface"
)


def test_the_projects_serve_section_writes_out_the_schemas_defaults() -> None:
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    assert set(section) == set(ServeParams.model_fields)  # every key there, where users look
    assert load_serve_params(section, "params.yaml") == ServeParams()


def test_a_stage_starts_whatever_the_serve_section_holds(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"serve": {"max_body": 3, "port": "http"}}))
    assert load_params(path).serve == {"max_body": 3, "port": "http"}


@pytest.mark.parametrize(
    "section, message",
    [
        ({"max_body": 3}, "serve.max_body: unknown key (check the spelling against docs/params.md)"),
        ({"max_body_mb": 1e15}, "serve.max_body_mb: must be at least 0.01 and at most 1024 (got 1e+15)"),
        ({"max_body_mb": 1e-9}, "serve.max_body_mb: must be at least 0.01 and at most 1024 (got 1e-09)"),
        ({"port": 0}, "serve.port: must be at least 1 and at most 65535 (got 0)"),
        ({"poll_seconds": 0}, "serve.poll_seconds: must be at least 0.01 and at most 86400 (got 0)"),
        (
            {"write_timeout_seconds": 1e9},
            "serve.write_timeout_seconds: must be at least 0.01 and at most 86400 (got 1e+09)",
        ),
        ({"max_instances": 0}, "serve.max_instances: must be at least 1 and at most 1e+06 (got 0)"),
        ({"decode_concurrency": 0}, "serve.decode_concurrency: must be at least 1 and at most 256 (got 0)"),
        ({"max_unsent_kb": 1}, "serve.max_unsent_kb: must be at least 16 and at most 1.04858e+06 (got 1)"),
        ({"host": "x\x00y"}, f"serve.host: {HOST_MESSAGE} (got 'x\\x00y')"),
        ({"host": ""}, f"serve.host: {HOST_MESSAGE} (got '')"),
        ({"host": "a" * 64 + ".example"}, f"serve.host: {HOST_MESSAGE} (got '{'a' * 64}.example')"),
        ({"port": "8501"}, "serve.port: Input should be a valid integer (got '8501')"),
    ],
)
def test_bad_serve_params_name_the_key_and_its_bounds(section: dict, message: str) -> None:
    with pytest.raises(ParamsError) as raised:
        load_serve_params(section, "params.yaml")
    assert str(raised.value) == f"params.yaml: {message}"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "fe80::1%lo", "localhost", "serving-1.example.com", "0.0.0.0"]
)
def test_hosts_that_parse_are_taken(host: str) -> None:
    assert load_serve_params({"host": host}, "params.yaml").host == host


def test_amazonia_serve_refuses_a_bad_serve_section_before_it_loads_anything(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text("serve:\n  max_body: 3\n")
    command = [str(BIN / "amazonia"), "serve"]
    result = subprocess.run(
        command, cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: params.yaml: serve.max_body: unknown key (check the spelling against docs/params.md)\n"
    )
