"""``fedwarden client join``: the SuperNode's command line and why a node could not join."""

from __future__ import annotations

import tomllib

import pytest

from client.history import FileHistory
from client.join import (
    JoinSettings,
    _Diagnosis,
    node_config_text,
    node_history,
    supernode_argv,
    wake_fifo,
    warm_executor_argv,
)
from privacy.accounting import AccountingStep
from privacy.errors import ConfigError


def test_the_node_config_is_what_flower_parses():
    config = {"data-path": "/data/my rows.csv", "budget-epsilon": 2.5, "require-secagg": True}

    text = node_config_text(config)

    assert (
        tomllib.loads(text.replace(" budget", "\nbudget").replace(" require", "\nrequire"))
        == config
    )


def test_the_supernode_uses_tls_the_node_key_and_process_isolation_when_warm(tmp_path):
    settings = JoinSettings(
        coordinator="127.0.0.1:9093",
        ca_certificate=tmp_path / "ca.crt",
        node_key=tmp_path / "node.key",
        node_config={"budget-epsilon": 1.0},
        warm=True,
    )

    argv = supernode_argv(settings, runtime_port=9100)
    wake = wake_fifo(settings)
    warm = warm_executor_argv(runtime_port=9100, parent_pid=7, wake=wake)

    # the SuperNode wakes its executor through one FIFO in the node's state folder
    assert argv[argv.index("--wake") + 1] == warm[warm.index("--wake") + 1] == str(wake)
    assert wake.parent == settings.state_dir.resolve()
    assert argv[argv.index("--root-certificates") + 1].endswith("ca.crt")
    assert argv[argv.index("--auth-supernode-private-key") + 1].endswith("node.key")
    assert argv[argv.index("--isolation") + 1] == "process"
    assert "--insecure" not in argv
    assert warm[1:3] == ["-m", "client.warm_exec"]
    assert "127.0.0.1:9100" in warm


def test_without_warm_flower_starts_a_clientapp_per_message(tmp_path):
    settings = JoinSettings(
        coordinator="h:1", ca_certificate=tmp_path / "ca", node_key=tmp_path / "k"
    )

    assert "--isolation" not in supernode_argv(settings, runtime_port=1)


@pytest.mark.parametrize("coordinator", ["127.0.0.1", ":9093", "host:port"])
def test_a_bad_coordinator_address_or_missing_file_is_refused(tmp_path, coordinator):
    settings = JoinSettings(
        coordinator=coordinator, ca_certificate=tmp_path / "ca", node_key=tmp_path / "k"
    )

    with pytest.raises(ConfigError):
        settings.check()


def test_tls_failures_and_refusals_are_told_apart():
    tls, refused = _Diagnosis(), _Diagnosis()

    tls("ERROR :     SSL/TLS handshake error detected.\n")
    refused("[code: 2004] Failed to activate SuperNode.\n")

    assert (tls.tls_failure, tls.refused) == (True, False)
    assert (refused.tls_failure, refused.refused) == (False, True)


def test_a_supernode_that_stops_itself_is_told_apart_from_one_that_is_running():
    ended, running = _Diagnosis(), _Diagnosis()

    ended("\x1b[92mINFO \x1b[0m:      SuperNode terminated gracefully.\n")
    running("INFO :      SuperExec terminated gracefully.\n")  # the executor, not the node

    assert (ended.ended, running.ended) == (True, False)


def _institution_files(tmp_path, rows, schema):
    data, schema_path = tmp_path / "cleveland.csv", tmp_path / "schema.json"
    rows.to_csv(data, index=False)
    schema_path.write_text(schema.model_dump_json())
    return {"data-path": str(data), "schema-path": str(schema_path), "budget-epsilon": 3.0}


def test_the_default_history_lives_in_the_state_folder_keyed_by_the_data(
    tmp_path, small_rows, small_schema
):
    config = _institution_files(tmp_path, small_rows, small_schema)
    state = tmp_path / "state"

    kept = node_history(config, state_dir=state)
    small_rows.iloc[:-1].to_csv(config["data-path"], index=False)
    changed = node_history(config, state_dir=state)

    assert kept.path.parent == (state / "privacy-history").resolve()
    assert kept.path.name.startswith("cleveland-")
    assert kept.epsilon_spent == 0.0
    assert changed.path != kept.path
    assert changed.path.parent == kept.path.parent


