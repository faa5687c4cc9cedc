"""The command line: ``python -m simple_http_server`` (also ``simple-http-server``).

Scans a folder for controllers, mounts static folders given with ``-r`` and
serves them.  Nothing is served from the file system unless ``-r`` says so,
and the server listens on 127.0.0.1 unless ``-b`` says otherwise.  Every
option of the original command line (``-p``, ``-b``, ``-s``, ``--regex``,
``-r``, ``--loglevel``) keeps working.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from .config import MAX_SECONDS, ServerConfig

__all__ = ["build_parser", "main", "parse_resources"]

_SIZE_UNITS = {
    "": 1,
    "K": 1024,
    "KB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
}


def _size(text: str) -> int:
    """``"16M"`` -> 16777216; plain numbers are bytes."""
    value = text.strip().upper()
    number = value.rstrip("KMGB")
    unit = value[len(number) :]
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1048576, 512K, 16M)")
    return int(number) * _SIZE_UNITS[unit]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value > MAX_SECONDS:  # nan, inf, 1e19
        raise argparse.ArgumentTypeError(f"must be a number of seconds up to {MAX_SECONDS:.0f}")
    return value


def _positive_float(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _non_negative_float(text: str) -> float:
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def parse_resources(values: Sequence[str]) -> dict[str, str]:
    """``-r`` values as a mount table.

    ``PREFIX=DIR`` mounts DIR at PREFIX (``/static/**=./public``); a bare
    ``DIR`` keeps the original meaning ``/**`` = DIR.  Every folder must exist.
    """
    mounts: dict[str, str] = {}
    for value in values:
        prefix, sep, folder = value.partition("=")
        if not sep or os.path.isdir(value) or not prefix.startswith(("/", "*")):
            prefix, folder = "/**", value
        if not folder or not os.path.isdir(folder):
            raise ValueError(f"resources folder does not exist: {folder!r}")
        mounts[prefix] = os.path.abspath(folder)
    return mounts


def _program_name() -> str:
    """``simple-http-server`` when run as the console script (its usage and errors name
    it), else ``python -m simple_http_server``."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not script or script in ("__main__.py", "-c") or script.endswith(".py"):
        return "python -m simple_http_server"
    return script


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` documents every option)."""
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Serve the controllers found in a folder, and static files with -r.",
        epilog="Without -r nothing is served from the file system. "
        "Example: python -m simple_http_server -s ./app -r /static/**=./public -p 8080",
    )
    add = parser.add_argument
    add(
        "-b",
        "--bind",
        "--host",
        dest="host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    add("-p", "--port", type=int, default=9090, help="port to listen on (default 9090)")
    add(
        "-s",
        "--scan",
        default=os.getcwd(),
        metavar="DIR",
        help="folder whose Python modules are imported to register controllers "
        "(default: the current folder)",
    )
    add(
        "--regex",
        default="",
        metavar="REGEX",
        help="import only the modules whose relative path or dotted name matches REGEX",
    )
    add(
        "-r",
        "--resources",
        action="append",
        default=[],
        metavar="[PREFIX=]DIR",
        help="serve the files of DIR at PREFIX, e.g. '/static/**=./public' (repeatable); "
        "a bare DIR means '/**=DIR'",
    )
    add(
        "--prefer-coroutine",
        "--prefer-corountine",
        dest="prefer_coroutine",
        action="store_true",
        help="use the asyncio transport instead of threads",
    )
    add(
        "-w",
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (default 1: serve in this process)",
    )
    add("--certfile", default="", help="TLS certificate chain (PEM); enables HTTPS")
    add("--keyfile", default="", help="TLS private key (PEM), if not in --certfile")
    add("--keypass", default="", help="password of an encrypted --keyfile")
    add(
        "--log-level",
        "--loglevel",
        dest="log_level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default INFO)",
    )
    add(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log one line per request: client, method, path, status, bytes, duration",
    )
    add(
        "--keep-alive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep connections open between requests (default on)",
    )
    limits = parser.add_argument_group("limits and timeouts (sizes accept K, M, G)")
    lim = limits.add_argument
    lim("--max-body-size", type=_size, help="largest in-memory request body (413 beyond)")
    lim("--max-upload-size", type=_size, help="largest multipart request body (413 beyond)")
    lim("--max-head-size", type=_size, help="largest request line and headers (414/431 beyond)")
    lim(
        "--max-form-fields",
        type=int,
        help="most fields in one urlencoded form body (413 beyond; 0: no limit)",
    )
    lim("--max-parts", type=int, help="most parts in one multipart body (413 beyond; 0: no limit)")
    lim(
        "--max-files",
        type=int,
        help="most file parts in one multipart body (413 beyond; 0: no limit)",
    )
    lim(
        "--max-part-header-size",
        type=_size,
        help="largest headers of one multipart part (413 beyond; 0: no limit)",
    )
    lim(
        "--max-websocket-message-size",
        type=_size,
        help="largest websocket message (close 1009 beyond)",
    )
    lim(
        "--max-send-backlog",
        type=_size,
        help="most output a coroutine may leave unsent on one connection (dropped beyond)",
    )
    lim("--max-connections", type=int, help="most simultaneous connections (503 beyond)")
    lim("--worker-threads", type=int, help="threads serving requests or running sync code")
    lim(
        "--idle-timeout",
        type=_positive_float,
        help="seconds a kept-alive connection may stay idle between requests",
    )
    lim(
        "--head-timeout",
        type=_positive_float,
        help="seconds a client has to send a complete request head (408 beyond); "
        "a new connection's first head and TLS handshake count from the accept",
    )
    lim(
        "--body-timeout",
        type=_positive_float,
        help="seconds of silence allowed while a request body is read (408 beyond)",
    )
    lim(
        "--keep-alive-max-requests",
        type=int,
        help="requests served on one connection before it is closed (0: no limit)",
    )
    lim(
        "--min-body-rate",
        type=float,
        help="slowest accepted request body in bytes/s after the grace period (0: off)",
    )
    lim(
        "--min-body-rate-grace",
        type=_non_negative_float,
        help="seconds a request body may take before --min-body-rate applies",
    )
    lim(
        "--min-send-rate",
        type=float,
        help="slowest accepted reader of the output in bytes/s, counted over the time the "
        "server waits for it, after the grace period (0: off)",
    )
    lim(
        "--min-send-rate-grace",
        type=_non_negative_float,
        help="seconds the server may wait for a client's reading before --min-send-rate applies",
    )
    lim(
        "--drain-timeout",
        type=_positive_float,
        help="seconds in-flight requests get to finish on shutdown",
    )
    lim(
        "--websocket-ping-interval",
        type=_non_negative_float,
        help="seconds of silence from a websocket peer before the server pings it (0: off)",
    )
    lim(
        "--websocket-ping-timeout",
        type=_non_negative_float,
        help="seconds a pinged websocket peer has to answer before it is closed "
        "with 1011 (0: never)",
    )
    return parser


_CONFIG_OPTIONS = (
    "max_body_size",
    "max_upload_size",
    "max_head_size",
    "max_form_fields",
    "max_parts",
    "max_files",
    "max_part_header_size",
    "max_websocket_message_size",
    "max_send_backlog",
    "max_connections",
    "worker_threads",
    "idle_timeout",
    "head_timeout",
    "body_timeout",
    "min_body_rate",
    "min_body_rate_grace",
    "min_send_rate",
    "min_send_rate_grace",
    "keep_alive_max_requests",
    "drain_timeout",
    "websocket_ping_interval",
    "websocket_ping_timeout",
)


def _with_flag_names(message: str) -> str:
    """``message`` with the flags' names: ``max_connections`` -> ``--max-connections``."""
    names = "|".join(("port", *_CONFIG_OPTIONS))
    return re.sub(rf"\b({names})\b", lambda m: "--" + m[1].replace("_", "-"), message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resources = parse_resources(args.resources)
    except ValueError as exc:
        parser.error(str(exc))
    if not os.path.isdir(args.scan):
        problem = "is not a folder" if os.path.exists(args.scan) else "does not exist"
        parser.error(f"scan folder {problem}: {args.scan!r}")
    try:
        re.compile(args.regex)
    except re.error as exc:
        parser.error(f"--regex is not a valid regular expression: {exc}")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    options: dict[str, Any] = {
        name: getattr(args, name) for name in _CONFIG_OPTIONS if getattr(args, name) is not None
    }
    try:  # out-of-range values are refused before the scan runs the user's modules
        ServerConfig().with_changes(host=args.host, port=args.port, **options)
    except ValueError as exc:
        parser.error(_with_flag_names(str(exc)))

    from . import logger, server

    if args.certfile:  # a missing file, a wrong --keypass: refused before the scan too
        try:
            options["ssl_context"] = server.make_ssl_context(
                args.keyfile, args.certfile, args.keypass
            )
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    logger.set_level(args.log_level)
    server.scan(regx=args.regex, project_dir=args.scan)
    try:
        server.start(
            host=args.host,
            port=args.port,
            resources=resources,
            prefer_coroutine=args.prefer_coroutine,
            keep_alive=args.keep_alive,
            access_log=args.access_log,
            workers=args.workers,
            **options,
        )
    except (OSError, ValueError) as exc:  # a port in use, a bad certificate...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        logger.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
