"""Parameter injection, planned once per controller at registration.

:func:`plan_binding` reads a function's signature a single time and returns a
:class:`BindingPlan`: one small binder per argument.  Per request the plan only
runs those binders; no ``inspect`` and no type switch happen on the hot path.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import HttpError
from ..models import (
    BytesBody,
    Cookie,
    Header,
    JSONBody,
    Parameter,
    Parameters,
    PathValue,
    RegGroup,
    Request,
    Session,
)
from ..responses import Response
from .binders import (
    FIXED,
    BindContext,
    Binder,
    by_name,
    converter,
    cookie,
    header,
    is_list,
    model_binder,
    multipart_file,
    multipart_files,
    optional_json_body,
    parameters,
    path_value,
    reg_group,
    unsupported,
)
from .bodies import MultipartFile, RequestBodyReader
from .invoke import await_user, is_async_callable

__all__ = [
    "BindContext",
    "BindingPlan",
    "ModelBinder",
    "ModelBinding",
    "ModelBindingConf",
    "plan_binding",
]

#: A user binder class (naja-atra's ``@model_binding``):
#: ``cls(request, response, arg_name, arg_type, default).bind()``.
ModelBinder = type


class ModelBinding:
    """Base class of naja-atra style binders registered with ``@model_binding(Type)``.

    The binder is built per argument and request; ``bind()`` (sync or ``async``)
    returns the value to inject.

    Attributes:
        request: the current request.
        response: the live response.
        arg_name: the controller argument's name.
        arg_type: its annotation.
        default_value: its default value (None when it has none).
    """

    def __init__(
        self, request: Request, response: Response, arg: str, arg_type: Any, val: Any = None
    ) -> None:
        self.request = request
        self.response = response
        self.arg_name = arg
        self.arg_type = arg_type
        self.default_value = val

    def bind(self) -> Any:
        """The value to inject (the default value unless overridden)."""
        return self.default_value


class ModelBindingConf:
    """naja-atra's registry of binder classes: per type, plus a fallback."""

    def __init__(self) -> None:
        self.model_binding_types: dict[Any, ModelBinder] = {}
        self.default_model_binding_type: ModelBinder | None = None

    @property
    def model_bingding_types(self) -> dict[Any, ModelBinder]:
        """naja-atra's spelling of :attr:`model_binding_types`."""
        return self.model_binding_types


