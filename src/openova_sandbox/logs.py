"""Structured logging for every entry point: JSON off a TTY, console lines on one.

A redaction processor runs last before rendering: values under secret-looking keys are
replaced, and anything shaped like a JWT or a credentialed URL is masked wherever it
appears, so a token can't reach the log even through an exception message. uvicorn's
own access log is turned off by the CLI (it prints query strings, which may carry
``access_token``); the app logs requests itself with the route template only.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any


def _structlog_without_rich() -> None:
    """Import structlog, the first time, as if ``rich`` were not installed.

    structlog's ``dev`` and ``tracebacks`` modules import ``rich`` (with ``rich.pretty``,
    ``rich.traceback``, pygments and attrs) whenever it is installed, TTY or not, only to
    offer rich tracebacks; this pipeline never renders one (``format_exc_info`` turns
    every exception into plain text before the renderer). Hiding ``rich`` from that one
    import keeps ~3 MiB out of every process, the per-sandbox pty-server's idle memory
    included (``tests/integration/cli/test_pty_server_footprint.py``). The CLI's own
    ``rich`` (help, tables) is untouched: it is restored right after. ``greenlet`` is
    hidden the same way: structlog's deprecated ``threadlocal`` module picks
    greenlet-local storage when greenlet is installed (SQLAlchemy brings it), which this
    project never uses (1.1 MiB); SQLAlchemy imports it normally later.
    """
    if "structlog" in sys.modules:
        return
    hidden = ("rich", "greenlet")
    held = {name: sys.modules[name] for name in hidden if name in sys.modules}
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import rich` fails here
    try:
        import structlog  # noqa: F401
    finally:
        for name in hidden:
            if name in held:
                sys.modules[name] = held[name]
            else:
                del sys.modules[name]


_structlog_without_rich()

import structlog  # noqa: E402

_SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|authorization|cookie|api[_-]?key|credential)", re.I
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)?")
_URL_CREDS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+(:[^/\s@]*)?@", re.I)
_QUERY_TOKEN = re.compile(r"((?:access_token|token|code|state)=)[^&\s]+", re.I)
# opaque credentials in text: "Authorization: Bearer sk-…", "password=…", '"api_key": "…"'
_SCHEME_CREDS = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.I)
_ASSIGNED = re.compile(
    r"""((?:access_token|refresh_token|id_token|client_secret|code_verifier|password|passwd"""
    r"""|secret|api[_-]?key|x-api-key|token)["']?\s*[=:]\s*["']?)[^\s&"',;}]+""",
    re.I,
)
REDACTED = "[redacted]"
# what every shape above needs: a JWT starts with "eyJ", the others need "://", a space,
# "=" or ":". Text with none of these (most values: names, ids, numbers) is returned as
# it is after one search instead of five substitutions (log lines on the model gateway's
# path carry many such values; bench/gateway.py)
_MAY_HOLD_SECRET = re.compile(r"eyJ|osb_pat_|[\s=:@]")
# a personal access token anywhere in text (docs/api.md): recognised by its prefix
_PAT = re.compile(r"osb_pat_[A-Za-z0-9_-]*")


def scrub(text: str) -> str:
    if not _MAY_HOLD_SECRET.search(text):
        return text
    text = _JWT.sub(REDACTED, text)
    text = _PAT.sub(REDACTED, text)
    text = _URL_CREDS.sub(r"\1***@", text)
    text = _SCHEME_CREDS.sub(r"\1 " + REDACTED, text)
    text = _ASSIGNED.sub(r"\1" + REDACTED, text)
    return _QUERY_TOKEN.sub(r"\1" + REDACTED, text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key) and key not in {"token_source"}:
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Route structlog and stdlib logging (uvicorn, alembic) through one pipeline."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # a line below the level is dropped before any processor runs (issue 11: the
        # per-request line cost 8 % of a list request's CPU at level warning)
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # alembic narrates every start ("setup plugin …", "Context impl SQLiteImpl", each
    # migration) at INFO: noise before the login link; its warnings still show, and
    # debug shows everything
    logging.getLogger("alembic").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
