from __future__ import annotations

import numpy as np
import pytest

from client.datasets import get_dataset
from privacy.errors import ConfigError, UnknownNameError
from simulations.partitioners import (
    DirichletPartitioner,
    IidPartitioner,
    get_partitioner,
    label_skew,
)

LABELS = get_dataset("digits").load()["target"].to_numpy()


@pytest.mark.parametrize(
    "partitioner", [IidPartitioner(), DirichletPartitioner(0.3), DirichletPartitioner(5.0)]
)
@pytest.mark.parametrize("institutions", [2, 10, 37])
def test_every_row_lands_in_exactly_one_institution(partitioner, institutions):
    parts = partitioner.partition(LABELS, num_institutions=institutions, seed=3)

    assert len(parts) == institutions
    everything = np.concatenate(parts)
    assert len(everything) == len(LABELS)
    assert np.array_equal(np.sort(everything), np.arange(len(LABELS)))


def test_skew_grows_as_alpha_shrinks():
    skews = []
    for alpha in (100.0, 1.0, 0.1):
        per_seed = [
            label_skew(
                DirichletPartitioner(alpha).partition(LABELS, num_institutions=10, seed=s), LABELS
            )
            for s in range(5)
        ]
        skews.append(np.mean(per_seed))

    iid = label_skew(IidPartitioner().partition(LABELS, num_institutions=10, seed=0), LABELS)
    assert skews[0] < skews[1] < skews[2]
    assert skews[2] > 0.5 and iid < 0.1


def test_same_seed_same_split_other_seed_other_split():
    first = DirichletPartitioner(0.5).partition(LABELS, num_institutions=5, seed=1)
    again = DirichletPartitioner(0.5).partition(LABELS, num_institutions=5, seed=1)
    other = DirichletPartitioner(0.5).partition(LABELS, num_institutions=5, seed=2)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_more_institutions_than_rows_is_refused():
    with pytest.raises(ConfigError, match="cannot feed 400 institutions"):
        IidPartitioner().partition(LABELS, num_institutions=400, seed=0)


def test_bad_names_and_alpha_are_refused():
    with pytest.raises(UnknownNameError, match="unknown partitioner 'pathological'"):
        get_partitioner("pathological")
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        get_partitioner("dirichlet", alpha=0.0)
