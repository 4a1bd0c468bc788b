"""The Shamir seam into Flower's SecAgg+: ``privacy.shamir`` where Flower splits and combines.

Flower 1.41's SecAgg+ mod (on the node) and workflow (on the coordinator) call
``create_shares`` and ``combine_shares`` from
``flwr.common.secure_aggregation.crypto.shamir``, each through the name its
module imported. ``install()`` rebinds those two names to ``privacy.shamir``'s
functions (the same shares, computed faster; see that module), after checking
that both modules still import them, and raises ``FlowerSeamError`` otherwise
(``tests/privacy/test_shamir.py``). Everything else is Flower's.
"""

from __future__ import annotations

import importlib

from client.contract.errors import FlowerSeamError
from privacy import shamir

SEAMS = (
    ("flwr.client.mod.secure_aggregation.secaggplus_mod", "create_shares"),
    ("flwr.server.workflow.secure_aggregation.secaggplus_workflow", "combine_shares"),
)
"""Where Flower 1.41 calls its Shamir functions, by the name each module imported."""


def install() -> None:
    """Use ``privacy.shamir`` wherever Flower's SecAgg+ splits or combines (idempotent).

    Raises ``FlowerSeamError`` where a pinned module no longer imports the function it replaces.
    """
    replacements = {"create_shares": create_shares, "combine_shares": shamir.combine}
    for module_name, name in SEAMS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise FlowerSeamError(f"Flower has no {module_name}: {exc}") from exc
        current = getattr(module, name, None)
        if current is None or not callable(current):
            raise FlowerSeamError(
                f"{module_name} no longer imports {name}: the Shamir seam was pinned to Flower 1.41"
            )
        setattr(module, name, replacements[name])


def create_shares(secret: bytes, threshold: int, num: int) -> list[bytes]:
    """``privacy.shamir.split`` under Flower's signature."""
    return shamir.split(secret, threshold, num)