def test_an_explicit_history_file_overrides_the_state_folders(tmp_path, small_rows, small_schema):
    config = _institution_files(tmp_path, small_rows, small_schema)
    own = tmp_path / "mine" / "history.jsonl"
    FileHistory(own).append(AccountingStep(noise_multiplier=1.0, sample_rate=0.1, steps=50))

    kept = node_history(config, state_dir=tmp_path / "state", override=own)

    assert kept.path == own.resolve()
    assert kept.epsilon_spent > 0


def test_join_refuses_a_state_folder_it_cannot_write(tmp_path, cli, small_rows, small_schema):
    config = _institution_files(tmp_path, small_rows, small_schema)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")

    code, output = cli(
        "client", "join", "--coordinator", "127.0.0.1:9", "--ca", str(tmp_path / "ca.crt"),
        "--key", str(tmp_path / "node.key"), "--budget-epsilon", "1",
        "--data", config["data-path"], "--schema", config["schema-path"],
        "--state", str(blocker / "node"),
    )  # fmt: skip

    assert code == 2
    assert "not writable" in output


def test_the_budget_watcher_reports_the_epsilon_after_each_change(tmp_path):
    from client.join import BudgetWatcher

    path = tmp_path / "history.jsonl"
    config = {"budget-epsilon": 5.0, "history-path": str(path)}
    watcher = BudgetWatcher(config, on_change=lambda _: None)

    assert watcher.check() is None  # nothing spent yet
    FileHistory(path).append(AccountingStep(noise_multiplier=1.0, sample_rate=0.1, steps=20))
    first = watcher.check()
    assert watcher.check() is None  # unchanged since
    FileHistory(path).append(AccountingStep(noise_multiplier=1.0, sample_rate=0.1, steps=20))
    second = watcher.check()

    assert first is not None and second is not None
    assert 0 < first.epsilon_spent < second.epsilon_spent
    assert second.budget.epsilon == 5.0


def test_the_supernode_is_started_through_the_fast_poll_seam_with_bounded_retries(tmp_path):
    settings = JoinSettings(
        coordinator="h:1", ca_certificate=tmp_path / "ca", node_key=tmp_path / "k",
        connect_attempts=3, connect_wait_s=9.0,
    )  # fmt: skip

    argv = supernode_argv(settings, runtime_port=1)
    plain = supernode_argv(
        JoinSettings(
            coordinator="h:1", ca_certificate=tmp_path / "ca", node_key=tmp_path / "k",
            fast_poll=False,
        ),
        runtime_port=1,
    )  # fmt: skip

    assert argv[1:3] == ["-m", "client.fast_poll"]
    assert argv[argv.index("--max-retries") + 1] == "3"
    assert argv[argv.index("--max-wait-time") + 1] == "9.0"
    assert plain[0].endswith("flower-supernode")


@pytest.mark.slow
def test_a_node_pointed_at_a_wrong_address_says_so_after_bounded_attempts(tmp_path):
    # A real `client join` (its own SuperNode) against a port nothing listens on.
    import subprocess
    import sys
    import time

    from client.join import free_port

    def fedwarden(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "simulations.cli", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    assert fedwarden("pki", "init", "--out", str(tmp_path / "pki")).returncode == 0
    made = fedwarden(
        "pki", "node", "--institution", "Cleveland", "--out", str(tmp_path / "nodes"),
        "--no-register",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    began = time.monotonic()

    joined = fedwarden(
        "client", "join", "--coordinator", f"127.0.0.1:{free_port()}",
        "--ca", str(tmp_path / "pki" / "ca.crt"), "--key", str(tmp_path / "nodes" / "Cleveland.key"),
        "--dataset", "heart-disease", "--partition-id", "0", "--budget-epsilon", "1",
        "--state", str(tmp_path / "node"), "--no-check-data",
        "--connect-attempts", "2", "--connect-wait", "10",
        timeout=240,
    )  # fmt: skip

    said = " ".join((joined.stdout + joined.stderr).split())
    assert joined.returncode == 11, said[-2000:]
    assert "could not reach the coordinator" in said and "after 2 attempts" in said
    assert time.monotonic() - began < 200  # bounded: not retrying for ever
