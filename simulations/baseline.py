"""The pooled, non-private reference: what a federation could never compute.

It pools every institution's training rows in one place, fits the preprocessing
on them, and trains the same architecture without DP; it is evaluated on the
union of the institutions' held-out rows. The gap between it and the
federation is the price of federation plus privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from client.contract.architecture import ModelSpec
from client.contract.preprocessing import PreprocessingSpec
from client.data import InstitutionData
from client.models import build_model
from client.training import evaluate_model, train_locally

BASELINE_EPOCHS = 100
BASELINE_SAMPLE_RATE = 0.1
BASELINE_LEARNING_RATE = 0.05
NOTE = "pooled raw data without privacy: a reference a real federation cannot compute"


@dataclass(frozen=True)
class BaselineResult:
    accuracy: float
    loss: float
    epochs: int
    note: str = NOTE


def pooled_baseline(
    institutions: list[InstitutionData],
    *,
    model: str,
    hidden: int,
    seed: int,
    learning_rate: float = BASELINE_LEARNING_RATE,
    epochs: int = BASELINE_EPOCHS,
) -> BaselineResult:
    """Train ``model`` centrally on the pooled training rows; score it on the pooled test rows.

    The recipe (plain SGD, small steps, many epochs) is the usual non-private one,
    independent of the federation's own learning rate, which DP-SGD needs larger.
    """
    schema = institutions[0].schema
    train = pd.concat([i.train for i in institutions], ignore_index=True)
    test = pd.concat([i.test for i in institutions], ignore_index=True)
    spec = PreprocessingSpec.fit(train, schema)
    model_spec = ModelSpec(
        name=model,
        num_features=spec.num_outputs,
        num_classes=len(schema.target.labels),
        hidden=hidden,
        image_shape=schema.image_shape,
    )
    network = build_model(model_spec, seed=seed)
    device = torch.device("cpu")
    train_locally(
        network,
        spec.transform(train),
        spec.labels(train),
        epochs=epochs,
        learning_rate=learning_rate,
        sample_rate=BASELINE_SAMPLE_RATE,
        noise_multiplier=None,
        max_grad_norm=1.0,
        seed=seed,
        device=device,
    )
    result = evaluate_model(network, spec.transform(test), spec.labels(test), device=device)
    return BaselineResult(accuracy=result.accuracy, loss=result.loss, epochs=epochs)
