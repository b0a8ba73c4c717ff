"""The one error type the server answers with a 4xx (or 503) status and {"error": message}."""
from __future__ import annotations

from ..errors import MaskRCNNError


class RequestError(MaskRCNNError):
    """A request the server cannot answer: `status` is the HTTP status, the message says what is wrong and what to
    send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
