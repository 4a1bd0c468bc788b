from __future__ import annotations

import pytest

from privacy.errors import ConfigError
from privacy.secagg import MODULUS_RANGE, derive_secagg_parameters


@pytest.mark.parametrize("n", [2, 3, 4, 10, 11, 50, 100, 500])
def test_derived_settings_are_safe_for_every_size(n):
    params = derive_secagg_parameters(num_institutions=n, clipping_range=2.0, max_weight=300)

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
    params = derive_secagg_parameters(num_institutions=2, clipping_range=1, max_weight=10)
    assert params.workflow_arguments()["num_shares"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"num_institutions": 1}, "needs >= 2 institutions"),
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
