"""Model updates: bounding them before they leave, and checking them when they arrive."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from privacy.errors import UpdateRejectedError


@dataclass(frozen=True)
class ClippedUpdate:
    """An update scaled down (if needed) to an L2 norm bound."""

    arrays: list[np.ndarray]
    norm: float
    clipped: bool


def update_norm(arrays: Sequence[np.ndarray]) -> float:
    """L2 norm of all arrays taken together."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def clip_update(arrays: Sequence[np.ndarray], *, max_norm: float) -> ClippedUpdate:
    """Scale ``arrays`` so their joint L2 norm is at most ``max_norm``.

    Every coordinate of the result then lies in ``[-max_norm, max_norm]``,
    which is what secure aggregation's clipping range is set from: nothing is
    clipped silently there. ``norm`` is the norm *before* clipping.
    """
    validate_update(arrays)
    norm = update_norm(arrays)
    if norm <= max_norm:
        return ClippedUpdate(arrays=[np.asarray(a) for a in arrays], norm=norm, clipped=False)
    scale = max_norm / norm
    return ClippedUpdate(arrays=[np.asarray(a) * scale for a in arrays], norm=norm, clipped=True)


def validate_update(
    arrays: Sequence[np.ndarray], *, expected_shapes: Sequence[tuple[int, ...]] | None = None
) -> None:
    """Raise ``UpdateRejectedError`` if an array is not finite or not of the expected shape."""
    if expected_shapes is not None:
        if len(arrays) != len(expected_shapes):
            raise UpdateRejectedError(
                f"update has {len(arrays)} arrays, the model has {len(expected_shapes)}",
                arrays=len(arrays),
            )
        for index, (array, shape) in enumerate(zip(arrays, expected_shapes, strict=True)):
            if tuple(np.shape(array)) != tuple(shape):
                got = tuple(np.shape(array))
                raise UpdateRejectedError(
                    f"update array {index} has shape {got}, expected {tuple(shape)}", index=index
                )
    for index, array in enumerate(arrays):
        values = np.asarray(array)
        if not np.issubdtype(values.dtype, np.number):
            raise UpdateRejectedError(f"update array {index} is not numeric", index=index)
        if not np.all(np.isfinite(values)):
            raise UpdateRejectedError(f"update array {index} holds NaN or Inf", index=index)
