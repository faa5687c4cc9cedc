"""The per-request binders: small closures that read one argument from a request.

:mod:`.binding` picks one of these per controller argument at registration;
per request only the chosen closures run.
"""

from __future__ import annotations

import http.cookies
import json
import typing
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from ..errors import HttpError
from ..models import (
    BytesBody,
    Cookie,
    Cookies,
    Environment,
    Header,
    Headers,
    JSONBody,
    ModelDict,
    Parameter,
    Parameters,
    PathValue,
    RegGroup,
    RegGroups,
    Request,
    Session,
)
from ..responses import Response
from .bodies import RequestBodyReader, content_coding, is_json_type
from .invoke import in_event_loop
from .routing import WILDCARD_KEY

if TYPE_CHECKING:
    from .sessions import RequestSessions

__all__ = ["FIXED", "BindContext", "Binder"]


class BindContext:
    """What binders read: the request and the live response."""

    __slots__ = ("request", "response")

    def __init__(self, request: Request, response: Response) -> None:
        self.request = request
        self.response = response


Binder = Callable[[BindContext], Any]


def missing(name: str) -> HttpError:
    return HttpError(400, "Missing Parameter", f"Parameter[{name}] is required.")


def bad(explain: str) -> HttpError:
    """A 400 for a value that does not convert (the original's message)."""
    return HttpError(400, "Bad Request", explain)


# The original's explains, word for word (clients and error pages may compare them):
# "Parameter[n] should be an int. " for one value, "One of the parameter[n] is not
# int. " for a list's item.
_KINDS = {int: "int", float: "float", dict: "JSON string"}


def _unconvertible(name: str, kind: str, item: bool) -> HttpError:
    if item:
        return bad(f"One of the parameter[{name}] is not {kind}. ")
    if kind == "JSON string":
        return bad(f"Parameter[{name}] should be a JSON string.")
    return bad(f"Parameter[{name}] should be an {kind}. ")


def to_bool(value: str) -> bool:
    return value.lower() not in ("0", "false", "")


def text(name: str, required: bool = False) -> Callable[[str], Parameter]:
    """Text as the original injected it: a :class:`Parameter` (a ``str`` with ``.name``)."""

    def as_parameter(value: str) -> Parameter:
        # Parameter(name, value, required) without its __new__/__init__ calls: half the time
        parameter = _new_text(Parameter, value)
        parameter._name, parameter._default, parameter._required = name, value, required
        return parameter

    return as_parameter


_new_text = str.__new__


def converter(name: str, target: Any, item: bool = False) -> Callable[[str], Any]:
    """Text to ``target``; ``item``: the value is one of a list's."""
    if target is Parameter:  # ``List[Parameter]``
        return text(name)
    if target is int or target is float:

        def number(value: str) -> Any:
            try:
                return target(value)
            except ValueError:
                raise _unconvertible(name, _KINDS[target], item) from None

        return number
    if target is bool:
        return to_bool
    if target is dict or typing.get_origin(target) is dict:

        def as_json(value: str) -> Any:
            try:
                parsed = json.loads(value)
            except (ValueError, RecursionError):  # RecursionError: nested too deeply
                raise _unconvertible(name, _KINDS[dict], item) from None
            if not isinstance(parsed, dict):  # "[1]", "null", "2": valid JSON, not a dict
                raise bad(f"Parameter[{name}] should be a JSON object.")
            return parsed

        return as_json
    return str


def is_list(t: Any) -> bool:
    return t is list or typing.get_origin(t) is list


def text_values(request: Request, name: str) -> list[str] | None:
    """The text values of parameter ``name``: uploads are parameters too, but an
    argument read from text (``str``, ``int``, ``list``...) never gets one."""
    values = request.parameters.get(name)
    if values is None:
        return None
    if request.files:
        return [v for v in values if isinstance(v, str)] or None
    return cast("list[str]", values)  # no uploads: every value is text


