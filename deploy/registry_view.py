"""Model versions side by side, as ``fedwarden models compare`` prints them.

Every row is one fact read from a version's registry record and lineage: its
stage, the run and round it came from, the federated evaluation after that
round (pooled accuracy and loss, accuracy per institution), the largest ε an
institution spent on it, and the INT8 decision. A version registered before its
lineage carried an evaluation shows ``–``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from client.contract.errors import DataError
from server.store.models import ModelVersion

MISSING = "–"


@dataclass(frozen=True)
class Comparison:
    columns: list[dict[str, Any]]
    """Per version: ``version``, ``stage``, ``evaluation`` (or ``None``)."""
    rows: list[tuple[str, list[str]]]


def comparison(found: Sequence[ModelVersion], *, versions: Sequence[int] | None) -> Comparison:
    """The chosen ``versions`` (default: all of ``found``) as rows of facts, one cell each."""
    by_number = {v.version: v for v in found}
    chosen = list(versions) if versions else sorted(by_number)
    missing = [n for n in chosen if n not in by_number]
    if missing:
        raise DataError(f"no such version: {', '.join(map(str, missing))}", versions=missing)
    picked = [by_number[n] for n in chosen]
    evaluations = [v.lineage.get("evaluation") or None for v in picked]
    institutions = sorted(
        {i for e in evaluations if e for i in (e.get("accuracy_by_institution") or {})}
    )
    rows: list[tuple[str, list[str]]] = [
        ("stage", [v.stage for v in picked]),
        ("run", [(v.run_id or MISSING)[:8] for v in picked]),
        ("round", [str(v.lineage.get("round", MISSING)) for v in picked]),
        ("accuracy (pooled)", [_number(e, "accuracy") for e in evaluations]),
        ("loss (pooled)", [_number(e, "loss") for e in evaluations]),
    ]
    for institution in institutions:
        rows.append(
            (
                f"accuracy at {institution}",
                [
                    _format((e.get("accuracy_by_institution") or {}).get(institution))
                    if e
                    else MISSING
                    for e in evaluations
                ],
            )
        )
    rows.append(("largest ε spent", [_largest_epsilon(v.lineage) for v in picked]))
    rows.append(("INT8", [_quantization(v.lineage) for v in picked]))
    rows.append(("sha256", [v.artifact_sha256[:12] for v in picked]))
    columns = [
        {"version": v.version, "stage": v.stage, "evaluation": e}
        for v, e in zip(picked, evaluations, strict=True)
    ]
    return Comparison(columns=columns, rows=rows)


def _number(evaluation: dict[str, Any] | None, key: str) -> str:
    return MISSING if evaluation is None else _format(evaluation.get(key))


def _format(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.4f}"


def _largest_epsilon(lineage: dict[str, Any]) -> str:
    spent = [float(e) for e in (lineage.get("epsilon") or {}).values() if e is not None]
    return f"{max(spent):.3f}" if spent else MISSING


def _quantization(lineage: dict[str, Any]) -> str:
    q = lineage.get("quantization")
    if not q:
        return "fp32"
    return f"{q.get('chosen')} ({q.get('speedup_batch_64', 0):.2f}x)"
