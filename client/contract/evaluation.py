"""The federated evaluation's vector: what each institution adds to the secure sum.

Evaluation is a fit-type task (``TASK_EVALUATE``) whose reply is one vector of
``EVALUATION_SIZE`` values, weighted by the institution's published test count,
summed through SecAgg+ like the preprocessing summary: the coordinator learns
the federation's accuracy and mean loss on the held-out rows, not any
institution's own.
"""

from __future__ import annotations

import numpy as np

EVALUATION_SIZE = 2
"""Accuracy, then mean loss (capped)."""
EVALUATION_LOSS_CAP = 8.0
"""A mean loss is capped at this before it is summed (secure aggregation's value range)."""


def evaluation_vector(*, accuracy: float, loss: float) -> np.ndarray:
    """The vector an institution sends: its accuracy in [0, 1], its mean loss capped."""
    return np.array(
        [min(max(accuracy, 0.0), 1.0), min(max(loss, 0.0), EVALUATION_LOSS_CAP)],
        dtype=np.float64,
    )
