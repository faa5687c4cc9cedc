"""Exceptions a controller or filter raises to answer with an HTTP error."""

from __future__ import annotations

__all__ = ["HttpError"]


class HttpError(Exception):
    """Answer the request with ``code`` and the error page for it.

    Args:
        code: the HTTP status (400 by default).
        message: a short message; the status' reason phrase when empty or None.
        explain: a longer explanation shown in the error page.
    """

    def __init__(self, code: int = 400, message: str | None = "", explain: str = "") -> None:
        super().__init__(f"HTTP_ERROR[{code}] {message or ''}")
        self.code: int = code
        self.message: str = message or ""
        self.explain: str = explain or ""
