"""Log lines nobody can forge: what a request says is passed as fields and escaped when written.

A request path, a reason quoting request data, a certificate subject or a header value may hold
CR, LF or ESC. Written raw to stderr they forge log lines (journald and grep take every LF as a new
entry) or drive the operator's terminal. So a log line that carries such values passes them as
fields (``extra={"fields": {...}}``, see :func:`log_fields`), never formatted into its message:
the text format renders them as ``key=value`` with every control character and non-printable
escaped, the JSON format as real keys. As a second line of defence both formatters escape control
characters in any message, and the text format indents every continuation line of a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .events import ClientIdentity

__all__ = [
    "FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "client_fields",
    "escape",
    "json_line",
    "log_fields",
    "render_fields",
    "render_value",
]

FIELDS = "fields"  # the LogRecord attribute (set through ``extra``) holding a line's fields
Fields = Mapping[str, Any]  # str, int, float, bool or None values

_UNQUOTED = re.compile(r"[^\s=\"\\]+").fullmatch  # needs no quotes: no space, '=', quote or backslash


def escape(text: str) -> str:
    """``text`` with control characters and other non-printables as ``\\xNN`` (``\\uNNNN`` beyond
    Latin-1), backslash and double quote escaped; printable text, accents included, stays readable."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return "".join(_escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    if char in '\\"':
        return "\\" + char
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _controls(text: str) -> str:
    """Only the non-printables of free text escaped (backslashes kept: the text may be rendered fields)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def render_value(value: Any) -> str:
    """One field's value in a text line: numbers as they are, None as ``-``, text escaped and quoted
    when it holds a space, ``=``, a quote or anything needing an escape."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and _UNQUOTED(text):  # the common case: nothing to escape
        return text
    return f'"{escape(text)}"'


def render_fields(fields: Fields) -> str:
    return " ".join([f"{key}={render_value(value)}" for key, value in fields.items()])


class _Line:
    """A record's message: rendered (escaped) only when a handler formats it."""

    __slots__ = ("message", "fields")

    def __init__(self, message: str, fields: Fields) -> None:
        self.message, self.fields = message, fields

    def __str__(self) -> str:
        return f"{self.message} {render_fields(self.fields)}" if self.fields else self.message


def log_fields(
    logger: logging.Logger, level: int, message: str, fields: Fields, exc_info: bool = False
) -> None:
    """Log ``message`` (a fixed text: no request data) with ``fields`` (anything, request data included)."""
    if logger.isEnabledFor(level):
        logger.log(level, _Line(message, fields), extra={FIELDS: fields}, exc_info=exc_info)


def client_fields(client: ClientIdentity | None) -> dict[str, str | None]:
    """The verified client certificate: its subject and SHA-256 fingerprint (None: no certificate)."""
    return {"subject": client.subject if client else None, "sha256": client.fingerprint if client else None}


class TextFormatter(logging.Formatter):
    """``time LEVEL message key=value...``: one line per record (continuation lines of a traceback
    start with a tab, so nothing a request said can pass for a record of its own)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return "\t" + "\n\t".join(_controls(line) for line in super().formatException(ei).split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\t" + "\n\t".join(_controls(line) for line in stack_info.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields: Fields = getattr(record, FIELDS, None) or {}
        message = record.msg.message if isinstance(record.msg, _Line) else record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, value in fields.items():  # a field never replaces the keys above
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json_line(line)


def json_line(value: Mapping[str, Any], indent: int | None = None) -> str:
    """A JSON object (on one line unless ``indent``); nothing in it a terminal would act on."""
    return _json_controls(json.dumps(value, ensure_ascii=False, default=str, indent=indent))


def _json_controls(text: str) -> str:
    """JSON escapes U+0000..U+001F itself; DEL, C1 controls (U+009B is a terminal's CSI), line
    separators and other non-printables are escaped here too, accents stay readable."""
    if text.isascii() and "\x7f" not in text:
        return text
    return "".join(char if char.isprintable() or char == "\n" else _json_escape(char) for char in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
