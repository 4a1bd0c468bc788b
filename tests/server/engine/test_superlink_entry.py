"""The coordinator's SuperLink entry point: Flower's own app, only the Fleet API on the Fleet
port; and the seam into Flower it rests on, which must fail loudly if Flower moves."""

from __future__ import annotations

import importlib
import inspect
import re
import time

import anyio
import flwr
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from privacy.pki import generate_node_key
from privacy.redaction import install_log_redaction
from server.engine.superlink import RefusalWatcher
from server.engine.superlink_entry import FleetOnlyMiddleware, split_argv
from server.store import audit
from server.store.engine import open_store

FLEET, OPERATOR = 9093, 9091


def test_flower_still_builds_and_serves_its_superlink_the_way_the_entry_point_copies():
    from flwr.superlink.main import create_app

    # (the package re-exports a function of the same name: import the module itself)
    flower_superlink = importlib.import_module("flwr.superlink.cli.flower_superlink")

    assert flwr.__version__ == "1.41.0", "re-check superlink_entry against this Flower"
    assert (
        list(inspect.signature(flower_superlink._parse_superlink_lifespan_config).parameters) == []
    )
    assert list(inspect.signature(create_app).parameters) == ["config", "superlink_lifespan_class"]
    serve = inspect.getsource(flower_superlink._run_superlink_http_api)
    assert "create_app(lifespan_config, SuperLinkLifespan)" in serve
    assert re.search(r"uvicorn\.run\(\s*app=fastapi_app,", serve)  # no wrapping of its own
    for name in ("host", "port", "ssl_keyfile", "ssl_certfile"):
        assert f"lifespan_config.{name}" in serve
    runtime = inspect.getsource(flower_superlink.SuperLinkLifespan._start_superexec_if_needed)
    assert "config.host" in runtime and "config.port" in runtime  # SuperExec: operator address


def test_a_supernode_uses_only_fleet_paths_and_the_fleet_router_serves_them():
    from flwr.superlink.routers.fleet.router import router
    from flwr.supernode import fleet_http_client

    paths = re.findall(r'path="([^"]+)"', inspect.getsource(fleet_http_client))

    assert paths and all(path.startswith("/v1/fleet/") for path in paths)
    assert router.prefix == "/v1/fleet"


def _app() -> Starlette:
    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    paths = ["/v1/fleet/pull-messages", "/v1/control/list-runs", "/v1/runtime/create-task",
             "/health", "/docs"]  # fmt: skip
    return Starlette(routes=[Route(p, ok, methods=["GET", "POST"]) for p in paths])


@pytest.mark.parametrize(
    ("port", "path", "status"),
    [
        (FLEET, "/v1/fleet/pull-messages", 200),
        (FLEET, "/health", 200),
        (FLEET, "/v1/control/list-runs", 403),
        (FLEET, "/v1/runtime/create-task", 403),
        (FLEET, "/docs", 403),
        (FLEET, "/v1/fleet/../control/list-runs", 403),  # not normalised into the Fleet prefix
        (OPERATOR, "/v1/control/list-runs", 200),
        (OPERATOR, "/v1/runtime/create-task", 200),
    ],
)
def test_only_fleet_paths_pass_on_the_fleet_port(port, path, status, caplog):
    guarded = FleetOnlyMiddleware(_app(), fleet_port=FLEET)
    transport = httpx.ASGITransport(app=guarded, client=("203.0.113.7", 4242))

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.post(f"http://coordinator:{port}{path}")

    reply = anyio.run(post)

    assert reply.status_code == status
    refused = [r.getMessage() for r in caplog.records if "fedwarden-refused" in r.getMessage()]
    assert len(refused) == (status == 403)
    if refused:
        assert "peer=203.0.113.7:4242 method=POST" in refused[0]


def test_our_flags_are_taken_off_before_flower_reads_the_rest():
    entry = split_argv(["--fleet-host", "0.0.0.0", "--host", "127.0.0.1",
                        "--fleet-port", "9093", "--port", "9091"])  # fmt: skip
    woken = split_argv(["--fleet-host", "::", "--fleet-port", "1", "--wake-fifo", "/s/w.fifo"])

    assert (entry.fleet_host, entry.fleet_port, entry.wake_fifo) == ("0.0.0.0", 9093, None)
    assert entry.flower_argv == ["--host", "127.0.0.1", "--port", "9091"]
    assert (woken.wake_fifo, woken.flower_argv) == ("/s/w.fifo", [])


