"""The release manifest: every kind of message a node sends, and how each part is protected.

Nothing leaves a node that is not declared here. Each ``Release`` names one kind
of reply (the census, an update, a summary, ...), the Flower message type and
task it answers, and for each part of the reply its protection:

- ``DP``: Gaussian-noised on the node from a secure source and accounted in the
  institution's history (its ε composes every such release);
- ``SECURE_SUM``: exact, but only ever unmasked as a sum over at least k
  institutions by SecAgg+ (the node refuses to send it in the clear);
- ``PUBLIC``: public by declaration (names, the schema, the budget, privacy
  numbers, post-processing of a DP release), listed key by key;
- ``BY_CONSENT``: exact, sent only where the node's operator allows exact
  releases in its own policy.

``check_reply`` is what the node's last mod (``client.mods.release_manifest_mod``)
runs on every reply before it leaves: an undeclared key, or arrays or a weight
where the release declares none, raise ``UndeclaredReleaseError``. The keys are
strings here (``privacy`` is the lowest layer); a test holds them to the
contract's own (``client.contract.wire``, ``client.contract.report``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from privacy.errors import UndeclaredReleaseError


class Protection(StrEnum):
    """How a part of a node's reply is protected."""

    DP = "dp-noised-and-accounted"
    SECURE_SUM = "secure-sum"
    PUBLIC = "public-by-declaration"
    BY_CONSENT = "exact-by-the-node's-consent"


# Flower message types (``flwr.common.constant.MessageType`` / ``MessageTypeLegacy``).
GET_PROPERTIES = "get_properties"
GET_PARAMETERS = "get_parameters"
TRAIN = "train"
EVALUATE = "evaluate"

_REPORT_FIELDS: dict[str, Protection] = {
    "fw.institution": Protection.PUBLIC,
    "fw.round": Protection.PUBLIC,
    "fw.refused": Protection.PUBLIC,
    "fw.reason": Protection.PUBLIC,
    "fw.num_examples": Protection.DP,  # the published (noisy) row count
    "fw.train_loss": Protection.PUBLIC,  # always NaN: the training loss is never sent
    "fw.dp": Protection.PUBLIC,
    "fw.epsilon": Protection.PUBLIC,
    "fw.epsilon_next": Protection.PUBLIC,
    "fw.epsilon_budget": Protection.PUBLIC,
    "fw.delta": Protection.PUBLIC,
    "fw.noise_multiplier": Protection.PUBLIC,
    "fw.sample_rate": Protection.PUBLIC,
    "fw.steps": Protection.PUBLIC,
    "fw.max_grad_norm": Protection.PUBLIC,
    "fw.update_norm": Protection.PUBLIC,  # the norm of the noised update: post-processing
    "fw.update_clipped": Protection.PUBLIC,
    "fw.schema_fingerprint": Protection.PUBLIC,
}
"""A round's report (``client.contract.report.FitReport``), sent with every fit-type reply."""

_MUST_BE_NAN = frozenset({"fw.train_loss"})
"""Keys declared only as NaN: a number there would be a statistic no noise covers."""


@dataclass(frozen=True, kw_only=True)
class Release:
    """One kind of message a node sends.

    Parameters
    ----------
    kind : str
        Its name in this manifest.
    message_type : str
        The Flower message type it replies to.
    task : str, optional
        The ``fw.task`` of the instruction (fit-type messages carry several tasks).
    arrays : Protection, optional
        The protection of its arrays (``None``: it sends none).
    weight : Protection, optional
        The protection of its weight (``num_examples``; ``None``: always 0).
    fields : Mapping[str, Protection]
        Every metric or property key it may carry, with its protection.
    what : str
        What it is, in words.
    """

    kind: str
    message_type: str
    task: str | None = None
    arrays: Protection | None = None
    weight: Protection | None = None
    fields: Mapping[str, Protection] = field(default_factory=dict)
    what: str = ""


