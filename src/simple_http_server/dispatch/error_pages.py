"""Error pages: chosen by exact code, a ``4xx``-style range, or a catch-all."""

from __future__ import annotations

import html
import inspect
import json
from collections.abc import Callable
from typing import Any

from ..protocol.http11 import reason_phrase

__all__ = ["ErrorPages", "default_error_body"]


def default_error_body(code: int, message: str, explain: str) -> bytes:
    """The original's JSON error body ``{"code", "message", "explain"}``.

    The text often holds client input: an undecodable byte of it (a path value
    holding ``%FF``, a lone surrogate) goes back as that byte, as in ``str`` bodies.
    """
    body = {
        "code": code,
        "message": html.escape(message, quote=False),
        "explain": html.escape(explain, quote=False),
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogateescape")


def default_message(code: int, message: str) -> str:
    """``message``, or the status' reason phrase when empty."""
    return message or reason_phrase(code).decode()


#: What an error page's call takes: positional arguments and keyword arguments.
PageArguments = tuple[list[Any], dict[str, Any]]


def _plan(func: Callable[..., Any]) -> Callable[[int, str, str], PageArguments]:
    """Map ``code``/``message``/``explain`` onto the page's arguments, once.  A
    required argument left over gets None, as in the original."""
    roles: list[tuple[str, str, bool]] = []  # name, role ("" for None), positional only
    taken: set[str] = set()
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        role = p.name if p.name in ("code", "message", "explain") else ""
        if not role:
            ann = p.annotation
            if ann is p.empty and p.default not in (p.empty, None):
                ann = type(p.default)  # a keyword argument: its default's type, as in the original
            # The first free role, in order: an ``int`` argument gets ``code`` while it
            # is free, as any other; a ``str`` one skips it.
            role = next((r for r in ("code", "message", "explain") if r not in taken), "")
            if role == "code" and (ann is str or ann == "str"):
                role = next((r for r in ("message", "explain") if r not in taken), "")
        if role in taken:
            role = ""
        if role or p.default is p.empty:
            taken.add(role)
            roles.append((p.name, role, p.kind is p.POSITIONAL_ONLY))

    def arguments(code: int, message: str, explain: str) -> PageArguments:
        values = {"code": code, "message": message, "explain": explain, "": None}
        args = [values[role] for _, role, positional in roles if positional]
        return args, {name: values[role] for name, role, positional in roles if not positional}

    return arguments


class ErrorPages:
    """The registered error pages of an app.

    ``"404"`` is exact; ``"41x"`` is 410-419; ``"4xx"`` and ``"40x"`` are the whole
    400-499 class (the original README's spelling of a range); a bare
    ``@error_message`` catches everything else.
    """

    def __init__(self) -> None:
        self._exact: dict[int, Any] = {}
        self._tens: dict[int, Any] = {}
        self._classes: dict[int, Any] = {}
        self._any: Any = None

    def add(self, codes: tuple[str | int, ...], func: Callable[..., Any]) -> None:
        """Register ``func`` for ``codes`` (all codes when empty)."""
        page = (func, _plan(func))
        if not codes:
            self._any = page
        for raw in codes:
            code = str(raw).strip().lower()
            if not code or raw is None:  # as in 0.22.x: no code is every code
                self._any = page
            elif code.isdigit():
                self._exact[int(code)] = page
            elif len(code) == 3 and code[0].isdigit() and code[2] == "x":
                if code[1] == "x" or code[1] == "0":
                    self._classes[int(code[0])] = page
                elif code[1].isdigit():
                    self._tens[int(code[:2])] = page
                else:
                    raise ValueError(f"invalid error code pattern: {raw!r}")
            else:
                raise ValueError(f"invalid error code pattern: {raw!r}")

    def find(self, code: int) -> tuple[Callable[..., Any], Callable[..., PageArguments]] | None:
        """The page for ``code``, most specific first."""
        page = self._exact.get(code) or self._tens.get(code // 10) or self._classes.get(code // 100)
        return page or self._any  # type: ignore[no-any-return]
