"""Structured logs: one JSON object per line, carrying the request id.

The request id lives in a context variable, set by the relay for ``/v1/*`` and by
``core.middleware.RequestIdMiddleware`` for every other request, so any log line
written while serving a request names it without passing it around. What is logged
is chosen at each call site: ids, statuses, amounts and timings, never a prompt, a
completion or a key."""

import contextvars
import json
import logging
import re
import traceback
import uuid
from datetime import UTC, datetime

import orjson

# No formatter here writes the thread, the process id or the source line of a
# record, and looking them up (a stack walk for the source line) is a measurable
# part of the relay's one access line per request. The logging module's documented
# switches turn them off (Celery's worker format names the process, which stays).
logging.logThreads = False
logging.logProcesses = False
logging._srcfile = None  # type: ignore[attr-defined]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tollgate_request_id", default=None
)

# A caller's id is taken only if it is a sane token: it ends up in logs, headers and
# the usage record.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(supplied: str | None) -> str:
    if supplied and _SAFE_ID.fullmatch(supplied):
        return supplied
    return f"req_{uuid.uuid4().hex}"


# Attributes every LogRecord has; anything else was passed in ``extra=`` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson cannot write (an integer past 64 bits)
            return json.dumps(entry, default=str)
