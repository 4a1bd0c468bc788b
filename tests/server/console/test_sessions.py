"""Console sessions: kept by hash, expiring, ended on sign-out, bounded in number."""

from __future__ import annotations

from server.console.sessions import SessionStore, digest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lives_until_it_expires() -> None:
    clock = Clock()
    sessions = SessionStore(ttl_s=60, max_sessions=10, clock=clock)
    token = sessions.create(principal_id=1, principal="ops", key_prefix="abc")

    clock.now += 59
    alive = sessions.get(token)
    clock.now += 2
    expired = sessions.get(token)

    assert alive is not None and alive.principal == "ops" and alive.csrf
    assert expired is None


def test_only_the_token_hash_is_kept() -> None:
    sessions = SessionStore(ttl_s=60, max_sessions=10)
    token = sessions.create(principal_id=1, principal="ops", key_prefix="abc")

    assert token not in sessions._sessions and digest(token) in sessions._sessions
    assert sessions.get("not-a-token") is None and sessions.get(None) is None


def test_signing_out_ends_it_and_the_oldest_go_first() -> None:
    sessions = SessionStore(ttl_s=60, max_sessions=2)
    first = sessions.create(principal_id=1, principal="a", key_prefix="p1")
    second = sessions.create(principal_id=2, principal="b", key_prefix="p2")
    third = sessions.create(principal_id=3, principal="c", key_prefix="p3")

    assert sessions.get(first) is None and sessions.get(third) is not None
    assert sessions.end(second) is not None and sessions.get(second) is None
