from __future__ import annotations

import numpy as np
import pytest

from privacy.errors import UpdateRejectedError
from privacy.updates import clip_update, update_norm, validate_update


def test_clipping_scales_to_the_bound_and_reports_the_original_norm():
    arrays = [np.full((2, 2), 3.0), np.full(3, 4.0)]
    norm = update_norm(arrays)

    clipped = clip_update(arrays, max_norm=1.0)

    assert clipped.clipped and clipped.norm == pytest.approx(norm)
    assert update_norm(clipped.arrays) == pytest.approx(1.0)
    assert max(float(np.abs(a).max()) for a in clipped.arrays) <= 1.0


def test_small_updates_pass_unchanged():
    arrays = [np.array([0.1, -0.2])]
    clipped = clip_update(arrays, max_norm=1.0)
    assert not clipped.clipped
    np.testing.assert_array_equal(clipped.arrays[0], arrays[0])


@pytest.mark.parametrize(
    ("arrays", "shapes", "phrase"),
    [
        ([np.array([1.0, np.nan])], None, "NaN or Inf"),
        ([np.array([np.inf])], None, "NaN or Inf"),
        ([np.zeros((2, 3))], [(3, 2)], r"shape \(2, 3\), expected \(3, 2\)"),
        ([np.zeros(2)], [(2,), (1,)], "has 1 arrays, the model has 2"),
        ([np.array(["a"])], None, "not numeric"),
    ],
)
def test_malformed_updates_are_rejected(arrays, shapes, phrase):
    with pytest.raises(UpdateRejectedError, match=phrase):
        validate_update(arrays, expected_shapes=shapes)
