"""``fedwarden simulate``: a federation of simulated institutions on this machine."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from client.contract.files import FORMATS
from privacy.errors import BudgetSpentError, ConfigError
from server.config import DEFAULT_PROFILE_NOISE, DEFAULT_SUMMARY_NOISE
from simulations.cli.common import ApiKey

# soft_wrap: a line is never broken mid-record (a terminal wraps it, a file keeps it whole);
# Rich writes no colour or cursor codes where the output is not a terminal.
console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

RUN_FILES = ("summary.json", "ledger.jsonl", "fedwarden.db")
"""What a finished or started run leaves in its ``--out`` folder."""

Opt = typer.Option


def simulate_command(
    dataset: Annotated[
        str,
        Opt(
            help="An embedded dataset: heart-disease, breast-cancer, digits, wine, fashion-mnist(-small)."
        ),
    ] = "heart-disease",
    data: Annotated[
        Path | None,
        Opt(
            help="Your own rows instead of --dataset: a folder with one file per institution "
            f"({FORMATS}; the file name is the institution's), or one file with --split-by."
        ),
    ] = None,
    schema: Annotated[
        Path | None, Opt(help="The consortium's schema (JSON) that --data must satisfy.")
    ] = None,
    split_by: Annotated[
        str | None, Opt(help="Split the one --data file into institutions by this column.")
    ] = None,
    delimiter: Annotated[
        str | None, Opt(help="The CSV delimiter (default: detected; e.g. ';').")
    ] = None,
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
    model: Annotated[
        str | None, Opt(help="logreg, mlp, cnn or dpcnn (default: per dataset).")
    ] = None,
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
    accountant: Annotated[str, Opt(help="prv or rdp (add-or-remove-one), or pld (replace-one: covers the public row counts).")] = "prv",
    budget: Annotated[float, Opt(help="Each institution's ε budget.")] = 1.0,
    history: Annotated[
        Path | None,
        Opt(
            "--history",
            help="Folder keeping each institution's ε history across runs (default: none, "
            "every run starts from ε = 0).",
        ),
    ] = None,
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
    fraction_fit: Annotated[
        float,
        Opt(
            help="Share of institutions sampled to train each round, and to evaluate its model "
            "(cross-device style; 1: all)."
        ),
    ] = 1.0,
    seed: Annotated[
        int, Opt(help="Fixes the splits and the initial weights (not the DP noise).")
    ] = 0,
    summary_noise_multiplier: Annotated[
        float | None,
        Opt(
            help=f"σ of the preprocessing summary (default {DEFAULT_SUMMARY_NOISE:g}, in units "
            "of one row's bound; 0: exact)."
        ),
    ] = None,
    profile_noise_multiplier: Annotated[
        float | None,
        Opt(
            help=f"σ of the reference profile (default {DEFAULT_PROFILE_NOISE:g}, in units of "
            "its sensitivity; 0: exact)."
        ),
    ] = None,
    insecure_reproducible: Annotated[
        bool,
        Opt(
            "--insecure-reproducible",
            help="Seed the DP sampling and noise from --seed too, so two runs give the same "
            "model; anyone who knows the seed can then recompute the noise. For tests only.",
        ),
    ] = False,
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
    api_key: ApiKey = None,
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
    """Run a federation of simulated institutions on this machine (Flower's simulation engine).

    The institutions are an embedded dataset's (--dataset) or your own files (--data with
    --schema): CSV, Parquet or NPZ, validated as `fedwarden client join` validates them.
    """
    # Cheap checks first: a wrong name or a used --out fails before torch, Flower or Ray load.
    from client.datasets import FileSource, get_dataset

    out_dir = _out_dir(out)
    own = _own_data(data=data, schema=schema, split_by=split_by, delimiter=delimiter)
    defaults = FileSource.defaults if own is not None else get_dataset(dataset).defaults
    # Heavy imports (torch, Flower, Ray) load here, so `fedwarden --help` stays fast.
    from client.history import ensure_writable
    from privacy.config import PrivacyBudget
    from privacy.keyring import EncryptionSettings, load_keyring
    from server.ledger import LedgerObserver
    from server.store.recorder import StoreRecorder
    from simulations.progress import ProgressObserver
    from simulations.report import PrivacyHistory, write_outputs
    from simulations.runner import BackendSettings, prepare, simulate
    from simulations.scenario import Scenario

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    scenario = Scenario(
        dataset=dataset,
        own_data=own,
        institutions=institutions,
        partition=partition,
        alpha=alpha,
        seed=seed,
        budget=PrivacyBudget(epsilon=budget, delta=delta),
        budgets=_budgets(budget_for or []),
        # The user of a simulation is every party: its flags set the nodes' own policies.
        node_policy={
            "allow-non-dp": not dp,
            "allow-reproducible": insecure_reproducible,
            # Without SecAgg+ the evaluation can only travel in the clear (the user's choice).
            "allow-exact-releases": not secagg
            or 0 in (summary_noise_multiplier, profile_noise_multiplier),
        },
        history_dir=ensure_writable(history, what="history folder") if history else None,
    )
    run_config: dict[str, Any] = {
        "insecure-reproducible": insecure_reproducible,
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
        "fraction-fit": fraction_fit,
    }
    optional = {
        "noise-multiplier": noise_multiplier,
        "target-epsilon": target_epsilon,
        "epsilon-cap": epsilon_cap,
        "secagg-num-shares": secagg_num_shares,
        "secagg-threshold": secagg_threshold,
        "secagg-timeout": secagg_timeout,
        "update-clip-norm": update_clip_norm,
        "summary-noise-multiplier": summary_noise_multiplier,
        "profile-noise-multiplier": profile_noise_multiplier,
    }
    run_config.update({key: value for key, value in optional.items() if value is not None})
    settings = prepare(scenario, run_config)  # every setting is checked before Ray starts
    _warn(dp=dp, secagg=secagg, insecure_reproducible=insecure_reproducible)
    plan = settings.plan
    console.print(
        f"fedwarden simulate: {scenario.name}, {scenario.num_institutions} institutions, "
        f"{plan.num_rounds} rounds, {settings.strategy.name}, model {plan.model}, "
        + (f"DP-SGD with ε ≤ {budget:g} each (δ={delta:g})" if dp else "no DP")
        + (", SecAgg+" if secagg else "")
        + (", central DP" if central_dp else "")
    )
    epsilon_before = _report_history(scenario, accountant=accountant, dp=dp)
    ledger = LedgerObserver(out_dir)
    store_settings = _store(database_url, out_dir=out_dir, api_key=api_key)
    run_name = f"simulate-{scenario.name}-{out_dir.name}"
    keyring = load_keyring(EncryptionSettings.load(keyring=keyring_dir))
    with StoreRecorder.open(store_settings, run_name=run_name, keyring=keyring) as recorder:
        registered = None
        with ProgressObserver(console, num_rounds=plan.num_rounds) as progress:
            try:
                outcome = simulate(
                    scenario,
                    settings,
                    observers=[progress, ledger, recorder],
                    backend=BackendSettings(ray_address=ray_address, verbose=verbose),
                    baseline=baseline,
                )
            except BaseException as exc:
                recorder.mark_failed(f"{type(exc).__name__}: {exc}")
                raise
            if register and outcome.result.rounds:
                progress.on_phase("export")
                registered = _register(
                    recorder, outcome, name=model_name or scenario.name, out_dir=out_dir
                )
    epsilon_after = _epsilon_after(scenario, outcome, accountant=accountant, dp=dp)
    summary_path, plot_path = write_outputs(
        outcome,
        out_dir,
        history=PrivacyHistory(
            folder=scenario.history_dir, before=epsilon_before, after=epsilon_after
        ),
    )
    _print_outcome(outcome, plan_rounds=plan.num_rounds, central_delta=central_delta)
    _print_history(scenario, epsilon_before, epsilon_after)
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


def _report_history(scenario: Any, *, accountant: str, dp: bool) -> dict[str, float]:
    """Each institution's ε before the run; stop here if fewer than two can still train.

    Raises
    ------
    BudgetSpentError
        Fewer than two institutions have budget left for this run.
    """
    from client.history import can_spend

    if scenario.history_dir is None:
        console.print(
            "no --history: each simulated institution starts from ε = 0, and what this run "
            "spends is not kept"
        )
        return dict.fromkeys(scenario.institution_names(), 0.0)
    before: dict[str, float] = scenario.epsilon_spent(accountant=accountant)
    console.print(f"privacy history in {scenario.history_dir}:")
    able = []
    for name, spent in before.items():
        budget = scenario.budget_of(name).epsilon
        exhausted = dp and not can_spend(epsilon_spent=spent, epsilon_budget=budget)
        note = "  [red]budget spent: will refuse this run[/]" if exhausted else ""
        console.print(f"  {name}: ε {spent:.3f} spent of {budget:g} before this run{note}")
        if not exhausted:
            able.append(name)
    if len(able) < 2:
        raise BudgetSpentError(
            f"not training: only {len(able)} of {len(before)} institutions have privacy budget "
            f"left in {scenario.history_dir} (a federation needs 2)",
            institutions=sorted(set(before) - set(able)),
        )
    return before


def _epsilon_after(scenario: Any, outcome: Any, *, accountant: str, dp: bool) -> dict[str, float]:
    """Each institution's ε after the run (every release: summary, rounds, profile): from its
    kept history, else from the last report each institution sent."""
    if not dp:
        return dict.fromkeys(scenario.institution_names(), math.inf)
    if scenario.history_dir is not None:
        return dict(scenario.epsilon_spent(accountant=accountant))
    after = dict.fromkeys(scenario.institution_names(), 0.0)
    for record in outcome.result.rounds:
        after.update({k: v for k, v in record.epsilon.items() if k in after})
    for report in outcome.result.profile_reports:  # the profile is released after the rounds
        if report.institution in after and math.isfinite(report.epsilon) and report.epsilon > 0:
            after[report.institution] = max(after[report.institution], report.epsilon)
    return after


def _print_history(scenario: Any, before: dict[str, float], after: dict[str, float]) -> None:
    kept = "kept" if scenario.history_dir is not None else "not kept"
    console.print(f"ε per institution, before → after this run ({kept}):")
    for name in scenario.institution_names():
        budget = scenario.budget_of(name).epsilon
        console.print(
            f"  {name}: {before.get(name, 0.0):.3f} → {after.get(name, 0.0):.3f} of {budget:g}"
        )


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


def _out_dir(out: Path | None) -> Path:
    """``--out``, refused if it already holds a run; by default a new ``runs/<timestamp>``."""
    if out is None:
        base = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate, suffix = base, 1
        while candidate.exists():  # two runs in one second write side by side
            suffix += 1
            candidate = base.with_name(f"{base.name}-{suffix}")
        return candidate
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held:
        raise ConfigError(
            f"--out {out} already holds a run ({', '.join(held)}); choose another folder "
            "or remove it: a run is never overwritten",
            out=str(out),
        )
    return out


def _own_data(
    *, data: Path | None, schema: Path | None, split_by: str | None, delimiter: str | None
) -> Any:
    """The ``OwnData`` of --data/--schema/--split-by, or ``None`` for an embedded dataset."""
    if data is None:
        if schema is not None or split_by is not None:
            raise ConfigError("--schema and --split-by go with --data")
        return None
    if schema is None:
        raise ConfigError("--data needs --schema: the consortium's schema file (JSON)")
    from simulations.own_data import OwnData

    own = OwnData(data=data, schema_path=schema, split_by=split_by, delimiter=delimiter)
    own.check()  # every file read and validated now, as `client join` would: fail fast
    return own


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


def _warn(*, dp: bool, secagg: bool, insecure_reproducible: bool) -> None:
    """Say loudly what a run gives up."""
    if not dp:
        err_console.print(
            "[bold red]DP is OFF[/]: this run trains without differential privacy; "
            "every institution's ε is reported as infinite."
        )
    if insecure_reproducible:
        err_console.print(
            "[bold red]INSECURE REPRODUCIBLE[/]: the DP noise is seeded from --seed; anyone who "
            "knows the seed can recompute it and subtract it. The run is marked so."
        )
    if not secagg:
        err_console.print(
            "[yellow]secure aggregation is off[/]: the coordinator sees each institution's update"
        )


def _store(database_url: str | None, *, out_dir: Path, api_key: str | None) -> Any:
    """The store the run is recorded in (by default a new one in the output folder); a
    governed store takes an operator's key."""
    from server.engine.operator import authorize_simulation
    from server.store.settings import StoreSettings

    settings = StoreSettings.load(
        database_url, default_url=f"sqlite:///{(out_dir / 'fedwarden.db').resolve()}"
    )
    authorize_simulation(settings=settings, api_key=api_key)
    return settings
