"""Shared fixtures: small schemas and tables generated here, never downloaded."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from client.contract.schema import CategoricalFeature, NumericFeature, TableSchema, TargetSpec

if "FEDWARDEN_AUDIT_KEY_DIR" not in os.environ:  # stores' audit keys, never in the tester's home
    _AUDIT_KEYS = tempfile.mkdtemp(prefix="fedwarden-audit-keys-")
    os.environ["FEDWARDEN_AUDIT_KEY_DIR"] = _AUDIT_KEYS
    atexit.register(shutil.rmtree, _AUDIT_KEYS, ignore_errors=True)


@pytest.fixture
def small_schema() -> TableSchema:
    return TableSchema(
        name="small",
        features=(
            NumericFeature(name="age", range=(0, 120)),
            NumericFeature(name="dose", range=(0, 10), nullable=True, missing_values=(-1,)),
            CategoricalFeature(name="site", categories=("a", "b", "c")),
            CategoricalFeature(name="smoker", categories=("True", "False"), nullable=True),
        ),
        target=TargetSpec(name="outcome", labels=("no", "yes"), mapping={"0": "no", "1": "yes"}),
    )


def make_rows(n: int, *, seed: int = 0) -> pd.DataFrame:
    """Rows that satisfy ``small_schema``; the outcome depends on age and site."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 90, n).round(1)
    site = rng.choice(["a", "b", "c"], n)
    dose = rng.uniform(0, 10, n).round(2)
    dose[rng.random(n) < 0.1] = -1
    smoker = rng.choice([True, False], n).astype(object)
    smoker[rng.random(n) < 0.1] = None
    logit = (age - 55) / 10 + (site == "c") * 1.5 - 0.5
    outcome = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {"age": age, "dose": dose, "site": site, "smoker": smoker, "outcome": outcome}
    )


@pytest.fixture
def small_rows() -> pd.DataFrame:
    return make_rows(300)


@pytest.fixture
def rows_factory():  # type: ignore[no-untyped-def]
    """``make_rows`` for tests that need several tables."""
    return make_rows


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """Run ``fedwarden ARGS...`` in-process: ``(exit code, stdout + stderr)``.

    ``api_key=`` sets ``FEDWARDEN_API_KEY`` for the call; the caller's own
    ``FEDWARDEN_*`` variables never leak in.
    """
    from simulations.cli.app import main

    kept = ("FEDWARDEN_AUDIT_KEY_DIR",)  # the suite's own audit keys, never the tester's home
    for name in [n for n in os.environ if n.startswith("FEDWARDEN_") and n not in kept]:
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, api_key: str | None = None) -> tuple[int, str]:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "argv", ["fedwarden", *args])
            if api_key is not None:
                patch.setenv("FEDWARDEN_API_KEY", api_key)
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run
