"""A prediction request's body, parsed with orjson and checked by hand (no pydantic pass).

The body is ``{"rows": [...]}`` or ``{"columns": {...}}``, with an optional
``"request_id"``; what the features hold is checked afterwards against the
model's schema (``deploy.validation`` for rows, ``deploy.columns`` for
columns). Anything else is a 422 that says what is wrong, in the service's one
error format; a body that is not JSON says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from deploy.errors import InvalidRequestError

REQUEST_ID_MAX = 200
_FIELDS = frozenset({"rows", "columns", "request_id"})


@dataclass(frozen=True)
class PredictBody:
    rows: list[Any] | None
    columns: dict[str, Any] | None
    request_id: str | None


def parse_predict_body(raw: bytes) -> PredictBody:
    """The parts of a predict body; ``InvalidRequestError`` names the first problem."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN and Infinity; the standard parser reads them, so that the
        # schema check can name the row and feature that holds one.
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequestError(f"body: not valid JSON ({exc.msg})") from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("body: expected an object with 'rows' or 'columns'")
    extra = sorted(set(payload) - _FIELDS)
    if extra:
        raise InvalidRequestError(f"body: unknown field {extra[0]!r}")
    rows, columns = payload.get("rows"), payload.get("columns")
    if (rows is None) == (columns is None):
        raise InvalidRequestError("body: give exactly one of 'rows' and 'columns'")
    if rows is not None and not isinstance(rows, list):
        raise InvalidRequestError("rows: expected a list of rows")
    if columns is not None and not isinstance(columns, dict):
        raise InvalidRequestError("columns: expected an object of feature columns")
    request_id = payload.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or not 0 < len(request_id) <= REQUEST_ID_MAX
    ):
        raise InvalidRequestError(
            f"request_id: expected a string of 1 to {REQUEST_ID_MAX} characters"
        )
    return PredictBody(rows=rows, columns=columns, request_id=request_id)
