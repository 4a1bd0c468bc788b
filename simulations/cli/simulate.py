"""``fedwarden simulate``: a federation of simulated institutions on this machine."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from privacy.errors import ConfigError

console = Console()
err_console = Console(stderr=True)

Opt = typer.Option


def simulate_command(
    dataset: Annotated[
        str, Opt(help="heart-disease, breast-cancer, digits or wine.")
    ] = "heart-disease",
    institutions: Annotated[
        int | None, Opt(help="Institutions (default: the natural split, or 5).")
    ] = None,
    partition: Annotated[str, Opt(help="Split of a pooled dataset: iid or dirichlet.")] = "iid",
    alpha: Annotated[float, Opt(help="Dirichlet concentration (smaller: more label skew).")] = 0.5,
    rounds: Annotated[int | None, Opt(help="Federated rounds (default: per dataset).")] = None,
    local_epochs: Annotated[int | None, Opt(help="Local epochs per round.")] = None,
    strategy: Annotated[
        str,
        Opt(
            help="fedavg, fedprox, fedadam, fedyogi; with --no-secagg also fedmedian, fedtrimmedavg, krum."
        ),
    ] = "fedavg",
    model: Annotated[str | None, Opt(help="logreg, mlp or cnn (default: per dataset).")] = None,
    hidden: Annotated[int, Opt(help="Hidden units of the MLP.")] = 32,
    learning_rate: Annotated[float | None, Opt("--lr", help="Local learning rate.")] = None,
    sample_rate: Annotated[float | None, Opt(help="Poisson sample rate of DP-SGD batches.")] = None,
    dp: Annotated[
        bool, Opt("--dp/--no-dp", help="DP-SGD on each institution (off: ε = ∞).")
    ] = True,
    noise_multiplier: Annotated[
        float | None, Opt(help="σ (default: derived so the run spends each budget).")
    ] = None,
    target_epsilon: Annotated[
        float | None, Opt(help="ε the whole run should spend (≤ each budget).")
    ] = None,
    max_grad_norm: Annotated[float, Opt(help="Per-sample gradient clipping bound.")] = 1.0,
    delta: Annotated[float, Opt(help="δ of every budget and ε report.")] = 1e-5,
    accountant: Annotated[str, Opt(help="prv or rdp.")] = "prv",
    budget: Annotated[float, Opt(help="Each institution's ε budget.")] = 1.0,
    budget_for: Annotated[
        list[str] | None, Opt(help="NAME=EPSILON: one institution's budget (repeatable).")
    ] = None,
    epsilon_cap: Annotated[
        float | None, Opt(help="Federation ε cap: institutions past it are not scheduled.")
    ] = None,
    secagg: Annotated[
        bool, Opt("--secagg/--no-secagg", help="SecAgg+: the coordinator sees only the sum.")
    ] = True,
    secagg_num_shares: Annotated[
        int | None, Opt(help="SecAgg+ shares per institution (default: derived).")
    ] = None,
    secagg_threshold: Annotated[
        int | None, Opt(help="SecAgg+ reconstruction threshold (default: derived).")
    ] = None,
    secagg_timeout: Annotated[
        float | None, Opt(help="Seconds each SecAgg+ stage waits for replies.")
    ] = None,
    update_clip_norm: Annotated[
        float | None, Opt(help="Bound on an update's L2 norm (default: from the DP bound).")
    ] = None,
    central_dp: Annotated[
        bool, Opt("--central-dp", help="Add institution-level DP-FedAvg on top.")
    ] = False,
    central_noise_multiplier: Annotated[float, Opt(help="σ of the central noise.")] = 1.0,
    central_delta: Annotated[float, Opt(help="Institution-level δ.")] = 1e-3,
    proximal_mu: Annotated[float, Opt(help="FedProx proximal term.")] = 0.1,
    server_learning_rate: Annotated[
        float, Opt("--server-lr", help="FedAdam/FedYogi server learning rate.")
    ] = 0.1,
    seed: Annotated[int, Opt(help="Fixes splits, initial weights, sampling and noise.")] = 0,
    out: Annotated[Path | None, Opt(help="Output folder (default: runs/<timestamp>).")] = None,
    baseline: Annotated[
        bool, Opt("--baseline/--no-baseline", help="Also train the pooled non-private reference.")
    ] = True,
    ray_address: Annotated[
        str | None,
        Opt(
            envvar="RAY_ADDRESS",
            help="Run on an existing Ray cluster: its head's HOST:PORT (as `ray start --head` prints), auto, or ray://HOST:PORT.",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        Opt(help="Governance store (default: $FEDWARDEN_DATABASE_URL, else OUT/fedwarden.db)."),
    ] = None,
    model_name: Annotated[
        str | None, Opt(help="Registry name of the trained model (default: the dataset's).")
    ] = None,
    register: Annotated[
        bool, Opt("--register/--no-register", help="Export the model to ONNX and register it.")
    ] = True,
    verbose: Annotated[
        bool, Opt("--verbose", "-v", help="Show Flower's and fedwarden's logs.")
    ] = False,
    keyring_dir: Annotated[
        Path | None,
        Opt(
            "--keyring",
            envvar="FEDWARDEN_KEYRING",
            help="Encrypt checkpoints and model artifacts at rest with this keyring's "
            "active KEK (see `fedwarden keys`).",
        ),
    ] = None,
) -> None:
    """Run a federation of simulated institutions on this machine (Flower's simulation engine)."""
    # Heavy imports (torch, Flower, Ray) load here, so `fedwarden --help` stays fast.
    from client.datasets import get_dataset
    from privacy.config import PrivacyBudget
    from privacy.keyring import EncryptionSettings, load_keyring
    from server.ledger import LedgerObserver
    from server.store.recorder import StoreRecorder
    from server.store.settings import StoreSettings
    from simulations.progress import ProgressObserver
    from simulations.report import write_outputs
    from simulations.runner import BackendSettings, BudgetSpentError, prepare, simulate
    from simulations.scenario import Scenario

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    defaults = get_dataset(dataset).defaults
    scenario = Scenario(
        dataset=dataset,
        institutions=institutions,
        partition=partition,
        alpha=alpha,
        seed=seed,
        budget=PrivacyBudget(epsilon=budget, delta=delta),
        budgets=_budgets(budget_for or []),
    )
    run_config: dict[str, Any] = {
        "num-server-rounds": rounds if rounds is not None else defaults.num_rounds,
        "local-epochs": local_epochs if local_epochs is not None else defaults.local_epochs,
        "strategy": strategy,
        "model": model or defaults.model,
        "hidden": hidden,
        "learning-rate": learning_rate if learning_rate is not None else defaults.learning_rate,
        "sample-rate": sample_rate if sample_rate is not None else defaults.sample_rate,
        "dp": dp,
        "max-grad-norm": max_grad_norm,
        "target-delta": delta,
        "accountant": accountant,
        "secagg": secagg,
        "central-dp": central_dp,
        "central-noise-multiplier": central_noise_multiplier,
        "central-delta": central_delta,
        "proximal-mu": proximal_mu,
        "server-learning-rate": server_learning_rate,
        "seed": seed,
    }
    optional = {
        "noise-multiplier": noise_multiplier,
        "target-epsilon": target_epsilon,
        "epsilon-cap": epsilon_cap,
        "secagg-num-shares": secagg_num_shares,
        "secagg-threshold": secagg_threshold,
        "secagg-timeout": secagg_timeout,
        "update-clip-norm": update_clip_norm,
    }
    run_config.update({key: value for key, value in optional.items() if value is not None})
    _, settings = prepare(scenario, run_config)  # every setting is checked before Ray starts
    if not dp:
        err_console.print(
            "[bold red]DP is OFF[/]: this run trains without differential privacy; "
            "every institution's ε is reported as infinite."
        )
    if not secagg:
        err_console.print(
            "[yellow]secure aggregation is off[/]: the coordinator sees each institution's update"
        )
    out_dir = out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    plan = settings.plan
    console.print(
        f"fedwarden simulate: {dataset}, {scenario.num_institutions} institutions, "
        f"{plan.num_rounds} rounds, {settings.strategy.name}, model {plan.model}, "
        + (f"DP-SGD with ε ≤ {budget:g} each (δ={delta:g})" if dp else "no DP")
        + (", SecAgg+" if secagg else "")
        + (", central DP" if central_dp else "")
    )
    ledger = LedgerObserver(out_dir)
    store_settings = StoreSettings.load(
        database_url, default_url=f"sqlite:///{(out_dir / 'fedwarden.db').resolve()}"
    )
    run_name = f"simulate-{dataset}-{out_dir.name}"
    keyring = load_keyring(EncryptionSettings.load(keyring=keyring_dir))
    with StoreRecorder.open(store_settings, run_name=run_name, keyring=keyring) as recorder:
        try:
            with ProgressObserver(console, num_rounds=plan.num_rounds) as progress:
                outcome = simulate(
                    scenario,
                    run_config,
                    observers=[progress, ledger, recorder],
                    backend=BackendSettings(ray_address=ray_address, verbose=verbose),
                    baseline=baseline,
                )
        except BaseException as exc:
            recorder.mark_failed(f"{type(exc).__name__}: {exc}")
            raise
        registered = None
        if register and outcome.result.rounds:
            registered = _register(recorder, outcome, name=model_name or dataset, out_dir=out_dir)
    summary_path, plot_path = write_outputs(outcome, out_dir)
    _print_outcome(outcome, plan_rounds=plan.num_rounds, central_delta=central_delta)
    console.print(f"wrote {summary_path}, {plot_path} and {ledger.path}")
    console.print(f"run {recorder.run_id} recorded in {recorder.store.url}")
    if registered is not None:
        console.print(
            f"registered model {registered.name!r} version {registered.version} (staging) from "
            f"round {registered.round}: {registered.exported.path} "
            f"(ONNX parity max |Δp| {registered.exported.parity.max_abs_diff:.1e})"
        )
    console.print(f"({outcome.wall_time_s:.1f} s)")
    if not any(r.participants for r in outcome.result.rounds):
        raise BudgetSpentError("no institution trained a single round; see the refusals above")


def _print_outcome(outcome: Any, *, plan_rounds: int, central_delta: float) -> None:
    from simulations.progress import format_round

    done = outcome.result.rounds
    if done:
        console.print(f"[bold]final[/]  {format_round(done[-1], plan_rounds)}")
        if done[-1].central_epsilon is not None:
            console.print(
                f"institution-level ε of the model: {done[-1].central_epsilon:.3f} "
                f"(δ={central_delta:g})"
            )
    if outcome.baseline is not None:
        console.print(
            f"[bold]pooled non-private baseline[/] acc {outcome.baseline.accuracy:.3f} "
            "[dim](a reference a real federation cannot compute)[/]"
        )
    if outcome.result.stopped_reason != "completed every round":
        console.print(f"[yellow]{outcome.result.stopped_reason}[/]")


def _register(recorder: Any, outcome: Any, *, name: str, out_dir: Path) -> Any:
    """Export the run's last model and register it in staging (held-out rows check parity)."""
    import pandas as pd

    from deploy.registration import export_and_register
    from server.store import repository as repo

    held_out = pd.concat([i.test for i in outcome.scenario.all_institutions()], ignore_index=True)
    with recorder.store.session() as session:
        actor = repo.service_principal(session=session)
    return export_and_register(
        store=recorder.store,
        actor=actor,
        run_id=recorder.run_id,
        name=name,
        artifact_dir=out_dir / "artifacts",
        held_out=held_out,
    )


def _budgets(items: list[str]) -> dict[str, float]:
    budgets: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            epsilon = float(value)
        except ValueError:
            epsilon = math.nan
        if not sep or not name or not epsilon > 0:
            raise ConfigError(f"--budget-for expects NAME=EPSILON with EPSILON > 0, got {item!r}")
        budgets[name] = epsilon
    return budgets
