"""DP-SGD set-up: the one module of fedwarden that touches Opacus's training machinery.

``make_private`` wraps a model, an optimizer and a data loader so that every
optimizer step clips per-sample gradients to ``max_grad_norm``, adds Gaussian
noise of standard deviation ``noise_multiplier * max_grad_norm`` and samples
batches by Poisson sampling, as Opacus does. The caller's training loop stays
the same for private and non-private training; what leaves is a plain state
dict (``PrivateTraining.module``) and the number of noisy steps taken.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from privacy.accounting import AccountingStep
from privacy.errors import ConfigError, UnknownNameError

logger = logging.getLogger(__name__)

GRAD_SAMPLE_MODES = {
    "hooks": "per-sample gradients from Opacus's forward/backward hooks",
    "functorch": "per-sample gradients from torch.func (vmap over grad)",
    "ghost": "ghost clipping: per-sample norms without per-sample gradients, two backward passes",
}
"""How per-sample gradients are clipped; all give the same DP-SGD step (the same privacy)."""


@dataclass
class PrivateTraining:
    """A model, optimizer and loader made private, plus what is needed to account for them."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data_loader: DataLoader[tuple[torch.Tensor, ...]]
    noise_multiplier: float
    sample_rate: float
    _engine: object
    criterion: nn.Module | None = None
    """The loss to call in ``ghost`` mode (its ``backward`` does both passes); else ``None``."""

    @property
    def module(self) -> nn.Module:
        """The plain module under Opacus's wrapper: its state dict is what leaves."""
        inner = getattr(self.model, "_module", self.model)
        assert isinstance(inner, nn.Module)
        return inner

    def close(self) -> None:
        """Remove Opacus's hooks from the module, so it can be trained (or wrapped) again."""
        close = getattr(self.model, "_close", None)
        if callable(close):
            close()

    def steps_taken(self) -> int:
        """Noisy steps taken so far (the accountant's own count)."""
        history = self._engine.accountant.history  # type: ignore[attr-defined]
        return int(sum(steps for _, _, steps in history))

    def accounting_step(self) -> AccountingStep:
        """What this training adds to the institution's privacy history."""
        return AccountingStep(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps_taken(),
        )


def loader_sample_rate(data_loader: DataLoader[tuple[torch.Tensor, ...]]) -> float:
    """The Poisson sample rate Opacus derives from a loader: one over its number of batches."""
    return 1.0 / len(data_loader)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader[tuple[torch.Tensor, ...]],
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    noise_seed: int | None = None,
    grad_sample_mode: str = "hooks",
    criterion: nn.Module | None = None,
) -> PrivateTraining:
    """Wrap ``model``, ``optimizer`` and ``data_loader`` for DP-SGD.

    The loader's batch size fixes the sample rate (``1 / len(data_loader)``) and
    its generator drives Poisson sampling, so a seeded loader gives a seeded run.
    ``noise_seed`` seeds the Gaussian noise; ``None`` draws it from the OS.
    ``grad_sample_mode`` is one of ``GRAD_SAMPLE_MODES``; with ``ghost`` the
    returned ``criterion`` (wrapping ``criterion``, cross-entropy by default)
    must compute the loss.
    """
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    if grad_sample_mode not in GRAD_SAMPLE_MODES:
        raise UnknownNameError("per-sample gradient mode", grad_sample_mode, GRAD_SAMPLE_MODES)
    if noise_multiplier <= 0:
        raise ConfigError("DP-SGD needs a noise multiplier > 0", noise_multiplier=noise_multiplier)
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError(
            f"model is not compatible with DP-SGD: {problems[0]}", problems=len(problems)
        )
    generator = None
    if noise_seed is not None:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(noise_seed)
    with warnings.catch_warnings():
        # Opacus warns about its non-cryptographic RNG on every call; fedwarden says
        # so once in its documentation instead of in every round's log.
        warnings.simplefilter("ignore", UserWarning)
        engine = PrivacyEngine(accountant="prv", secure_mode=False)
        wrapped = engine.make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion if criterion is not None else nn.CrossEntropyLoss(),
            data_loader=data_loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=generator,
            grad_sample_mode=grad_sample_mode,
        )
    private_criterion = None
    if grad_sample_mode == "ghost":
        private_model, private_optimizer, private_criterion, private_loader = wrapped
    else:
        private_model, private_optimizer, private_loader = wrapped
    return PrivateTraining(
        model=private_model,
        optimizer=private_optimizer,
        data_loader=private_loader,
        noise_multiplier=noise_multiplier,
        sample_rate=loader_sample_rate(data_loader),
        _engine=engine,
        criterion=private_criterion,
    )