def test_refusals_on_the_fleet_port_are_audited_and_a_flood_stays_bounded(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    line = "WARNING server.engine.superlink_entry: fedwarden-refused peer=198.51.100.2:5000 " \
        "method=POST path=/v1/control/start-run\n"  # fmt: skip
    try:
        watcher = RefusalWatcher(store, per_interval=3)
        for _ in range(50):
            watcher(line)
        watcher.flush()
        with store.session() as session:
            events = [e for e in audit.tail(session, limit=100)
                      if e["action"] == "superlink.refused"]  # fmt: skip
    finally:
        store.dispose()

    assert watcher.off_fleet == 50
    assert len(events) == 4  # three one by one, then one row counting the other 47
    single = [e for e in events if "path" in e["details"]]
    assert {e["details"]["path"] for e in single} == {"/v1/control/start-run"}
    assert {e["details"]["peer"] for e in single} == {"198.51.100.2:5000"}
    assert all(e["outcome"] == "denied" for e in events)
    assert [e["details"]["suppressed"] for e in events if "suppressed" in e["details"]] == [47]


def test_the_task_token_cleanup_runs_at_most_once_a_second_per_state(monkeypatch):
    import importlib
    import inspect

    from server.engine import superlink_entry

    module = importlib.import_module(superlink_entry.CLEANUP_MODULE)
    owner = getattr(module, superlink_entry.CLEANUP_CLASS)
    # pinned: Flower 1.41 cleans up before every run-status read
    linkstate = importlib.import_module("flwr.server.superlink.linkstate.sql_linkstate")
    assert "self._cleanup_expired_task_tokens()" in inspect.getsource(
        linkstate.SqlLinkState.get_run_status
    )
    calls: list[object] = []
    def cleanup(self: object) -> None:
        calls.append(self)

    monkeypatch.setattr(owner, superlink_entry.CLEANUP_METHOD, cleanup)
    superlink_entry.throttle_task_token_cleanup(interval_s=0.3)
    superlink_entry.throttle_task_token_cleanup(interval_s=0.3)  # once only
    class State:  # stands in for Flower's state object (the wrapper only timestamps it)
        pass

    first, second = State(), State()

    for _ in range(5):
        getattr(owner, superlink_entry.CLEANUP_METHOD)(first)
    getattr(owner, superlink_entry.CLEANUP_METHOD)(second)
    time.sleep(0.35)
    getattr(owner, superlink_entry.CLEANUP_METHOD)(first)

    assert calls == [first, second, first]




def _refused_by_flower(private_path, caplog, *, signed: bool = False) -> str:
    """Flower's own node authentication, wrapped, refusing a request that claims the node
    key at ``private_path``: signed with it (for another key's activation) or with a
    signature that does not verify. The line logged."""
    import base64
    import datetime

    from cryptography.hazmat.primitives import serialization
    from fastapi import HTTPException
    from flwr.common.constant import TIMESTAMP_HEADER
    from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
    from starlette.requests import Request

    from server.engine import superlink_entry

    module = importlib.import_module(superlink_entry.NODE_AUTH_MODULE)
    caplog.clear()
    private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    from flwr.proto.fleet_pb2 import ActivateNodeRequest
    from flwr.supercore.primitives.asymmetric import sign_message

    stamp = datetime.datetime.now(datetime.UTC).isoformat()
    signature = sign_message(private, stamp.encode()) if signed else b"0\x06\x02\x01\x01\x02\x01\x01"
    headers = {
        FLEET_HTTP_PUBLIC_KEY_HEADER: base64.b64encode(pem).decode(),
        FLEET_HTTP_SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: stamp,
    }
    request = Request({
        "type": "http", "method": "POST", "path": "/v1/fleet/pull-messages", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("198.51.100.7", 40712), "server": ("127.0.0.1", 9093),
        "state": {"protobuf_request": ActivateNodeRequest(public_key=b"another node's key")},
    })  # fmt: skip
    with (
        caplog.at_level("WARNING", logger="server.engine.superlink_entry"),
        pytest.raises(HTTPException) as refused,
    ):
        module.authenticate_node(request)
    assert refused.value.status_code == 401
    [logged] = [m for m in caplog.messages if superlink_entry.NODE_REFUSAL_MARK in m]
    return logged


def test_a_node_refused_mid_session_is_logged_with_its_key(monkeypatch, tmp_path, caplog):
    from server.engine import superlink_entry

    module = importlib.import_module(superlink_entry.NODE_AUTH_MODULE)
    # pinned: Flower 1.41's middleware calls the module's function by name, per request
    assert "authenticate_node, request" in inspect.getsource(module.NodeAuthMiddleware.dispatch)
    monkeypatch.setattr(module, "authenticate_node", module.authenticate_node)  # undone after
    superlink_entry.audit_node_auth_refusals()
    superlink_entry.audit_node_auth_refusals()  # wraps once only
    install_log_redaction()  # as in every fedwarden process: a public key is not redacted

    private_path, _ = generate_node_key(out_dir=tmp_path, institution="Hungary")

    logged = _refused_by_flower(private_path, caplog)
    signed = _refused_by_flower(private_path, caplog, signed=True)

    assert "peer=198.51.100.7:40712 path=/v1/fleet/pull-messages signer=LS0t" in logged  # PEM
    assert logged.endswith(" verified=no")  # a signature that does not verify
    assert signed.endswith(" verified=yes")


def test_a_node_refused_mid_session_is_audited_by_institution(monkeypatch, tmp_path, caplog):
    from privacy.pki import fingerprint
    from server.engine import superlink_entry
    from server.store.governance import bootstrap_admin, create_institution
    from server.store.nodes import register_node_key, revoke_node_key

    module = importlib.import_module(superlink_entry.NODE_AUTH_MODULE)
    monkeypatch.setattr(module, "authenticate_node", module.authenticate_node)
    superlink_entry.audit_node_auth_refusals()
    private_path, line = generate_node_key(out_dir=tmp_path, institution="Hungary")
    logged = _refused_by_flower(private_path, caplog, signed=True)
    forged = _refused_by_flower(private_path, caplog)  # anyone may claim Hungary's public key
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with store.session() as session:  # Hungary's key, registered then revoked
            admin, _ = bootstrap_admin(session=session)
            create_institution(session=session, actor=admin, name="Hungary")
            register_node_key(session=session, actor=admin, institution="Hungary", public_key=line)
            revoke_node_key(session=session, actor=admin, fingerprint_=fingerprint(line))
        watcher = RefusalWatcher(store, per_interval=2)
        for _ in range(3):  # the third is only counted
            watcher(f"WARNING server.engine.superlink_entry: {logged}\n")
        watcher.flush()
        watcher.per_interval = 10
        watcher(f"WARNING server.engine.superlink_entry: {forged}\n")
        with store.session() as session:
            events = [e for e in audit.tail(session, limit=20) if e["action"] == "node.refused"]
    finally:
        store.dispose()

    assert watcher.refusals == 4
    assert all(e["outcome"] == "denied" for e in events)
    *single, claimed = sorted(
        (e for e in events if "reason" in e["details"]), key=lambda e: e["seq"]
    )
    assert len(single) == 2
    # a key claimed with a signature that does not verify is not charged to its holder
    assert claimed["target"] == "node:unknown" and "institution" not in claimed["details"]
    assert "does not verify" in claimed["details"]["reason"]
    assert fingerprint(line) in claimed["details"]["reason"]
    assert single[0]["target"] == f"node:{fingerprint(line)}"
    assert single[0]["details"]["institution"] == "Hungary"
    assert single[0]["details"]["revoked"] == "yes"
    assert single[0]["details"]["peer"] == "198.51.100.7:40712"
    assert "/v1/fleet/pull-messages" in single[0]["details"]["reason"]


def test_a_reply_pushed_by_a_node_wakes_the_serverapp(tmp_path, monkeypatch):
    from client.contract.polling import WakeChannel
    from server.engine import superlink_entry

    handlers = importlib.import_module(superlink_entry.FLEET_HANDLERS_MODULE)
    handled: list[str] = []
    for name in superlink_entry.WAKING_HANDLERS:  # stand-ins for Flower's, restored after
        monkeypatch.setattr(handlers, name, lambda *, request, state, _n=name: handled.append(_n))
    monkeypatch.setattr(handlers, "pull_messages", handlers.pull_messages)
    superlink = WakeChannel(tmp_path / "replies.fifo")
    serverapp = WakeChannel(tmp_path / "replies.fifo")
    try:
        superlink_entry.wake_on_replies(superlink)
        superlink_entry.wake_on_replies(superlink)  # wraps once only

        assert not serverapp.wait(0)
        handlers.push_messages(request="reply", state=None)
        assert serverapp.wait(0)
        handlers.push_object(request="object", state=None)
        assert serverapp.wait(0)
        assert not serverapp.wait(0)
        assert handled == ["push_messages", "push_object"]
        assert not getattr(handlers.pull_messages, "_fedwarden_wakes", False)  # polls: no wake
    finally:
        superlink.close()
        serverapp.close()
