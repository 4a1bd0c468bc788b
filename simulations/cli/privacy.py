"""``fedwarden privacy``: plan ε before joining a federation."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from privacy.errors import ConfigError

privacy_app = typer.Typer(
    help="Privacy planner: ε for given noise, or the noise for a target ε.",
    no_args_is_help=True,
)
console = Console()

SampleRate = Annotated[
    float, typer.Option("--sample-rate", "-q", help="Poisson sample rate q of each step.")
]
Steps = Annotated[int, typer.Option("--steps", "-t", help="Number of DP-SGD steps T.")]
Delta = Annotated[float, typer.Option("--delta", "-d", help="δ of the (ε, δ) guarantee.")]
Accountant = Annotated[str, typer.Option(help="prv (tighter) or rdp.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@privacy_app.command("epsilon")
def epsilon_command(
    sample_rate: SampleRate,
    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier", "-s", help="σ.")],
    steps: Steps,
    delta: Delta = 1e-5,
    accountant: Accountant = "prv",
    as_json: AsJson = False,
) -> None:
    """ε spent by T steps of DP-SGD at sample rate q and noise multiplier σ."""
    from privacy.accounting import AccountingStep, compute_epsilon

    _check(sample_rate=sample_rate, steps=steps, delta=delta)
    if noise_multiplier < 0:
        raise ConfigError(f"noise multiplier must be >= 0, got {noise_multiplier}")
    history = [
        AccountingStep(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    ]
    epsilon = compute_epsilon(history, delta=delta, accountant=accountant)
    result = {
        "epsilon": epsilon if epsilon != float("inf") else "inf",
        "accountant": accountant,
        "delta": delta,
        "sample_rate": sample_rate,
        "noise_multiplier": noise_multiplier,
        "steps": steps,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(
            f"ε = {epsilon:.4f} at δ = {delta:g} ({accountant}; σ = {noise_multiplier:g}, "
            f"q = {sample_rate:g}, {steps} steps)"
        )


@privacy_app.command("noise")
def noise_command(
    target_epsilon: Annotated[
        float, typer.Option("--target-epsilon", "-e", help="ε to stay within.")
    ],
    sample_rate: SampleRate,
    steps: Steps,
    delta: Delta = 1e-5,
    accountant: Accountant = "prv",
    as_json: AsJson = False,
) -> None:
    """The smallest noise multiplier σ whose T steps at rate q stay within the target ε."""
    from privacy.accounting import AccountingStep, compute_epsilon, noise_multiplier_for

    _check(sample_rate=sample_rate, steps=steps, delta=delta)
    if not target_epsilon > 0:
        raise ConfigError(f"target ε must be > 0, got {target_epsilon}")
    sigma = noise_multiplier_for(
        target_epsilon=target_epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
    )
    achieved = compute_epsilon(
        [AccountingStep(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)],
        delta=delta,
        accountant=accountant,
    )
    result = {
        "noise_multiplier": sigma,
        "epsilon": achieved,
        "target_epsilon": target_epsilon,
        "accountant": accountant,
        "delta": delta,
        "sample_rate": sample_rate,
        "steps": steps,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(
            f"σ = {sigma:.4f} keeps {steps} steps at q = {sample_rate:g} within ε = "
            f"{target_epsilon:g} (spends {achieved:.4f}) at δ = {delta:g} ({accountant})"
        )


def _check(*, sample_rate: float, steps: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if not 0 < delta < 1:
        raise ConfigError(f"δ must be in (0, 1), got {delta}")