MANIFEST: tuple[Release, ...] = (
    Release(
        kind="census",
        message_type=GET_PROPERTIES,
        fields={
            "fw.institution": Protection.PUBLIC,
            "fw.num-train": Protection.DP,
            "fw.num-test": Protection.DP,
            "fw.schema": Protection.PUBLIC,
            "fw.schema-fingerprint": Protection.PUBLIC,
            "fw.budget-epsilon": Protection.PUBLIC,
            "fw.budget-delta": Protection.PUBLIC,
            "fw.require-secagg": Protection.PUBLIC,
            "fw.device": Protection.PUBLIC,
        },
        what="who the node is, its schema and budget; its row counts noised once per run",
    ),
    Release(
        kind="initial-model",
        message_type=GET_PARAMETERS,
        task="init",
        arrays=Protection.PUBLIC,
        what="the initial weights, built from the plan's seed (no row is read)",
    ),
    Release(
        kind="update",
        message_type=TRAIN,
        task="train",
        arrays=Protection.DP,
        weight=Protection.DP,
        fields=_REPORT_FIELDS,
        what="a DP-SGD round's clipped delta (masked by SecAgg+ when the run uses it)",
    ),
    Release(
        kind="summary",
        message_type=TRAIN,
        task="summary",
        arrays=Protection.DP,
        weight=Protection.DP,
        fields=_REPORT_FIELDS,
        what="the preprocessing summary: per-row averages, Gaussian-noised",
    ),
    Release(
        kind="profile",
        message_type=TRAIN,
        task="profile",
        arrays=Protection.DP,
        weight=Protection.DP,
        fields=_REPORT_FIELDS,
        what="the reference profile: histograms of the rows and predictions, Gaussian-noised",
    ),
    Release(
        kind="evaluation",
        message_type=TRAIN,
        task="evaluate",
        arrays=Protection.SECURE_SUM,
        weight=Protection.DP,
        fields=_REPORT_FIELDS,
        what="accuracy and mean loss on the held-out rows, as a term of a SecAgg+ sum",
    ),
    Release(
        kind="evaluation-in-the-clear",
        message_type=EVALUATE,
        task="evaluate",
        weight=Protection.DP,
        # its loss travels in Flower's own field of the reply, also by consent
        fields={"fw.institution": Protection.PUBLIC, "fw.accuracy": Protection.BY_CONSENT},
        what="an institution's own evaluation (its loss and accuracy): only by its consent",
    ),
)
"""Every kind of reply a node sends. A refusal is the same kind of reply with weight 0,
zero arrays and ``fw.refused``; a node that refuses outright replies with an error
(its reason, in words). SecAgg+'s own protocol messages (public keys, encrypted
shares, masked vectors, the shares that unmask the sum) are Flower's
``secaggplus_mod``'s and are declared in ``SECAGG_PROTOCOL``."""

SECAGG_PROTOCOL = Release(
    kind="secagg-protocol",
    message_type=TRAIN,
    arrays=Protection.SECURE_SUM,
    fields={"secaggplus": Protection.SECURE_SUM},
    what="Flower's SecAgg+ stages: keys, encrypted shares, the masked vector, unmask shares",
)


def release_for(*, message_type: str, task: str | None) -> Release:
    """The manifest's entry for a reply to ``message_type`` with ``task``.

    Raises
    ------
    UndeclaredReleaseError
        No entry declares such a reply.
    """
    for release in MANIFEST:
        if release.message_type != message_type:
            continue
        if message_type == TRAIN and release.task != (task or "train"):
            continue
        return release
    raise UndeclaredReleaseError(
        f"a reply to a {message_type!r} message with task {task!r} is not in the release "
        "manifest",
        message_type=message_type,
        task=task,
    )


def check_reply(
    release: Release,
    *,
    keys: Mapping[str, object] | Iterable[str],
    has_arrays: bool,
    weight: int,
) -> None:
    """Check one reply against its ``release`` before it leaves.

    Raises
    ------
    UndeclaredReleaseError
        A key the release does not declare, a NaN-only key that holds a number, arrays
        or a weight where the release declares none.
    """
    names = list(keys)
    undeclared = sorted(k for k in names if k not in release.fields)
    if undeclared:
        raise UndeclaredReleaseError(
            f"the {release.kind} reply carries undeclared key(s) {', '.join(undeclared)}; "
            "the release manifest allows only "
            f"{', '.join(sorted(release.fields)) or 'none'}",
            release=release.kind,
        )
    if isinstance(keys, Mapping):
        for key in _MUST_BE_NAN & set(names):
            value = keys[key]
            if not (isinstance(value, float) and math.isnan(value)):
                raise UndeclaredReleaseError(
                    f"the {release.kind} reply carries a value in {key}, declared NaN only",
                    release=release.kind,
                )
    if has_arrays and release.arrays is None:
        raise UndeclaredReleaseError(
            f"the {release.kind} reply carries arrays; the manifest declares none",
            release=release.kind,
        )
    if weight != 0 and release.weight is None:
        raise UndeclaredReleaseError(
            f"the {release.kind} reply carries a weight ({weight}); the manifest declares none",
            release=release.kind,
        )
