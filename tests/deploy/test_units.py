"""The systemd units in deploy/units: they parse, and they run commands that exist."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "units"
UNIT_FILES = sorted(UNITS.glob("*.service"))
INSTALLED = "/opt/fedwarden/venv/bin/fedwarden"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
}


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path)
    return parser


def exec_start(path: Path) -> list[str]:
    return shlex.split(read_unit(path)["Service"]["ExecStart"])


def fedwarden_command(words: list[str]) -> tuple[click.Command | None, list[str]]:
    """The click command the words name (None if a subcommand is missing) and its path."""
    from simulations.cli.app import app

    command: click.Command = typer.main.get_command(app)
    path: list[str] = []
    for word in words:
        if word.startswith("-") or not isinstance(command, click.Group):
            break
        child = command.commands.get(word)
        if child is None:
            return None, [*path, word]
        command, path = child, [*path, word]
    return command, path


def test_there_is_a_unit_for_the_coordinator_a_node_and_the_service() -> None:
    names = {path.name for path in UNIT_FILES}

    assert {
        "fedwarden-coordinator.service",
        "fedwarden-node.service",
        "fedwarden-serve.service",
    } <= names
    assert (UNITS / "README.md").is_file()


@pytest.mark.parametrize("unit", UNIT_FILES, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the configparser checks still run")
    fedwarden = Path(sys.executable).with_name("fedwarden")
    local = tmp_path / unit.name
    local.write_text(unit.read_text().replace(INSTALLED, str(fedwarden)))

    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""  # unknown keys and bad values are only warnings


@pytest.mark.parametrize("unit", UNIT_FILES, ids=lambda p: p.name)
def test_unit_is_hardened_and_runs_as_its_own_user(unit: Path) -> None:
    service = read_unit(unit)["Service"]

    assert service["User"].startswith("fedwarden")
    assert {key: service.get(key) for key in HARDENING} == HARDENING
    assert service["ReadWritePaths"].startswith("/var/lib/fedwarden")
    assert service["CapabilityBoundingSet"] == ""


@pytest.mark.parametrize("unit", UNIT_FILES, ids=lambda p: p.name)
def test_exec_start_names_a_fedwarden_command_and_its_options(unit: Path) -> None:
    argv = exec_start(unit)
    command, path = fedwarden_command(argv[1:])
    if command is None:
        pytest.skip(f"`fedwarden {' '.join(path)}` does not exist (yet) in this checkout")
    accepted = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}

    used = {word for word in argv[1 + len(path) :] if word.startswith("--")}

    assert argv[0] == INSTALLED
    assert path, "ExecStart must name a fedwarden subcommand"
    assert used <= accepted, f"unknown options {sorted(used - accepted)} for {path}"


@pytest.mark.parametrize("unit", UNIT_FILES, ids=lambda p: p.name)
def test_example_environment_file_sets_every_variable_the_unit_uses(unit: Path) -> None:
    service = read_unit(unit)["Service"]
    env_file = Path(service["EnvironmentFile"].lstrip("-"))
    example = UNITS / f"{env_file.name}.example"
    defined = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }

    used = set(re.findall(r"\$\{(\w+)\}", service["ExecStart"]))

    assert env_file.parent == Path("/etc/fedwarden")
    assert used <= defined, f"{example.name} lacks {sorted(used - defined)}"
