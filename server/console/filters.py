"""Jinja filters the console's templates use: times, numbers, short ids."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment


def when(value: datetime | str | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS`` UTC; ``—`` for none."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ").rstrip("Z")[:19]
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def number(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` significant digits; ``—`` for none, ``∞`` for infinity."""
    if value is None or value == "":
        return "—"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isinf(x):
        return "∞"
    if math.isnan(x):
        return "—"
    return f"{x:.{digits}g}"


def short(value: str | None, length: int = 8) -> str:
    """The first ``length`` characters of an id or hash."""
    return "—" if not value else value[:length]


def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A run's strategy, planned rounds, DP and SecAgg+ settings from its stored config.

    Reads the coordinator's layout (``strategy``, ``secagg``, ``plan`` with ``fw.*``
    keys) and falls back to Flower's ``run_config`` names; missing values are ``None``.
    """
    found = config.get("plan")
    plan: dict[str, Any] = found if isinstance(found, dict) else {}

    def pick(*names: str) -> Any:
        for name in names:
            for source in (plan, config):
                if name in source:
                    return source[name]
        return None

    def positive(value: Any) -> Any:
        return None if isinstance(value, int | float) and value < 0 else value

    dp = pick("fw.dp", "dp")
    return {
        "strategy": pick("strategy"),
        "rounds": pick("fw.num-rounds", "num-server-rounds"),
        "dp": True if dp is None else bool(dp),
        "noise_multiplier": positive(pick("fw.noise-multiplier", "noise-multiplier")),
        "max_grad_norm": pick("fw.max-grad-norm", "max-grad-norm"),
        "target_epsilon": positive(pick("fw.target-epsilon", "target-epsilon")),
        "secagg": bool(pick("secagg", "secure")),
    }


def as_json(value: Any) -> str:
    """Compact JSON for display (escaped by the template like any text, unlike ``tojson``)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def install(env: Environment) -> None:
    """Register the filters on a Jinja environment."""
    env.filters["when"] = when
    env.filters["num"] = number
    env.filters["short"] = short
    env.filters["run_settings"] = run_settings
    env.filters["as_json"] = as_json
