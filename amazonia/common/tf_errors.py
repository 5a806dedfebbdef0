"""TensorFlow's error messages, cut to the line a person needs."""

from __future__ import annotations

import re

_TF_ERROR_NOISE = ("Graph execution error", "Detected at node", "<stack traces", " ", "\t", "[[")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\](\s*name:\s*\S*)?\s*$")
_FUNCTION_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")


def tf_error_message(err: Exception) -> str:
    """The useful line of a TensorFlow error: op errors open with graph and stack-trace
    boilerplate, and the cause is the first other line (without the op's name)."""
    text = getattr(err, "message", None) or str(err)
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(_TF_ERROR_NOISE)]
    line = _FUNCTION_NODE.sub("", lines[0] if lines else text.strip() or type(err).__name__)
    return _OP_SUFFIX.sub("", line)
