"""What a node and the coordinator say to each other: task names, message keys, the census.

One vocabulary, imported by both sides (and by nothing heavier than it). Every
instruction the coordinator sends carries ``TASK_KEY``; the keys below name the
other entries of Flower's config records. The training plan's own keys are in
``client.contract.plan``, a round's report's in ``client.contract.report``; what
each message a node sends may contain, and how it is protected, is declared in
``privacy.releases``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privacy.errors import ConfigError

# --- tasks (the value of TASK_KEY) -------------------------------------------------
TASK_KEY = "fw.task"
TASK_INIT = "init"
"""Build the seeded initial model (``get_parameters``)."""
TASK_SUMMARY = "summary"
"""Send the per-row averages the preprocessing is fitted from (``fit``, round 0)."""
TASK_TRAIN = "train"
"""Train one round with DP-SGD and send the clipped delta (``fit``)."""
TASK_EVALUATE = "evaluate"
"""Evaluate the global model on the held-out rows (``evaluate``)."""
TASK_PROFILE = "profile"
"""Send the reference profile of the training rows under the final model (``fit``)."""

# --- instruction keys ----------------------------------------------------------------
ROUND_KEY = "fw.round"
PREPROCESSING_KEY = "fw.preprocessing"
PROFILE_NOISE_KEY = "fw.profile-noise-multiplier"
PROXIMAL_MU_KEY = "proximal_mu"
"""The key Flower's FedProx puts in the fit config."""

# --- reply keys ----------------------------------------------------------------------
INSTITUTION_KEY = "fw.institution"
ACCURACY_KEY = "fw.accuracy"


_CENSUS_KEYS = {
    "institution": "fw.institution",
    "num_train": "fw.num-train",
    "num_test": "fw.num-test",
    "schema_json": "fw.schema",
    "schema_fingerprint": "fw.schema-fingerprint",
    "budget_epsilon": "fw.budget-epsilon",
    "budget_delta": "fw.budget-delta",
    "require_secagg": "fw.require-secagg",
    "device": "fw.device",
}
"""The census reply's fields and their keys on the wire."""


@dataclass(frozen=True, kw_only=True)
class CensusReply:
    """What a node says when the coordinator asks who it is (``get_properties``).

    Row counts travel in the clear in every Flower reply anyway; the schema is
    the consortium's data dictionary, not data.
    """

    institution: str
    num_train: int
    num_test: int
    schema_json: str
    schema_fingerprint: str
    budget_epsilon: float
    budget_delta: float
    require_secagg: bool
    device: str


    def to_properties(self) -> dict[str, Any]:
        """Flat ``fw.*`` properties for Flower's ``GetPropertiesRes``."""
        return {key: getattr(self, name) for name, key in _CENSUS_KEYS.items()}

    @classmethod
    def from_properties(cls, properties: dict[str, Any]) -> CensusReply:
        """Parse a census reply; a missing or malformed key raises ``ConfigError``."""
        try:
            values = {name: properties[key] for name, key in _CENSUS_KEYS.items()}
            return cls(
                institution=str(values["institution"]),
                num_train=int(values["num_train"]),
                num_test=int(values["num_test"]),
                schema_json=str(values["schema_json"]),
                schema_fingerprint=str(values["schema_fingerprint"]),
                budget_epsilon=float(values["budget_epsilon"]),
                budget_delta=float(values["budget_delta"]),
                require_secagg=bool(values["require_secagg"]),
                device=str(values["device"]),
            )
        except KeyError as exc:
            raise ConfigError(f"census reply lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"census reply is malformed: {exc}") from exc