@dataclass(frozen=True, slots=True)
class BindingPlan:
    """How to build the arguments of one controller."""

    names: tuple[str, ...]
    binders: tuple[Binder, ...]
    #: The arguments whose binder may give an awaitable (user binders, a ``Session``'s),
    #: in argument order (a ``Session`` argument's last).
    awaiting: tuple[int, ...]
    needs_body: bool
    needs_stream: bool
    path_value_names: frozenset[str]
    #: A user binder's sync ``bind()`` runs: off the event loop, as any sync user code.
    runs_sync_user_code: bool = False

    def bind_now(self, ctx: BindContext) -> dict[str, Any]:
        """Keyword arguments for one request; an async binder's value is still to await."""
        if not self.names:
            return {}
        return {name: binder(ctx) for name, binder in zip(self.names, self.binders, strict=True)}

    def pending(self, kwargs: dict[str, Any]) -> bool:
        """True when some of ``kwargs`` (made by :meth:`bind_now`) are still to await."""
        names = self.names
        return any(inspect.isawaitable(kwargs[names[index]]) for index in self.awaiting)

    async def resolve(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` (made by :meth:`bind_now`) with the async binders' values awaited."""
        for index in self.awaiting:  # a Session argument's (the last) last
            name = self.names[index]
            value = kwargs[name]
            if inspect.isawaitable(value):
                kwargs[name] = await await_user(value)
        return kwargs

    async def bind(self, ctx: BindContext) -> dict[str, Any]:
        """Keyword arguments for one request."""
        kwargs = self.bind_now(ctx)
        if self.awaiting:
            return await self.resolve(kwargs)
        return kwargs


_BODY_KINDS = {JSONBody, BytesBody}


def _kind_of(value: Any) -> Any:
    for kind in (
        *FIXED,
        Parameter,
        Parameters,
        Header,
        Cookie,
        PathValue,
        RegGroup,
        MultipartFile,
    ):
        if isinstance(kind, type) and isinstance(value, kind):
            return kind
    return None


def _is_class(value: Any, base: type) -> bool:
    return isinstance(value, type) and issubclass(value, base)


class _AnnotationsOnly:
    """Annotations and the globals to resolve them in, without defaults: Python 3.10's
    ``get_type_hints`` reads ``x: T = None`` as ``Optional[T]``, and an absent
    ``li: List[int] = None`` must be told apart from ``Optional[List[int]] = None``."""

    def __init__(self, annotations: dict[str, Any], globals_: dict[str, Any]) -> None:
        self.__annotations__ = annotations
        self.__globals__ = globals_


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    annotations = dict(getattr(func, "__annotations__", {}))
    globals_ = getattr(inspect.unwrap(func), "__globals__", {})
    try:
        if sys.version_info < (3, 11):
            return typing.get_type_hints(_AnnotationsOnly(annotations, globals_))
        return typing.get_type_hints(func)
    except Exception:  # a forward reference that does not resolve: resolve the others alone
        return {name: _hint(name, value, globals_) for name, value in annotations.items()}


def _hint(name: str, value: Any, globals_: dict[str, Any]) -> Any:
    """One annotation resolved, else as written (a name only ``TYPE_CHECKING`` imports)."""
    try:
        return typing.get_type_hints(_AnnotationsOnly({name: value}, globals_))[name]
    except Exception:
        return value


def plan_binding(
    func: Callable[..., Any],
    skip_first: bool = False,
    model_binders: dict[Any, ModelBinder] | None = None,
    default_binder: ModelBinder | None = None,
) -> BindingPlan:
    """Build the binding plan of ``func`` (``skip_first`` for ``self``)."""
    model_binders = model_binders or {}
    hints = _hints(func)
    params = list(inspect.signature(func).parameters.values())
    if skip_first and params:
        params = params[1:]
    names: list[str] = []
    binders: list[Binder] = []
    awaiting: set[int] = set()
    needs_body = needs_stream = sync_user_code = False
    path_names: set[str] = set()
    # ``Session`` arguments are bound last (keyword arguments: their order does not
    # matter to the call): a request whose other arguments fail makes no session.
    sessions: list[tuple[str, Binder]] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        has_default = p.default is not p.empty
        default = p.default if has_default else None
        annotation = hints.get(p.name, p.annotation)
        if annotation is p.empty:
            annotation = None
        binder, kind = _binder_for(
            p.name, annotation, default, has_default, model_binders, default_binder
        )
        if kind in _BODY_KINDS:
            needs_body = True
        if kind is RequestBodyReader:
            needs_stream = True
        if kind is PathValue:
            marker_name = default.name if isinstance(default, PathValue) else ""
            path_names.add(marker_name or p.name)
        if kind in _MODEL_KINDS:
            awaiting.add(len(names))
            sync_user_code = sync_user_code or kind == "model"
        if kind is Session:
            sessions.append((p.name, binder))
            continue
        names.append(p.name)
        binders.append(binder)
    for name, binder in sessions:  # made off the loop, once the others are bound
        awaiting.add(len(names))
        names.append(name)
        binders.append(binder)
    return BindingPlan(
        tuple(names),
        tuple(binders),
        tuple(sorted(awaiting)),
        needs_body,
        needs_stream,
        frozenset(path_names),
        sync_user_code,
    )


_MODEL_KINDS = frozenset({"model", "async model"})


def _model(cls: ModelBinder, name: str, annotation: Any, default: Any) -> tuple[Binder, str]:
    """A user binder class' binder; its kind says whether its ``bind()`` is async."""
    kind = "async model" if is_async_callable(getattr(cls, "bind", None)) else "model"
    return model_binder(cls, name, annotation, default), kind


def _unwrap_optional(annotation: Any) -> Any:
    """``int | None`` / ``Optional[int]`` -> ``int``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _empty_of(annotation: Any) -> Callable[[], Any] | None:
    """``list`` / ``dict`` for a list or dict annotation: the original gave
    ``li: List[int] = None`` an empty list (``Optional[...] = None`` stays None)."""
    if is_list(annotation):
        return list
    if annotation is dict or typing.get_origin(annotation) is dict:
        return dict
    return None


def _binder_for(
    name: str,
    annotation: Any,
    default: Any,
    has_default: bool,
    model_binders: dict[Any, ModelBinder],
    default_binder: ModelBinder | None,
) -> tuple[Binder, Any]:
    written = annotation
    annotation = _unwrap_optional(annotation)
    # ``x: T = None`` without Optional: the original's value of an absent T (``[]``, ``Header("")``)
    absent_none = has_default and default is None and annotation is written
    if annotation is not None and _hashable(annotation) and annotation in model_binders:
        return _model(model_binders[annotation], name, annotation, default)
    marker = _kind_of(default) if has_default else None
    if marker is not None:
        return _marker_binder(name, marker, default, annotation), marker
    # An annotation names the kind; a plain default is the value when missing.
    if annotation is not None:
        for kind in FIXED:
            if _is_class(annotation, kind):
                if kind is JSONBody and has_default:  # an optional body
                    return optional_json_body(default), kind
                return FIXED[kind], kind
        if is_list(annotation) and typing.get_args(annotation) == (MultipartFile,):
            absent = [] if absent_none else default  # ``Optional[...] = None`` stays None
            return multipart_files(name, absent, not has_default), MultipartFile
        for kind in (Header, Cookie, PathValue, RegGroup, MultipartFile, Parameters, Parameter):
            if _is_class(annotation, kind):
                marker_default = _empty_marker(name, kind) if absent_none else default
                binder = _annotated_marker(name, kind, marker_default, not has_default)
                return binder, kind
        if default_binder is not None and not _is_plain(annotation):
            return _model(default_binder, name, annotation, default)
    target = annotation
    if has_default and default is not None and annotation is None:
        target = type(default)
    if target is None or target is typing.Any:
        target = str
    elif not _is_plain(target):
        if has_default:  # a type no parameter text converts to: the default, as in the original
            return _constant(default), "default"
        return unsupported(name, target), "param"  # a 400, as in the original
    elif not has_default and not _items_convert(target):  # ``days: List[date]``
        return unsupported(name, target), "param"
    empty = _empty_of(target) if absent_none else None
    return by_name(name, target, default, not has_default, empty), "param"


def _constant(value: Any) -> Binder:
    """A binder that always gives ``value`` (a client cannot replace it)."""

    def bind(ctx: BindContext) -> Any:
        return value

    return bind


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _items_convert(target: Any) -> bool:
    """False for a list of a type no parameter text converts to (``List[date]``)."""
    args = typing.get_args(target) if is_list(target) else ()
    if not args:
        return True
    item = args[0]
    return item in (str, int, float, bool, dict, Parameter, typing.Any) or (
        typing.get_origin(item) is dict
    )


def _is_plain(target: Any) -> bool:
    """True for the annotations converted from a parameter's text."""
    return (
        target in (str, int, float, bool, list, dict)
        or is_list(target)
        or typing.get_origin(target) is dict
    )


def _empty_marker(name: str, kind: Any) -> Any:
    """What the original injected for an absent ``x: Kind = None``: an empty marker
    (a ``Cookie`` failed there: None here)."""
    if kind is Header or kind is Parameter:
        return kind(name)
    if kind is Parameters:
        return []
    if kind is MultipartFile:
        return MultipartFile(name)
    return None


def _annotated_marker(name: str, kind: Any, default: Any, required: bool) -> Binder:
    if kind is Header:
        if type(default) is str:
            default = Header(name, default)
        return header(name, default, required)
    if kind is Cookie:
        return cookie(name, default, required)
    if kind is PathValue:
        return path_value(name)
    if kind is RegGroup:
        return reg_group(0)
    if kind is MultipartFile:
        return multipart_file(name, default, required)
    if kind is Parameters:
        return parameters(name, default, required)
    return by_name(name, str, default, required)


def _marker_binder(name: str, kind: Any, default: Any, annotation: Any) -> Binder:
    if kind in FIXED:
        return FIXED[kind]
    required = bool(getattr(default, "_required", False))
    real = getattr(default, "name", "") or name
    if kind is Parameter:
        target = annotation if annotation in (int, float, bool) else str
        fallback: Any = None if required else _converted_default(real, target, str(default))
        return by_name(real, target, fallback, required)
    if kind is Parameters:
        return parameters(real, list(default), required)
    if kind is Header:
        return header(real, Header(real, str(default), required), required)
    if kind is Cookie:
        if default.name != real:  # ``Cookie()``: absent, it is named as a sent one is
            default = Cookie._named(real, default)
        return cookie(real, default, required)
    if kind is PathValue:
        return path_value(real)
    if kind is RegGroup:
        return reg_group(default.group)
    return multipart_file(real, default, required)


def _converted_default(name: str, target: Any, default: str) -> Any:
    """A marker's text default in the annotated type (None when it does not convert)."""
    if target is str:
        return default
    try:
        return converter(name, target)(default)
    except HttpError:
        return None
