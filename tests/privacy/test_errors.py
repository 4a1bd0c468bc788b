"""The one exit-code table: every fedwarden error's code is in it, and a code means one thing."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import client
import deploy
import privacy
import server
import simulations
from privacy.errors import EXIT_CODES, FedwardenError

_SKIP = ("simulations.cli", "deploy.api", "server.store.migrations")


def _import_everything() -> None:
    """Import every library module, so every error class is defined."""
    for package in (privacy, client, server, deploy, simulations):
        for module in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if not module.name.startswith(_SKIP):
                importlib.import_module(module.name)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def test_every_error_is_defined_in_an_errors_module_with_a_code_from_the_table():
    _import_everything()
    errors = [FedwardenError, *_subclasses(FedwardenError)]

    misplaced = [e.__qualname__ for e in errors if not e.__module__.endswith("errors")]
    unknown = [e.__qualname__ for e in errors if e.exit_code not in EXIT_CODES]

    assert len(errors) >= 20
    assert misplaced == []
    assert unknown == []


@pytest.mark.parametrize(
    ("module", "name", "code"),
    [
        ("privacy.errors", "ConfigError", 2),
        ("privacy.errors", "BudgetExceededError", 3),
        ("client.contract.errors", "SchemaError", 4),
        ("server.errors", "FederationError", 5),
        ("server.errors", "AuthenticationError", 6),
        ("server.errors", "PermissionDeniedError", 7),
        ("server.errors", "NotFoundError", 8),
        ("server.errors", "AuditChainError", 9),
        ("deploy.errors", "ExportError", 10),
        ("client.errors", "JoinError", 11),
        ("server.errors", "FlowerCliError", 12),
    ],
)
def test_each_branch_has_its_own_code(module, name, code):
    assert getattr(importlib.import_module(module), name).exit_code == code


def test_no_two_branches_share_a_code():
    _import_everything()
    roots: dict[int, set[type]] = {}
    for error in _subclasses(FedwardenError):
        parent = next(b for b in error.__mro__[1:] if issubclass(b, FedwardenError))
        if error.exit_code != parent.exit_code:  # a branch that introduces its own code
            roots.setdefault(error.exit_code, set()).add(error)

    shared = {code: sorted(e.__qualname__ for e in errors) for code, errors in roots.items() if len(errors) > 1}
    assert shared == {}