def by_name(
    name: str,
    target: Any,
    default: Any,
    required: bool,
    empty: Callable[[], Any] | None = None,
) -> Binder:
    """A query/form parameter (else the ``{name}`` path value) converted to ``target``.

    Text (``target`` ``str``) comes as a :class:`Parameter`, a plain ``str`` default
    too; when ``empty`` is given, a missing value is a new ``empty()`` (``[]``, ``{}``).
    """
    if is_list(target):
        args = typing.get_args(target)
        item = converter(name, args[0], item=True) if args else str

        def many(ctx: BindContext) -> Any:
            values = text_values(ctx.request, name)
            if values is None:
                if required:
                    raise missing(name)
                return empty() if empty is not None else default
            return [item(v) for v in values]

        return many
    if target is str:
        convert: Callable[[str], Any] = text(name, required)
        if type(default) is str:
            default = convert(default)
    else:
        convert = converter(name, target)
    if empty is not None:
        return _or_empty(name, convert, empty)

    def one(ctx: BindContext) -> Any:
        values = text_values(ctx.request, name)
        if not values:
            # A ``{name}`` path value of the same name is the fallback.
            path_value = ctx.request.path_values.get(name)
            if path_value is not None:
                return convert(path_value)
            if required:
                raise missing(name)
            return default
        return convert(values[0])

    return one


def unsupported(name: str, target: Any) -> Binder:
    """A required argument of a type no parameter text converts to (``day: date``,
    a class of the app's without a model binder): a ``400``, as in 0.22.x, whose texts
    these are; never the text given as that type."""
    explain = f"Parameter[{name}] with Type {target} is not supported yet."

    def one(ctx: BindContext) -> Any:
        if not text_values(ctx.request, name) and name not in ctx.request.path_values:
            raise missing(name)
        raise bad(explain)

    return one


def _or_empty(name: str, convert: Callable[[str], Any], empty: Callable[[], Any]) -> Binder:
    """``data: dict = None``: the parameter converted, else a new ``empty()``."""

    def one(ctx: BindContext) -> Any:
        values = text_values(ctx.request, name)
        if not values:
            path_value = ctx.request.path_values.get(name)
            return convert(path_value) if path_value is not None else empty()
        return convert(values[0])

    return one


def parameters(name: str, default: list[str] | None, required: bool) -> Binder:
    """Every text value of a parameter, as :class:`Parameters` (a new one per request)."""

    def bind(ctx: BindContext) -> Parameters | None:
        values = text_values(ctx.request, name)
        if values is None:
            if required:
                raise missing(name)
            if default is None:
                return None
            values = default
        return Parameters(name, values, required)

    return bind


def header(name: str, default: Any, required: bool) -> Binder:
    # ``user_token`` also finds ``User-Token``: proxies often drop "_" header names.
    alias = name.replace("_", "-") if "_" in name else ""

    def header(ctx: BindContext) -> Any:
        headers = ctx.request.headers
        value = headers.get(name)
        if value is None and alias:
            value = headers.get(alias)
        if value is None:
            if required:
                raise HttpError(400, "Missing Header", f"Header[{name}] is required.")
            return default
        return Header(name, value, required) if isinstance(value, str) else value

    return header


def cookie(name: str, default: Any, required: bool) -> Binder:
    def cookie(ctx: BindContext) -> Any:
        morsel = ctx.request.cookies.get(name)
        if morsel is None:
            if required:
                raise HttpError(400, "Missing Cookie", f"Cookie[{name}] is required.")
            return default
        # a copy, as the original gave: the controller may change it freely
        return Cookie._named(name, morsel)

    return cookie


def path_value(name: str) -> Binder:
    def path_value(ctx: BindContext) -> PathValue:
        values = ctx.request.path_values
        value = values.get(name)
        if value is None:
            value = values.get(WILDCARD_KEY, "")
        return PathValue(name, value)

    return path_value


def reg_group(index: int) -> Binder:
    def reg_group(ctx: BindContext) -> RegGroup:
        groups = ctx.request.reg_groups
        if not 0 <= index < len(groups):
            raise bad(
                f"RegGroup required an element at {index}, but the reg length is only {len(groups)}"
            )
        return RegGroup(index, _value=groups[index])

    return reg_group


_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}


