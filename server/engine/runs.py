"""Federation runs on the coordinator's SuperLink, through ``flwr run`` / ``ls`` / ``stop``.

A run's config is a TOML file of the keys ``pyproject.toml`` declares under
``[tool.flwr.app.config]``; an unknown key is an error before anything is
sent. Each run gets a fedwarden run id (the store's), passed to the ServerApp
as ``run-id``; the config it was started with and the Flower runs that carried
it (the first, then one per resume) are kept in ``<state>/runs/<id>.json`` and
``<id>.toml``. ``resume`` submits the same config again with ``resume = true``:
the ServerApp carries on from the run's last checkpoint in the store.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.contract.processes import child_env
from privacy.errors import ConfigError
from server.engine.flwr_cli import (
    CONNECTION,
    flwr_argv,
    flwr_home,
    run_flwr,
    run_flwr_json,
)
from server.errors import FlowerCliError, NotFoundError
from server.store.runs import MIN_RUN_PREFIX
from server.store_url import store_url_path

logger = logging.getLogger(__name__)

_STARTED = re.compile(r"Successfully started run (\d+)")


def default_app_dir() -> Path:
    """The fedwarden project (its ``pyproject.toml`` declares the Flower app)."""
    return Path(__file__).resolve().parents[2]


def declared_run_config(app_dir: Path) -> dict[str, Any]:
    """The run config keys and defaults the app declares."""
    path = app_dir / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text())
        declared: dict[str, Any] = data["tool"]["flwr"]["app"]["config"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} declares no Flower app config: {exc}") from None
    return declared


def load_run_config(path: Path, *, app_dir: Path) -> dict[str, Any]:
    """The run config in the TOML file ``path``, checked against the declared keys.

    A ``[run]`` or ``[config]`` table is read as the config too, so the file may
    be flat or keep its keys under one table.
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the run config {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the run config {path} is not TOML: {exc}") from None
    for table in ("run", "config"):
        if isinstance(data.get(table), dict) and len(data) == 1:
            data = data[table]
    return check_run_config(data, app_dir=app_dir)


def check_run_config(config: Mapping[str, Any], *, app_dir: Path) -> dict[str, Any]:
    """``config`` if every key is declared and every value a TOML scalar; else ``ConfigError``."""
    declared = declared_run_config(app_dir)
    unknown = sorted(set(config) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown run config key(s): {', '.join(unknown)}; the app declares: "
            f"{', '.join(sorted(declared))}",
            unknown=unknown,
        )
    for key, value in config.items():
        if not isinstance(value, bool | int | float | str):
            raise ConfigError(f"run config {key!r} must be a string, number or boolean")
    # What the ServerApp will make of it, checked here: a bad combination (fedmedian with
    # SecAgg+, ...) is refused before anything reaches the SuperLink.
    from server.config import federation_settings_from_run_config

    federation_settings_from_run_config({**declared, **config})
    return dict(config)


@dataclass(kw_only=True)
class RunRecord:
    """What the coordinator's state keeps of a fedwarden run."""

    run_id: str
    config: dict[str, Any]
    flower_runs: list[int] = field(default_factory=list)

    @staticmethod
    def path(state_dir: Path, run_id: str) -> Path:
        return state_dir / "runs" / f"{run_id}.json"

    def save(self, state_dir: Path) -> None:
        path = self.path(state_dir, self.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=2, sort_keys=True))

    @classmethod
    def load(cls, state_dir: Path, run: str) -> RunRecord:
        """The run with fedwarden id ``run`` (or the one whose id starts with it), or the one
        a Flower run id ``run`` carried."""
        path = cls.path(state_dir, run)
        if _RUN_ID.fullmatch(run) and path.exists():
            return cls(**json.loads(path.read_text()))
        records = list_records(state_dir)
        for record in records:
            if run.isdigit() and int(run) in record.flower_runs:
                return record
        if len(run) >= MIN_RUN_PREFIX:
            found = [r for r in records if r.run_id.startswith(run)]
            if len(found) > 1:
                raise ConfigError(f"run id prefix {run!r} names more than one run: give more of it")
            if found:
                return found[0]
        raise NotFoundError(f"no run {run!r} was started from {state_dir}", run=run)


