"""``fedwarden console``: its options, and a clear error before anything is served."""

from __future__ import annotations


def test_help_names_the_port_and_the_sign_in(cli) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("console", "--help")

    assert code == 0
    assert "--port" in out and "API key" in out


def test_a_certificate_without_its_key_is_refused(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("console", "--database-url", f"sqlite:///{tmp_path / 's.db'}",
                    "--ssl-certfile", str(tmp_path / "cert.pem"))

    assert code == 2
    assert "--ssl-keyfile" in out
    assert not (tmp_path / "s.db").exists()


def test_an_unreachable_store_is_one_line_and_an_exit_code(cli) -> None:  # type: ignore[no-untyped-def]
    code, out = cli("console", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none")

    assert code == 8
    assert "error:" in out and "Traceback" not in out
