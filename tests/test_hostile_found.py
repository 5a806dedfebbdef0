"""Cases a hostile-input review found after the hardening of issue 8: each failed before
its fix. Real server processes on 127.0.0.1 (test_rest_hostile.py's), real decoders."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from amazonia.data.records.images import BadImageError, check_image
from tests import test_rest_hostile
from tests.test_rest_hostile import _bytes_body, _connect, _error, _post, _read_until_closed
from tests.test_serving import MODEL, Server

# test_rest_hostile's fixtures, this module's own instances: a model, a server with short timeouts.
base_path, server = test_rest_hostile.base_path, test_rest_hostile.server

WEBP_FLAGS_AT = 20  # the VP8X chunk's flags byte
WEBP_ALPHA = 0x10
ANIMATED_WITHOUT_ALPHA = "an animated WebP without alpha: TensorFlow's decoder crashes on it"


def _animated_webp(alpha: bool) -> bytes:
    """A 3-frame animated WebP whose VP8X header does or does not flag alpha (PIL flags
    it only for RGBA frames with transparency; other encoders never do)."""
    frames = [Image.new("RGB", (16, 16), (40 * i, 90, 20)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8X"
    data[WEBP_FLAGS_AT] = data[WEBP_FLAGS_AT] | WEBP_ALPHA if alpha else data[WEBP_FLAGS_AT] & ~WEBP_ALPHA
    return bytes(data)


def test_an_animated_webp_without_alpha_is_400_not_a_crashed_server(server: Server) -> None:
    # TensorFlow's decode_image(channels=0) corrupts its heap on these ("free(): corrupted
    # unsorted chunks"): one request used to abort amazonia serve.
    opaque = base64.b64encode(_animated_webp(alpha=False)).decode()
    status, message = _error(_post(server, ":predict", _bytes_body(opaque)))
    assert status == 400 and message.startswith(f"input 'image_bytes': {ANIMATED_WITHOUT_ALPHA}")
    with_alpha = base64.b64encode(_animated_webp(alpha=True)).decode()
    assert _post(server, ":predict", _bytes_body(with_alpha)).status_code == 200
    assert server.proc.poll() is None


def test_serialize_refuses_the_animated_webp_serving_refuses() -> None:
    # serialize runs the server's check: the served model could not read such a chip.
    with pytest.raises(BadImageError, match=f"^{ANIMATED_WITHOUT_ALPHA}"):
        check_image(_animated_webp(alpha=False))
    assert check_image(_animated_webp(alpha=True)) == "WebP"


@pytest.mark.parametrize("path", ["", "/metadata", "/nope"], ids=["status", "metadata", "unknown path"])
def test_a_body_that_comes_after_its_answer_does_not_hold_the_connection(server: Server, path: str) -> None:
    # Routes that read no body answer at once; uvicorn then waited for the body with no
    # timeout (each byte cancels keep-alive's) and armed none once it was in: 64 such
    # connections (serve.max_connections) answered every other client 503 for good.
    head = f"GET /v1/models/{MODEL}{path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n".encode()
    complete = _connect(server)
    complete.sendall(head)
    assert complete.recv(12).startswith(b"HTTP/1.1 ")
    complete.sendall(b"{}" + f"GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # Kept alive for the next request, then closed once idle (fails with a socket timeout if never).
    assert b"HTTP/1.1 200 " in _read_until_closed(complete)

    dribbled = _connect(server)
    dribbled.sendall(head)
    assert dribbled.recv(12).startswith(b"HTTP/1.1 ")
    dribbled.sendall(b"{")  # and never the last byte: closed after serve.read_timeout_seconds
    _read_until_closed(dribbled)
    assert json.loads(server.get().content)["model_version_status"][0]["state"] == "AVAILABLE"