def list_records(state_dir: Path) -> list[RunRecord]:
    folder = state_dir / "runs"
    paths = (
        sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.exists() else []
    )
    return [RunRecord(**json.loads(p.read_text())) for p in paths]


def submit(
    record: RunRecord,
    *,
    state_dir: Path,
    app_dir: Path,
    resume: bool,
    stream: bool,
    echo: Callable[[str], None],
) -> int:
    """Submit ``record``'s config as a new Flower run; stream its log if asked.

    Returns the exit code of ``flwr run`` (0 when the run was accepted and, when
    streaming, its log ended).
    """
    config = {**record.config, "run-id": record.run_id, "resume": resume}
    url_file = store_url_path(state_dir)
    if not config.get("database-url") and url_file.exists():
        config["database-url-file"] = str(url_file)  # the store's URL, never in an environment
    config_path = state_dir / "runs" / f"{record.run_id}.toml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(_toml(config))
    argv = flwr_argv("run", str(app_dir), CONNECTION, "--run-config", str(config_path))
    if stream:
        argv.append("--stream")
    if not (flwr_home(state_dir) / "config.toml").exists():
        raise FlowerCliError(f"no coordinator state in {state_dir}")
    child = subprocess.Popen(
        argv,
        env=child_env(FLWR_HOME=str(flwr_home(state_dir))),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert child.stdout is not None
    for line in child.stdout:
        found = _STARTED.search(line)
        if found is not None:
            record.flower_runs.append(int(found[1]))
            record.save(state_dir)
            echo(f"fedwarden run {record.run_id} (Flower run {found[1]})")
        echo(line.rstrip("\n"))
    code = child.wait()
    if not record.flower_runs:
        raise FlowerCliError(f"the SuperLink did not accept the run (flwr run exited {code})")
    return code


def flower_status(state_dir: Path, flower_run: int) -> dict[str, Any]:
    """``flwr ls --run-id`` for one Flower run."""
    reply = run_flwr_json("ls", "--run-id", str(flower_run), state_dir=state_dir)
    runs: list[dict[str, Any]] = reply.get("runs", [])
    return runs[0] if runs else {}


def flower_runs(state_dir: Path) -> list[dict[str, Any]]:
    """Every Flower run the SuperLink knows."""
    runs: list[dict[str, Any]] = run_flwr_json("ls", state_dir=state_dir).get("runs", [])
    return runs


def stop(state_dir: Path, flower_run: int) -> str:
    """``flwr stop``; its output."""
    done = run_flwr("stop", str(flower_run), CONNECTION, state_dir=state_dir)
    if done.returncode != 0:
        raise FlowerCliError(
            f"`flwr stop {flower_run}` failed: {(done.stdout + done.stderr).strip()[-500:]}"
        )
    return done.stdout.strip()


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_record(config: Mapping[str, Any], *, state_dir: Path) -> RunRecord:
    """A record for a fresh run; ``run-id`` in the config names it, else a new UUID.

    A given id must be a plain name (it names files in ``state_dir``) and a new one:
    starting it again would lose the record of its Flower runs.
    """
    run_id = str(config.get("run-id", "") or uuid.uuid4())
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError(f"run-id {run_id!r} must be letters, digits, '.', '_' or '-'")
    if RunRecord.path(state_dir, run_id).exists():
        raise ConfigError(f"run {run_id} exists; continue it with `fedwarden run resume {run_id}`")
    if config.get("resume"):
        raise ConfigError("`run start` starts a run; resume one with `fedwarden run resume RUN`")
    return RunRecord(run_id=run_id, config={k: v for k, v in config.items() if k != "run-id"})


def _toml(config: Mapping[str, Any]) -> str:
    lines = []
    for key, value in sorted(config.items()):
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