def json_body(ctx: BindContext) -> JSONBody:
    """The body as a :class:`JSONBody`: 415 unless it is JSON, 400 unless an object."""
    request = ctx.request
    if not is_json_type(request.content_type):
        raise HttpError(
            415,
            "Unsupported Media Type",
            "JSONBody needs a JSON body (application/json or a +json media type).",
        )
    coding = content_coding(request)
    if coding is not None:
        explain = f"JSONBody needs a body without Content-Encoding (it is {coding})."
        raise HttpError(415, "Unsupported Media Type", explain)
    value = request.json
    if isinstance(value, JSONBody):
        return value
    if isinstance(value, dict):  # set by hand (a filter, a test)
        return JSONBody(value)
    if value is None:
        sent = "null" if request.body.strip() else "an empty body"
    else:
        sent = _JSON_KINDS.get(type(value), "a number")
    raise HttpError(400, "Bad Request", f"JSONBody needs a JSON object; the body is {sent}.")


def optional_json_body(default: Any) -> Binder:
    """``data: JSONBody = None``: the default when the request has no body (any
    ``Content-Type``); a body that is there must be a JSON object, as above."""

    def bind(ctx: BindContext) -> Any:
        request = ctx.request
        if request.json is None and not request.body.strip():
            content_type = request.content_type
            if is_json_type(content_type) or (
                not request.body and not content_type.lower().startswith("multipart/")
            ):  # no body, or a blank JSON one; a form's body is not kept in ``body``
                return default
        return json_body(ctx)

    return bind


def multipart_file(name: str, default: Any, required: bool) -> Binder:
    def file(ctx: BindContext) -> Any:
        files = ctx.request.files.get(name)
        if files:
            return files[0]
        if name in ctx.request.parameters:
            raise bad(f"Parameter[{name}] should be a file.")
        if required:
            raise missing(name)
        return default

    return file


def multipart_files(name: str, default: Any, required: bool) -> Binder:
    """``imgs: list[MultipartFile]``: every file part named ``name`` (``<input
    type=file multiple>``), in the form's order."""

    def files(ctx: BindContext) -> Any:
        found = ctx.request.files.get(name)
        if found:
            return list(found)
        if name in ctx.request.parameters:
            raise bad(f"Parameter[{name}] should be a file.")
        if required:
            raise missing(name)
        return default

    return files


def model_dict(ctx: BindContext) -> ModelDict:
    """Every parameter, uploads included: ``{name: value}``, a list when repeated."""
    return ModelDict(
        {k: v[0] if len(v) == 1 else list(v) for k, v in ctx.request.parameters.items()}
    )


def session(ctx: BindContext) -> Any:
    """The request's session, made if it has none; on an event loop, when the store
    may block, an awaitable that makes it off the loop (the plan awaits it last)."""
    request = ctx.request
    state = request._session_state
    if state is not None and state.blocking and in_event_loop():
        return _SessionLater(state)
    return request.get_session(True)


class _SessionLater:
    """A session still to make off the event loop: awaited only once every other
    argument is bound (dropped unawaited, it does nothing and warns of nothing)."""

    __slots__ = ("state",)

    def __init__(self, state: RequestSessions) -> None:
        self.state = state

    def __await__(self) -> Generator[Any, None, Session | None]:
        yield from self.state.prefetch(create=True).__await__()
        return self.state.session


FIXED: dict[Any, Binder] = {
    Request: lambda ctx: ctx.request,
    Response: lambda ctx: ctx.response,
    Headers: lambda ctx: ctx.request.headers,
    Cookies: lambda ctx: ctx.request.cookies,
    http.cookies.SimpleCookie: lambda ctx: ctx.request.cookies,
    http.cookies.BaseCookie: lambda ctx: ctx.request.cookies,
    RegGroups: lambda ctx: RegGroups(ctx.request.reg_groups),
    JSONBody: json_body,
    BytesBody: lambda ctx: BytesBody(ctx.request.body),
    ModelDict: model_dict,
    Environment: lambda ctx: Environment(ctx.request.environment),
    RequestBodyReader: lambda ctx: ctx.request.reader,
    Session: session,
}


def model_binder(cls: Any, name: str, arg_type: Any, default: Any) -> Binder:
    # ``bind()`` may be sync or async: BindingPlan.bind awaits an awaitable result.
    def bind(ctx: BindContext) -> Any:
        return cls(ctx.request, ctx.response, name, arg_type, default).bind()

    return bind
