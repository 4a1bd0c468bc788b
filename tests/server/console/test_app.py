"""The console's pages and actions through FastAPI's test client, over a seeded store.

Covers sign-in and its cookie, roles per page and action (each denial audited),
the anti-forgery token, the security headers, and that no secret is rendered.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from server.console.app import create_app
from server.console.settings import ConsoleSettings
from server.store.anchoring import generate_signing_key, load_signing_key, public_key_hex
from server.store.keys import authenticate
from server.store.models import ApiKey, AuditEvent, ModelVersion
from server.store.oversight import sign_audit_head

from .conftest import Seeded, csrf_of, seed_store, sign_in

READ_PAGES = ["/", "/runs", "/models", "/models/heart/1", "/drift", "/drift/heart"]


def events(seeded: Seeded, *, action: str, actor: str | None = None) -> list[AuditEvent]:
    with seeded.store.session() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        if actor is not None:
            query = query.where(AuditEvent.actor == actor)
        return list(session.scalars(query.order_by(AuditEvent.seq)))


def test_pages_need_a_session(app_client: TestClient) -> None:
    response = app_client.get("/runs", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/runs"


def test_a_wrong_key_is_refused_and_audited(app_client: TestClient, seeded: Seeded) -> None:
    before = len(events(seeded, action="authenticate"))
    page = app_client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]

    response = app_client.post("/signin", data={"api_key": "fw_0123456789ab_wrongwrongwrongwrong",
                                                "signin_token": token})

    assert response.status_code == 401
    assert "authentication failed" in response.text
    assert "fw_console=" not in response.headers.get("set-cookie", "")
    assert len(events(seeded, action="authenticate")) == before + 1


def test_sign_in_without_the_form_token_is_refused(app_client: TestClient, seeded: Seeded) -> None:
    response = app_client.post("/signin", data={"api_key": seeded.keys["ops"], "signin_token": "forged"})

    assert response.status_code == 403
    assert events(seeded, action="console.signin")[-1].outcome == "denied"


def test_the_session_cookie_is_http_only_strict_and_expires(app_client: TestClient, seeded: Seeded) -> None:
    page = app_client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]

    response = app_client.post("/signin", data={"api_key": seeded.keys["ops"], "signin_token": token},
                               follow_redirects=False)

    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("fw_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test
    assert seeded.keys["ops"] not in cookie
    assert events(seeded, action="console.signin", actor="ops")[-1].outcome == "success"


def test_the_cookie_is_secure_over_tls(seeded: Seeded) -> None:
    app = create_app(ConsoleSettings(database_url=seeded.url), store=seeded.store)
    with TestClient(app, base_url="https://console.test") as client:
        page = client.get("/signin")
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        response = client.post("/signin", data={"api_key": seeded.keys["eve"], "signin_token": token},
                               follow_redirects=False)

    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("fw_console="))
    assert "Secure" in cookie
    assert response.headers["strict-transport-security"]


@pytest.mark.parametrize("who", ["ops", "eve"])
def test_every_page_renders_real_data_with_a_strict_policy(app_client: TestClient, seeded: Seeded, who: str) -> None:
    sign_in(app_client, seeded.keys[who])
    pages = [*READ_PAGES, f"/runs/{seeded.run_id}"] + (["/audit"] if who == "eve" else [])

    for path in pages:
        response = app_client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-eval" not in csp and "default-src 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), path  # no inline script
        assert " on" + "click=" not in response.text
        for secret in seeded.keys.values():
            assert secret not in response.text
            assert secret.split("_", 2)[2] not in response.text

    run = app_client.get(f"/runs/{seeded.run_id}").text
    assert "Cleveland" in run and "timed out after 30 s" in run and "budget: the next round" in run
    assert "0.81" in run and "data-figure" in run
    overview = app_client.get("/").text
    assert "ε spent vs budget" in overview and "Switzerland" in overview


def test_key_material_is_never_rendered(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, seeded.keys["eve"])
    with seeded.store.session() as session:
        hashes = [(k.salt, k.secret_hash) for k in session.scalars(select(ApiKey))]

    pages = [app_client.get(p).text for p in [*READ_PAGES, "/audit", f"/runs/{seeded.run_id}"]]

    for salt, digest in hashes:
        assert not any(salt in page or digest in page for page in pages)


def test_a_consumer_sees_nothing_and_each_denial_is_audited(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, seeded.keys["app"])
    before = len(events(seeded, action="authorize", actor="app"))

    codes = {path: app_client.get(path).status_code for path in [*READ_PAGES, "/audit", f"/runs/{seeded.run_id}"]}

    assert set(codes.values()) == {403}, codes
    denials = events(seeded, action="authorize", actor="app")[before:]
    assert len(denials) == len(codes)
    assert {d.outcome for d in denials} == {"denied"}


@pytest.mark.parametrize("who", ["eve", "admin"])
def test_auditors_and_admins_cannot_promote(app_client: TestClient, seeded: Seeded, who: str) -> None:
    sign_in(app_client, seeded.keys[who])
    listing = app_client.get("/models").text
    assert "Promote…" not in listing

    confirm = app_client.get("/models/heart/2/promote")
    post = app_client.post("/models/heart/2/promote", data={"csrf_token": csrf_of(listing)})

    assert confirm.status_code == 403 and post.status_code == 403
    denials = [e for e in events(seeded, action="authorize", actor=who) if e.target == "model:heart@2"]
    assert len(denials) >= 2
    with seeded.store.session() as session:
        assert session.scalars(select(ModelVersion.stage).where(ModelVersion.version == 2)).one() == "staging"


def test_a_form_without_its_token_is_refused_and_audited(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, seeded.keys["ops"])

    response = app_client.post("/models/heart/2/promote", data={"csrf_token": "forged"})

    assert response.status_code == 403
    assert events(seeded, action="console.csrf", actor="ops")[-1].target == "/models/heart/2/promote"
    with seeded.store.session() as session:
        assert session.scalars(select(ModelVersion.stage).where(ModelVersion.version == 2)).one() == "staging"


def test_a_revoked_key_ends_the_session(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seeded = seed_store(tmp_path)
    app = create_app(ConsoleSettings(database_url=seeded.url), store=seeded.store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        sign_in(client, seeded.keys["eve"])
        assert client.get("/runs").status_code == 200
        with seeded.store.session() as session:
            from server.store.governance import revoke_key

            admin = authenticate(session, seeded.keys["admin"])
            revoke_key(session=session, actor=admin, prefix=seeded.keys["eve"].split("_")[1])

        response = client.get("/runs", follow_redirects=False)

    assert response.status_code == 303
    seeded.store.dispose()


def test_operator_promotes_after_confirming(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seeded = seed_store(tmp_path)
    app = create_app(ConsoleSettings(database_url=seeded.url), store=seeded.store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        sign_in(client, seeded.keys["ops"])
        confirm = client.get("/models/heart/2/promote")
        assert "archived" in confirm.text and "Yes, promote v2" in confirm.text

        done = client.post("/models/heart/2/promote", data={"csrf_token": csrf_of(confirm.text)})

    assert done.status_code == 200 and "Promoted to production" in done.text
    with seeded.store.session() as session:
        stages = dict(session.execute(select(ModelVersion.version, ModelVersion.stage)).tuples().all())
    assert stages == {1: "archived", 2: "production"}
    assert events(seeded, action="model.promote", actor="ops")[-1].target == "model:heart@2"
    seeded.store.dispose()


def test_audit_filters_and_pages(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, seeded.keys["eve"])

    filtered = app_client.get("/audit", params={"actor": "ops", "action": "model.register"}).text
    first = app_client.get("/audit").text
    older = re.search(r'id="older" href="([^"]+)"', first)

    rows = re.findall(r"<tr><td>(\d+)</td>", filtered)
    assert len(rows) == 2 and "model.register" in filtered
    assert older is not None
    second = app_client.get(older.group(1).replace("&amp;", "&")).text
    first_seqs = {int(s) for s in re.findall(r"<tr><td>(\d+)</td>", first)}
    second_seqs = {int(s) for s in re.findall(r"<tr><td>(\d+)</td>", second)}
    assert second_seqs and max(second_seqs) < min(first_seqs)
    assert app_client.get("/audit", params={"since": "yesterday"}).status_code == 400


def test_verify_export_and_a_receipt(app_client: TestClient, seeded: Seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    generate_signing_key(tmp_path / "coordinator.key")
    with seeded.store.session() as session:
        receipt = sign_audit_head(session=session, actor=authenticate(session, seeded.keys["admin"]),
                                  private_key=load_signing_key(tmp_path / "coordinator.key"))
    sign_in(app_client, seeded.keys["eve"])
    page = app_client.get("/audit").text

    verified = app_client.post("/audit/verify", data={"csrf_token": csrf_of(page)},
                               headers={"X-Console-Fragment": "1"})
    pinned = public_key_hex(load_signing_key(tmp_path / "coordinator.key").public_key())
    anchored = app_client.post("/audit/verify-receipt", data={"csrf_token": csrf_of(page),
                                                               "receipt": receipt.to_json(),
                                                               "public_key": pinned})
    exported = app_client.get("/audit/export")

    assert "The chain holds" in verified.text and "<html" not in verified.text
    assert "and so does the signed receipt" in anchored.text
    lines = exported.text.splitlines()
    assert exported.headers["content-disposition"].startswith("attachment")
    assert len(lines) > 20 and '"action": "audit.genesis"' in lines[0]  # the log pins its identity first


def test_verify_shows_the_first_broken_event(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seeded = seed_store(tmp_path)
    with seeded.store.engine.begin() as connection:  # tamper below the ORM, as an attacker would
        connection.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 7"))
    app = create_app(ConsoleSettings(database_url=seeded.url), store=seeded.store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        sign_in(client, seeded.keys["eve"])
        page = client.get("/audit").text

        response = client.post("/audit/verify", data={"csrf_token": csrf_of(page)})

    assert "The chain is broken at event 7" in response.text
    assert "mallory" in response.text
    seeded.store.dispose()


def test_signing_out_ends_the_session(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, seeded.keys["ops"])
    page = app_client.get("/runs").text

    app_client.post("/signout", data={"csrf_token": csrf_of(page)})

    assert app_client.get("/runs", follow_redirects=False).status_code == 303
    assert events(seeded, action="console.signout", actor="ops")


def test_stored_text_is_escaped_not_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    seeded = seed_store(tmp_path)
    from server.store import audit

    with seeded.store.session() as session:
        audit.append(session, actor="<img src=x onerror=alert(1)>", action="x'><script>alert(2)</script>",
                     details={"note": "</code><script>alert(3)</script>"})
    app = create_app(ConsoleSettings(database_url=seeded.url), store=seeded.store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        sign_in(client, seeded.keys["eve"])
        page = client.get("/audit").text

    assert "<img src=x" not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    seeded.store.dispose()


def test_the_console_does_not_import_the_inference_service() -> None:
    import subprocess
    import sys

    code = ("import sys, server.console.app, server.console.routers.drift; "
            "sys.exit(any(m == 'deploy' or m.startswith('deploy.') for m in sys.modules))")

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
