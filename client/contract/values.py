"""Typed reads of the values Flower hands over in a run config or a node config.

Flower passes what a TOML file or ``--run-config``/``--node-config`` said: a flag
may arrive as ``true`` or as the text ``"yes"``. Both sides read them here.
"""

from __future__ import annotations

from typing import Any

from privacy.errors import ConfigError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_flag(value: Any, *, name: str) -> bool:
    """``value`` as a boolean; text must be one of true/false, 1/0, yes/no, on/off.

    Raises
    ------
    ConfigError
        Text that says neither (``name`` is the setting's name, for the message).
    """
    if isinstance(value, str):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}", setting=name)
    return bool(value)
