"""The live service against its own OpenAPI schema: no 5xx, no response that breaks the schema.

Schemathesis generates requests from ``/openapi.json`` (valid and invalid bodies,
paths and headers) and checks every response: not a server error, a documented
status code and content type, a body that matches the documented schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(model_store, tmp_path_factory, monkeypatch_module):  # type: ignore[no-untyped-def]
    """The live service with its failed-authentication limits lifted: schemathesis sends
    hundreds of keyless requests on purpose, and 429 is not what it checks
    (tests/deploy/test_auth.py checks the limits)."""
    from tests.deploy.conftest import live_service

    monkeypatch_module.setenv("FEDWARDEN_AUTH_FAILURES_PER_CLIENT", "1000000")
    monkeypatch_module.setenv("FEDWARDEN_AUTH_FAILURES_TOTAL_PER_S", "1000000")
    with live_service(model_store.url, tmp_path_factory.mktemp("serve") / "serve.log") as service:
        yield service


@pytest.fixture(scope="module")
def monkeypatch_module():  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def check_operations(url: str, *, headers: dict[str, str], examples: int) -> int:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers)

        run()
        checked += 1
    return checked


def test_the_api_keeps_its_own_contract(live, model_store):
    operations = check_operations(live.url, headers={"Authorization": f"Bearer {model_store.keys['app']}"}, examples=40)
    assert operations >= 6  # predict, list, details, healthz, readyz, metrics


def test_the_api_keeps_its_contract_for_strangers(live):
    assert check_operations(live.url, headers={}, examples=10) >= 6
