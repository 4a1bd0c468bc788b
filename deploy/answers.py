"""The predict answer's JSON, written straight from the arrays: no dict per row.

The answer is ``PredictResponse`` (``deploy.schemas``, which the OpenAPI document
shows): the model, its version, and for each row its label, its probability of
each class, its ``prediction_id`` and its caller's ``request_id``. The bytes are
those ``orjson.dumps`` gives for that object as a dict; what differs is that the
parts each row repeats (the keys, and each label's quoted name) are quoted once
per model, and the numbers are written by one ``orjson.dumps`` of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain, repeat

import numpy as np
import orjson

from deploy.errors import ServingError


def _quoted(text: str) -> str:
    return orjson.dumps(text).decode()


class AnswerWriter:
    """Writes the answers of one model's predictions; built once per served model."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        quoted = [_quoted(label) for label in self.labels]
        # A row is its label's opening (the label and the first class's key), then each
        # probability followed by the next key (the last by the prediction id's key),
        # the prediction id (hex digits: nothing to escape), and the request id.
        self._opening = {
            label: f'{{"label":{q},"probabilities":{{{quoted[0]}:'
            for label, q in zip(self.labels, quoted, strict=True)
        }
        self._keys = [f",{q}:" for q in quoted[1:]] + ['},"prediction_id":"']

    def write(
        self,
        *,
        model: str,
        version: int,
        labels: Sequence[str],
        probabilities: np.ndarray,
        prediction_ids: Sequence[str],
        request_ids: Sequence[str | None],
    ) -> bytes:
        """The answer for a batch: ``labels`` (the most probable class of each row),
        ``probabilities`` (rows by classes) and each row's ids."""
        rows, classes = probabilities.shape
        if classes != len(self.labels) or not (
            len(labels) == len(prediction_ids) == len(request_ids) == rows
        ):
            raise ServingError(
                f"{model} v{version}: {rows} rows of {classes} probabilities, {len(labels)} "
                f"labels and {len(prediction_ids)} ids do not make one answer ("
                f"{len(self.labels)} classes)",
                model=model,
            )
        flat = orjson.dumps(probabilities.ravel().tolist())[1:-1].decode()
        numbers = flat.split(",") if flat else []
        parts: list[Iterable[str]] = [map(self._opening.__getitem__, labels)]
        for j, key in enumerate(self._keys):
            parts += [numbers[j::classes], repeat(key, rows)]
        if request_ids.count(None) == rows:
            parts += [prediction_ids, repeat('","request_id":null},', rows)]
        else:
            requests = [_quoted_or_null(r) + "}," for r in request_ids]
            parts += [prediction_ids, repeat('","request_id":', rows), requests]
        body = "".join(chain.from_iterable(zip(*parts, strict=True)))
        head = f'{{"model":{_quoted(model)},"version":{int(version)},"predictions":['
        return (head + body[:-1] + "]}").encode()


def _quoted_or_null(text: str | None) -> str:
    return "null" if text is None else _quoted(text)
