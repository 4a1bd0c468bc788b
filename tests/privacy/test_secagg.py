from __future__ import annotations

import pytest

from privacy.errors import ConfigError, TooFewParticipantsError
from privacy.secagg import (
    FIRST_ROUND_TIMEOUT_S,
    MIN_TIMEOUT_S,
    MODULUS_RANGE,
    derive_secagg_parameters,
    secagg_timeout_s,
)


@pytest.mark.parametrize("n", [2, 3, 4, 10, 11, 50, 100, 500])
def test_derived_settings_are_safe_for_every_size(n):
    params = derive_secagg_parameters(
        num_institutions=n, clipping_range=2.0, max_weight=300, min_participants=2
    )

    assert params.num_shares <= n
    if n >= 3:
        assert params.num_shares > 2
        assert params.num_shares // 2 < params.reconstruction_threshold < params.num_shares
    # n quantized vectors cannot overflow the modulus
    assert n * params.quantization_range < MODULUS_RANGE
    assert params.clipping_range == 2.0


def test_small_federations_share_with_everyone_large_ones_with_log_many():
    assert (
        derive_secagg_parameters(num_institutions=4, clipping_range=1, max_weight=10).num_shares
        == 4
    )
    large = derive_secagg_parameters(num_institutions=100, clipping_range=1, max_weight=10)
    assert large.num_shares == 15 and large.num_shares % 2 == 1


def test_two_institutions_map_to_flowers_all_nodes_setting():
    params = derive_secagg_parameters(
        num_institutions=2, clipping_range=1, max_weight=10, min_participants=2
    )
    assert params.workflow_arguments()["num_shares"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"min_participants": 1}, "min-secure-participants"),
        ({"reconstruction_threshold": 2}, "strict majority"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"timeout_s": float("inf")}, "timeout"),
        ({"clipping_range": 0.0}, "clipping range"),
        ({"max_weight": 0.5}, "max weight"),
        ({"reconstruction_threshold": 5}, "reconstruction threshold"),
        ({"reconstruction_threshold": 1}, "reconstruction threshold"),
    ],
)
def test_impossible_settings_are_refused(kwargs, phrase):
    arguments = {"num_institutions": 5, "clipping_range": 1.0, "max_weight": 100.0, **kwargs}
    with pytest.raises(ConfigError, match=phrase):
        derive_secagg_parameters(**arguments)


@pytest.mark.parametrize(("n", "k"), [(2, 3), (1, 2), (3, 4)])
def test_a_sum_of_fewer_than_k_institutions_is_refused(n, k):
    with pytest.raises(TooFewParticipantsError, match="fewer than") as caught:
        derive_secagg_parameters(
            num_institutions=n, clipping_range=1.0, max_weight=10, min_participants=k
        )
    assert caught.value.participants == n and caught.value.minimum == k
    assert caught.value.exit_code == 3


def test_the_default_k_is_three():
    with pytest.raises(TooFewParticipantsError):
        derive_secagg_parameters(num_institutions=2, clipping_range=1.0, max_weight=10)
    assert derive_secagg_parameters(num_institutions=3, clipping_range=1.0, max_weight=10)


def test_the_timeout_is_always_finite():
    params = derive_secagg_parameters(num_institutions=3, clipping_range=1.0, max_weight=10)

    assert params.timeout_s == FIRST_ROUND_TIMEOUT_S
    assert params.workflow_arguments()["timeout"] == FIRST_ROUND_TIMEOUT_S
    assert secagg_timeout_s(configured_s=None, previous_round_s=0.5) == MIN_TIMEOUT_S
    assert secagg_timeout_s(configured_s=None, previous_round_s=20.0) == 100.0
    assert secagg_timeout_s(configured_s=7.0, previous_round_s=20.0) == 7.0
