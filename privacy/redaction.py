"""Logs that leak nothing: every log record is masked before any handler sees it.

``install_log_redaction`` is called by every entry point (the CLI, the
inference service's factory, the ClientApp and ServerApp processes). It wraps
the logging record factory, so records of every logger (fedwarden's, Flower's,
uvicorn's, handlers added later) are masked when they are created: the
formatted message and any traceback. ``SecretFilter`` does the same as a
``logging.Filter`` for a handler of one's own. Masked:

* API keys (``fw_<prefix>_<secret>``: the secret; the prefix names the key and
  is not secret), bearer tokens and ``Authorization`` header values;
* PEM private-key blocks (and the start of a truncated one);
* passwords in URLs (``postgresql+psycopg://user:PASSWORD@host/db``);
* ``FEDWARDEN_KEK`` values and other ``*_KEY=`` / ``*_PASSWORD=`` / ``*_TOKEN=`` assignments;
* literal values registered with ``Redactor.add_literals`` (a sensitive column's
  categories, a secret read from a file).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

MASK = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        f"{MASK} private key",
    ),
    (re.compile(r"\b(fw_[0-9a-f]{12}_)[A-Za-z0-9_\-]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), rf"\1{MASK}"),
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\b)(?:[A-Za-z]+\s+)?[^\s\"',;]+"
        ),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b([a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@/\s]+(@)"), rf"\1{MASK}\2"),
    (
        re.compile(r"(?i)\b([A-Z0-9_]*(?:KEK|KEY|PASSWORD|TOKEN|SECRET)\s*=\s*)[^\s\"',;]+"),
        rf"\1{MASK}",
    ),
)


class Redactor:
    """Masks secrets in text: the fixed patterns, plus literal values registered at run time."""

    def __init__(self) -> None:
        self._literals: set[str] = set()
        self._lock = threading.Lock()
        self._literal_pattern: re.Pattern[str] | None = None

    def add_literals(self, values: Iterable[str], *, min_length: int = 3) -> None:
        """Mask these exact strings from now on (shorter ones would mask ordinary words)."""
        with self._lock:
            fresh = {v for v in values if isinstance(v, str) and len(v) >= min_length}
            if fresh - self._literals:
                self._literals |= fresh
                ordered = sorted(self._literals, key=len, reverse=True)
                self._literal_pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        literal = self._literal_pattern
        if literal is not None:
            text = literal.sub(MASK, text)
        return text


REDACTOR = Redactor()  # the process's one redactor: the logging factory is process-wide too


def mask(text: str) -> str:
    """``text`` masked by the process's redactor."""
    return REDACTOR.mask(text)


def redact_record(record: logging.LogRecord, redactor: Redactor = REDACTOR) -> None:
    """Mask a record in place: its message (arguments merged in) and its traceback."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to logging's own error handling
        return
    record.msg, record.args = redactor.mask(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = redactor.mask(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redactor.mask(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.mask(record.stack_info)


class SecretFilter(logging.Filter):
    """A ``logging.Filter`` that masks every record it sees (and drops none)."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.redactor)
        return True


_installed = threading.Lock()
_INSTALLED_FLAG = "_fedwarden_redacting"


def install_log_redaction() -> None:
    """Mask every log record this process creates from now on (idempotent).

    Also puts a ``SecretFilter`` on the root logger's handlers and on those of
    loggers that do not propagate (Flower's), for records made before.
    """
    with _installed:
        factory = logging.getLogRecordFactory()
        if not getattr(factory, _INSTALLED_FLAG, False):
            logging.setLogRecordFactory(_redacting(factory))
    for logger in [logging.getLogger(), *_named_loggers()]:
        for handler in logger.handlers:
            if not any(isinstance(f, SecretFilter) for f in handler.filters):
                handler.addFilter(SecretFilter())


def _redacting(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        redact_record(record)
        return record

    setattr(make, _INSTALLED_FLAG, True)
    return make


def _named_loggers() -> list[logging.Logger]:
    return [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.handlers
    ]
