"""The release manifest: each reply is held to its declared keys, arrays and weight."""

from __future__ import annotations

import math

import pytest

from privacy.errors import UndeclaredReleaseError
from privacy.releases import (
    EVALUATE,
    GET_PROPERTIES,
    MANIFEST,
    TRAIN,
    Protection,
    check_reply,
    release_for,
)


def test_every_task_has_one_entry_and_an_unknown_one_none():
    kinds = {release_for(message_type=TRAIN, task=t).kind for t in ("train", "summary", "profile", "evaluate")}

    assert kinds == {"update", "summary", "profile", "evaluation"}
    assert release_for(message_type=GET_PROPERTIES, task=None).kind == "census"
    with pytest.raises(UndeclaredReleaseError, match="not in the release manifest"):
        release_for(message_type=TRAIN, task="dump-rows")


def test_an_undeclared_key_is_refused():
    census = release_for(message_type=GET_PROPERTIES, task=None)

    check_reply(census, keys={"fw.institution": "A", "fw.num-train": 12}, has_arrays=False, weight=0)
    with pytest.raises(UndeclaredReleaseError, match=r"undeclared key.*fw\.positives"):
        check_reply(census, keys={"fw.positives": 7}, has_arrays=False, weight=0)


def test_the_training_loss_is_declared_only_as_nan():
    update = release_for(message_type=TRAIN, task="train")

    check_reply(update, keys={"fw.train_loss": math.nan}, has_arrays=True, weight=10)
    with pytest.raises(UndeclaredReleaseError, match="declared NaN only"):
        check_reply(update, keys={"fw.train_loss": 0.41}, has_arrays=True, weight=10)


def test_arrays_or_a_weight_where_none_is_declared_are_refused():
    census = release_for(message_type=GET_PROPERTIES, task=None)
    clear = release_for(message_type=EVALUATE, task="evaluate")

    with pytest.raises(UndeclaredReleaseError, match="carries arrays"):
        check_reply(census, keys={}, has_arrays=True, weight=0)
    with pytest.raises(UndeclaredReleaseError, match="carries a weight"):
        check_reply(census, keys={}, has_arrays=False, weight=5)
    check_reply(clear, keys={"fw.accuracy": 0.8}, has_arrays=False, weight=5)


def test_every_row_derived_part_is_noised_summed_or_consented():
    # Row counts and every array that reads rows are DP or a secure sum; exact values only
    # by the node's consent.
    for release in MANIFEST:
        if release.kind != "initial-model":
            assert release.arrays in (None, Protection.DP, Protection.SECURE_SUM), release.kind
        assert release.weight in (None, Protection.DP), release.kind
    census = release_for(message_type=GET_PROPERTIES, task=None)
    assert census.fields["fw.num-train"] is Protection.DP is census.fields["fw.num-test"]
