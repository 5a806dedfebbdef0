"""The client's errors: each one line, saying what was wrong, where, and what to do."""

from __future__ import annotations

from amazonia.common.errors import AmazoniaError


class ClientError(AmazoniaError):
    """The images, the server or its answer are not usable; the message says which."""


class HttpError(ClientError):
    """The server answered with an error status; ``message`` is its ``{"error": ...}``."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.status, self.message = status, message
