"""Local training and evaluation loops, the same for private and non-private runs."""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.models import get_weights
from privacy.accounting import AccountingStep
from privacy.dpsgd import make_private
from privacy.sampling import batch_size_for

logger = logging.getLogger(__name__)

# The fastest per-sample gradient mode for each model, by measurement on 2 CPU cores at
# batch 256 (``benchmarks/bench_training.py`` prints the ratios); hooks for anything else.
PREFERRED_GRAD_SAMPLE_MODE = {
    "LogisticRegression": "hooks",
    "Mlp": "hooks",
    "SmallCnn": "hooks",
    "DpCnn": "ghost",
}


def grad_sample_mode_for(model: nn.Module) -> str:
    """The per-sample gradient mode measured fastest for ``model``'s architecture."""
    return PREFERRED_GRAD_SAMPLE_MODE.get(type(model).__name__, "hooks")


@dataclass(frozen=True)
class LocalOutcome:
    """What local training produced: new weights and what to account for them."""

    weights: list[np.ndarray]
    num_examples: int
    mean_loss: float
    accounting: AccountingStep | None


def train_locally(
    model: nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    sample_rate: float,
    noise_multiplier: float | None,
    max_grad_norm: float,
    proximal_mu: float = 0.0,
    seed: int | None,
    device: torch.device,
    grad_sample_mode: str | None = None,
) -> LocalOutcome:
    """Train ``model`` in place for ``epochs`` and return its weights.

    With a ``noise_multiplier`` the steps are DP-SGD (Poisson-sampled batches,
    per-sample clipping to ``max_grad_norm``, Gaussian noise); with ``None``
    they are plain SGD on shuffled batches of the same expected size. A
    ``proximal_mu`` > 0 adds FedProx's proximal step towards the starting
    weights after each step; it reads no data, so it costs no privacy.
    ``grad_sample_mode`` picks how DP-SGD gets per-sample gradients (the same
    step either way); ``None`` takes the one measured fastest for the model.

    ``seed`` ``None`` (the default for every real round) draws the batch sampling
    and the noise from generators seeded with 64 bits from the OS's secure source
    (``secrets``), fresh each call: nothing the coordinator knows predicts them.
    (Opacus's own ``secure_mode`` needs ``torchcsprng``, which has no build for this
    torch.) A given ``seed`` makes the round reproducible, and its noise predictable.
    """
    model.to(device).train()
    dataset = TensorDataset(
        torch.as_tensor(features, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long)
    )
    pin = device.type == "cuda"  # page-locked batches copy to the GPU asynchronously
    if seed is None:
        sampling_seed, noise_seed = secrets.randbits(62), secrets.randbits(62)
    else:
        sampling_seed, noise_seed = seed, seed + 1
    generator = torch.Generator().manual_seed(sampling_seed)
    loader: DataLoader[tuple[torch.Tensor, ...]] = DataLoader(
        dataset,
        batch_size=batch_size_for(len(dataset), sample_rate),
        shuffle=noise_multiplier is None,
        generator=generator,
        pin_memory=pin,
    )
    optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    private = None
    criterion: nn.Module = nn.CrossEntropyLoss()
    if noise_multiplier is not None:
        private = make_private(
            model,
            optimizer,
            loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            noise_seed=noise_seed,
            grad_sample_mode=grad_sample_mode or grad_sample_mode_for(model),
        )
        model, optimizer, loader = private.model, private.optimizer, private.data_loader
        criterion = private.criterion or criterion
    losses: list[float] = []
    with warnings.catch_warnings():
        # Opacus's per-sample hooks fire on inputs that need no gradient; torch warns.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        _run_epochs(
            model,
            optimizer,
            loader,
            criterion,
            losses,
            epochs=epochs,
            device=device,
            anchor=anchor,
            proximal_rate=learning_rate * proximal_mu,
        )
    trained = model
    accounting: AccountingStep | None = None
    if private is not None:
        trained = private.module
        accounting = private.accounting_step()
        private.close()

    return LocalOutcome(
        weights=get_weights(trained),
        num_examples=len(dataset),
        mean_loss=float(np.mean(losses)) if losses else math.nan,
        accounting=accounting,
    )


def _run_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    criterion: nn.Module,
    losses: list[float],
    *,
    epochs: int,
    device: torch.device,
    anchor: list[torch.Tensor],
    proximal_rate: float,
) -> None:
    for _ in range(epochs):
        for batch_x, batch_y in loader:
            x = batch_x.to(device, non_blocking=True)
            y = batch_y.to(device, non_blocking=True)
            optimizer.zero_grad()
            out = model(x)
            if len(y) == 0 and not _is_ghost(criterion):
                # An empty Poisson batch still takes a (pure-noise) step: skipping it
                # would reveal that the batch was empty. (Ghost clipping's own loss
                # takes an empty batch and yields the noise step itself.)
                loss = out.sum() * 0.0
            else:
                loss = criterion(out, y)
                if len(y):
                    losses.append(float(loss.detach()))
            loss.backward()
            optimizer.step()
            if anchor:
                _proximal_step(model.parameters(), anchor, proximal_rate)


def _is_ghost(criterion: nn.Module) -> bool:
    return type(criterion).__name__ == "DPLossFastGradientClipping"


def _proximal_step(params: Iterable[torch.Tensor], anchor: list[torch.Tensor], rate: float) -> None:
    with torch.no_grad():
        for param, start in zip(params, anchor, strict=True):
            param.sub_(rate * (param - start))


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    num_examples: int


def evaluate_model(
    model: nn.Module, features: np.ndarray, labels: np.ndarray, *, device: torch.device
) -> Evaluation:
    """Cross-entropy loss and accuracy of ``model`` on the given rows."""
    model.to(device).eval()
    with torch.no_grad():
        x = torch.as_tensor(features, dtype=torch.float32, device=device)
        y = torch.as_tensor(labels, dtype=torch.long, device=device)
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return Evaluation(loss=loss, accuracy=accuracy, num_examples=len(labels))
