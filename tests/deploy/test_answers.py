from __future__ import annotations

import numpy as np
import orjson
import pytest

from deploy.answers import AnswerWriter
from deploy.errors import ServingError
from deploy.outcomes import new_prediction_ids


def as_dict(model, version, classes, labels, probabilities, ids, requests):
    """The answer as the predict route built it before ``AnswerWriter``: a dict per row."""
    return {
        "model": model,
        "version": version,
        "predictions": [
            {"label": label, "probabilities": dict(zip(classes, row, strict=True)),
             "prediction_id": pid, "request_id": rid}
            for label, row, pid, rid in zip(labels, probabilities.tolist(), ids, requests, strict=True)
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    "classes", [["no disease", "disease"], ['say "no"', "100%s %%", "ünï\ncode", "a,b"], ["one"]]
)
@pytest.mark.parametrize("rows", [0, 1, 2, 64])
@pytest.mark.parametrize("request_id", [None, 'caller,"%s"\\'])
def test_the_answer_is_the_bytes_orjson_gives_for_the_dict(classes, rows, request_id):
    probabilities = np.random.default_rng(rows).random((rows, len(classes))).astype(np.float32)
    if rows > 1:
        probabilities[0, 0], probabilities[1, -1] = 1e-9, np.nan
    labels = [classes[i] for i in np.nan_to_num(probabilities).argmax(axis=1)]
    ids = new_prediction_ids(rows)
    requests = [None if request_id is None else f"{request_id}:{i}" for i in range(rows)]

    written = AnswerWriter(classes).write(
        model='heart "v"', version=3, labels=labels, probabilities=probabilities,
        prediction_ids=ids, request_ids=requests,
    )  # fmt: skip

    expected = as_dict('heart "v"', 3, classes, labels, probabilities, ids, requests)
    assert written == orjson.dumps(expected)


def test_probabilities_that_do_not_fit_the_labels_are_refused():
    writer = AnswerWriter(["no disease", "disease"])

    with pytest.raises(ServingError):
        writer.write(
            model="heart", version=1, labels=["disease"], probabilities=np.ones((1, 3)),
            prediction_ids=new_prediction_ids(1), request_ids=[None],
        )  # fmt: skip
