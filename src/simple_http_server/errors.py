"""Exceptions a controller or filter raises to answer with an HTTP error."""

from __future__ import annotations

__all__ = ["HttpError"]


class HttpError(Exception):
    """Answer the request with ``code`` and the error page for it.

    Args:
        code: the HTTP status (400 by default).
        message: a short message; the status' reason phrase when empty or None.
        explain: a longer explanation shown in the error page.

    A ``message`` or ``explain`` that is not a ``str`` (an exception caught...) is
    taken as its ``str()``.
    """

    def __init__(self, code: int = 400, message: object = "", explain: object = "") -> None:
        text = _text(message)
        super().__init__(f"HTTP_ERROR[{code}] {text}")
        self.code: int = code
        self.message: str = text
        self.explain: str = _text(explain)


def _text(value: object) -> str:
    """``value`` as the text of an error page: None (or empty) is ``""``."""
    if isinstance(value, str):
        return value
    return "" if value is None else str(value)
