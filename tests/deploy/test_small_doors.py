"""The review's small findings on the inference API, each shut."""

from __future__ import annotations

import json
import logging
import stat

from deploy.api import RedactQuery
from server.store.engine import open_store
from tests.deploy.test_api import auth, rows


def _predict_raw(client, model_store, body: str):
    headers = {**auth(model_store), "content-type": "application/json"}
    return client.post("/v1/models/heart/predict", content=body, headers=headers)


def test_a_number_too_large_for_a_float_is_422_not_500(client, model_store):
    row = rows(model_store, 1)[0]
    body = json.dumps({"rows": [row]}).replace(
        f'"age": {json.dumps(row["age"])}', '"age": 1' + "0" * 400
    )

    response = _predict_raw(client, model_store, body)
    after = client.post(
        "/v1/models/heart/predict", json={"rows": rows(model_store, 1)}, headers=auth(model_store)
    )

    assert response.status_code == 422 and "too large" in response.json()["error"]["message"]
    assert after.status_code == 200


def test_an_oversized_chunked_body_is_413(client, model_store):
    def chunks():
        for _ in range(80):
            yield b" " * 1024  # 80 KiB, over the fixture's 64 KiB, with no content-length

    response = client.post(
        "/v1/models/heart/predict",
        content=chunks(),
        headers={**auth(model_store), "content-type": "application/json"},
    )

    assert response.status_code == 413


def test_a_query_string_never_reaches_the_access_log():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/models?api_key=fw_0123456789ab_secret", "1.1", 401),
        None,
    )  # fmt: skip

    RedactQuery().filter(record)

    assert "secret" not in record.getMessage() and "?[redacted]" in record.getMessage()


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    store.dispose()

    for path in tmp_path.iterdir():
        if path.name.startswith("fresh.db"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
