"""The coordinator's run, phase by phase: census, federated summary, initial model, the
rounds, the reference profile.

``Federation.run`` is what the ServerApp's ``main`` calls. Each phase goes through
Flower's grid: the census (``server.census``); training rounds through
``plain_fit_workflow`` or, with secure aggregation, Flower's ``SecAggPlusWorkflow``;
the summary the preprocessing is fitted from and the reference profile drift is
measured against as federated averages (``server.averaging``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import replace

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.common import (
    Code,
    GetParametersIns,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.client_manager import ClientManager
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp.grid import Grid

from client.contract.evaluation import EVALUATION_LOSS_CAP, EVALUATION_SIZE
from client.contract.preprocessing import PreprocessingSpec, summary_size
from client.contract.profile import PROFILE_NOISY_RANGE, ReferenceProfile, federation_layout
from client.contract.report import FitReport
from client.contract.schema import TableSchema
from client.contract.wire import (
    PREPROCESSING_KEY,
    ROUND_KEY,
    TASK_EVALUATE,
    TASK_INIT,
    TASK_KEY,
    TASK_SUMMARY,
)
from privacy.errors import ConfigError, TooFewParticipantsError
from privacy.secagg import SecAggParameters, derive_secagg_parameters, secagg_timeout_s
from server.averaging import FederatedAverage, federated_average
from server.census import take_census
from server.checkpoint_format import RunCheckpoint
from server.config import FederationSettings
from server.errors import FederationError
from server.federated_strategy import FedwardenStrategy, RoundLog
from server.reference_profile import assemble_profile, profile_task
from server.run_events import (
    Institution,
    RoundRecord,
    RunObserver,
    RunResult,
    RunStart,
    notify_phase,
)
from server.strategies import build_strategy
from server.workflows import (
    Workflow,
    fresh_context,
    global_weights,
    plain_fit_workflow,
    secure_fit_workflow,
)

logger = logging.getLogger(__name__)


class Federation:
    """Runs one federation with ``settings``, reporting to ``observers``."""

    def __init__(self, settings: FederationSettings, observers: Sequence[RunObserver] = ()) -> None:
        self.settings = settings
        self.observers = list(observers)
        self._last_secure_s: float | None = None
        """How long the last secure training round took: later SecAgg+ timeouts derive from it
        (not from the shorter summary, evaluation or profile sums, whose few numbers would
        give the next round's training too little time)."""
        self._summary_reports: list[FitReport] = []
        """The institutions' reports of their noisy summaries (the ledger's first entries)."""

    def run(
        self, grid: Grid, context: Context, *, resume: RunCheckpoint | None = None
    ) -> RunResult:
        """Run the federation; with ``resume``, carry on after the checkpoint's round."""
        manager = SimpleClientManager()
        thread, stop, ready = start_update_client_manager_thread(grid, manager)
        try:
            ready.wait()
            return self._run(grid, context, manager, resume)
        finally:
            stop.set()
            thread.join()

    # ------------------------------------------------------------------ phases

    def _run(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        resume: RunCheckpoint | None,
    ) -> RunResult:
        settings = self.settings
        secure = settings.secagg is not None
        least = self._least_per_round()
        institutions, schema = self._census(grid, manager, least=least)
        spec, initial, first_round = self._starting_point(
            grid, context, manager, institutions, schema=schema, resume=resume
        )
        preprocessing = spec.to_json() if resume is None else resume.preprocessing
        model_spec = settings.plan.model_spec(spec).to_dict()
        strategy = FedwardenStrategy(
            build_strategy(
                settings.strategy,
                initial_parameters=ndarrays_to_parameters(initial),
                min_clients=least,
            ),
            plan=settings.plan,
            preprocessing=preprocessing,
            institutions=institutions,
            secure=secure,
            epsilon_cap=settings.epsilon_cap,
            central_dp=settings.central_dp,
        )
        if resume is not None:
            strategy.restore(resume)
        legacy = LegacyContext(
            context=fresh_context(context),
            config=ServerConfig(num_rounds=settings.plan.num_rounds),
            strategy=strategy,
            client_manager=manager,
        )
        legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(initial)
        round_config = ConfigRecord()
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = round_config
        start = RunStart(
            institutions=sorted(institutions.values(), key=lambda i: i.name),
            settings=settings.describe(),
            secure=secure,
            first_round=first_round,
            preprocessing=preprocessing,
            model_spec=model_spec,
            summary_reports=list(self._summary_reports),
        )
        for observer in self.observers:
            observer.on_run_start(start)

        records: list[RoundRecord] = []
        stopped = "completed every round"
        for server_round in range(first_round, settings.plan.num_rounds + 1):
            schedulable = strategy.schedulable()
            reason = _stop_reason(server_round, len(schedulable), least=least)
            if reason is not None:
                stopped = reason
                logger.warning(stopped)
                break
            round_config[Key.CURRENT_ROUND] = server_round
            notify_phase(self.observers, f"round {server_round}/{settings.plan.num_rounds}")
            began = time.perf_counter()
            fit, secagg = self._fit_workflow(strategy, manager, len(schedulable), institutions)
            fit(grid, legacy)
            if secure:
                self._last_secure_s = time.perf_counter() - began
            self._evaluate(
                grid,
                context,
                manager,
                institutions,
                strategy=strategy,
                weights=global_weights(legacy),
                preprocessing=preprocessing,
                server_round=server_round,
            )
            checkpoint = strategy.checkpoint(
                server_round=server_round,
                weights=global_weights(legacy),
                preprocessing=preprocessing,
                model_spec=model_spec,
                run_config=dict(self.settings.run_config),
            )
            record = _record(strategy, server_round, secagg, time.perf_counter() - began)
            record = replace(record, checkpoint=checkpoint)
            records.append(record)
            for observer in self.observers:
                observer.on_round_end(record)

        # The reference profile: the training rows and the final model's predictions on
        # them, per feature, summed across institutions (through SecAgg+ when it is on).
        profile, profile_reports = self._profile(
            grid,
            context,
            manager,
            institutions,
            schema=schema,
            weights=global_weights(legacy),
            preprocessing=preprocessing,
            server_round=records[-1].round if records else first_round - 1,
        )

        result = RunResult(
            weights=global_weights(legacy),
            model_spec=model_spec,
            preprocessing=preprocessing,
            rounds=records,
            stopped_reason=stopped,
            profile=profile,
            profile_reports=profile_reports,
            summary_reports=list(self._summary_reports),
        )
        for observer in self.observers:
            observer.on_run_end(result)
        return result

    def _starting_point(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        institutions: dict[int, Institution],
        *,
        schema: TableSchema,
        resume: RunCheckpoint | None,
    ) -> tuple[PreprocessingSpec, list[np.ndarray], int]:
        """The preprocessing, the weights and the first round: fresh, or from a checkpoint."""
        if resume is None:
            spec = self._summary(grid, context, manager, institutions, schema)
            return spec, self._initial_weights(grid, institutions, spec.to_json()), 1
        spec = PreprocessingSpec.from_json(resume.preprocessing)
        if spec.schema.fingerprint() != schema.fingerprint():
            raise FederationError(
                "cannot resume: the institutions' schema differs from the checkpoint's"
            )
        logger.info("resuming after round %d", resume.round)
        return spec, resume.weights, resume.round + 1

    def _census(
        self, grid: Grid, manager: ClientManager, *, least: int
    ) -> tuple[dict[int, Institution], TableSchema]:
        """Wait for the institutions and take the census; refuse a secure run of fewer than k."""
        settings = self.settings
        wanted = max(settings.min_institutions, least)
        if not manager.wait_for(wanted, timeout=int(settings.wait_timeout_s)):
            raise FederationError(
                f"only {manager.num_available()} of the {wanted} institutions needed connected "
                f"within {settings.wait_timeout_s:g} s"
            )
        notify_phase(self.observers, "census")
        institutions, schema = take_census(
            grid, manager, settings=settings, observers=self.observers
        )
        if settings.secagg is not None and len(institutions) < least:
            raise TooFewParticipantsError(
                f"only {len(institutions)} institutions answered the census; a secure sum needs "
                f"at least {least} (min-secure-participants)",
                participants=len(institutions),
                minimum=least,
            )
        return institutions, schema

    def _summary(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        institutions: dict[int, Institution],
        schema: TableSchema,
    ) -> PreprocessingSpec:
        """Fit the preprocessing from the institutions' summed summaries (round 0).

        A noisy summary's shares can leave [0, 1]; their average is clipped back
        (post-processing) before the scaling is fitted.
        """
        noisy = self.settings.plan.summary_noise_multiplier is not None
        bound = PROFILE_NOISY_RANGE if noisy else 1.0
        notify_phase(self.observers, "summary")
        average = self._federated_average(
            grid,
            context,
            manager,
            institutions,
            config={**self.settings.plan.to_config(), TASK_KEY: TASK_SUMMARY, ROUND_KEY: 0},
            parameters=[],
            size=summary_size(schema),
            value_range=(-bound if noisy else 0.0, bound),
        )
        if average is not None:
            self._summary_reports = _reports(average.metrics)
        if average is None or average.rows <= 0:
            raise FederationError("the federated summary failed: no institution's summary arrived")
        return PreprocessingSpec.from_summary(schema, np.clip(average.vector, 0.0, 1.0))

    def _federated_average(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        institutions: dict[int, Institution],
        *,
        config: dict[str, Scalar],
        parameters: list[np.ndarray],
        size: int,
        value_range: tuple[float, float],
        asked: set[int] | None = None,
    ) -> FederatedAverage | None:
        """``federated_average`` through SecAgg+ when the run uses it, else in the clear;
        ``asked`` (default: every institution) are the nodes asked."""
        asked = set(institutions) if asked is None else asked
        workflow = plain_fit_workflow(timeout_s=self.settings.round_timeout_s)
        if self.settings.secagg is not None:
            # Flower's SecAgg+ mod scales a reply by weight / max_weight and then clips
            # it: a weight above max_weight loses part of the reply. The census holds
            # the published (noisy) row counts, and a node may weigh an exact release
            # (its consent) by its exact rows, which can exceed every published count;
            # headroom keeps such a reply whole (at one bit of quantization precision).
            secagg = self._secagg_parameters(
                len(asked),
                clipping_range=max(abs(value_range[0]), abs(value_range[1])),
                max_weight=2 * max(i.num_train for i in institutions.values()) + 64,
            )
            workflow = secure_fit_workflow(secagg)
        return federated_average(
            grid,
            context,
            manager,
            allowed=asked,
            config=config,
            parameters=parameters,
            size=size,
            value_range=value_range,
            workflow=workflow,
        )

    def _evaluate(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        institutions: dict[int, Institution],
        *,
        strategy: FedwardenStrategy,
        weights: list[np.ndarray],
        preprocessing: str,
        server_round: int,
    ) -> None:
        """Federated evaluation of ``weights`` as one secure sum (SecAgg+ when the run uses it).

        Each institution sends its accuracy and mean loss on its held-out rows, weighted by
        its published test count; the coordinator learns only their weighted average (no
        institution's own accuracy), and a node sends it in the clear only where its policy
        allows (a run without secure aggregation). A run that samples a fraction of the
        institutions to train (``fraction-fit`` < 1, cross-device style) evaluates on a
        sample of the same size, drawn afresh each round.
        """
        config: dict[str, Scalar] = {
            **self.settings.plan.to_config(),
            TASK_KEY: TASK_EVALUATE,
            ROUND_KEY: server_round,
            PREPROCESSING_KEY: preprocessing,
        }
        average = self._federated_average(
            grid,
            context,
            manager,
            institutions,
            config=config,
            parameters=weights,
            size=EVALUATION_SIZE,
            value_range=(0.0, EVALUATION_LOSS_CAP),
            asked=self._evaluation_sample(strategy, server_round),
        )
        log = strategy.logs.setdefault(server_round, RoundLog())
        if average is None or average.rows <= 0:
            logger.warning("round %d: no institution's evaluation arrived", server_round)
            return
        accuracy, loss = (float(v) for v in average.vector)
        log.accuracy = min(max(accuracy, 0.0), 1.0)
        log.loss = loss

    def _evaluation_sample(self, strategy: FedwardenStrategy, server_round: int) -> set[int]:
        """The nodes asked to evaluate ``server_round``'s model: all, or a seeded sample."""
        everyone = sorted(strategy.institutions)
        fraction = self.settings.strategy.fraction_fit
        if fraction >= 1:
            return set(everyone)
        size = min(len(everyone), max(self._least_per_round(), math.ceil(len(everyone) * fraction)))
        # Which institutions evaluate is public (the coordinator's choice), not DP noise.
        chooser = random.Random(f"{self.settings.plan.seed}/evaluate/{server_round}")
        return set(chooser.sample(everyone, size))

    def _profile(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        institutions: dict[int, Institution],
        *,
        schema: TableSchema,
        weights: list[np.ndarray],
        preprocessing: str,
        server_round: int,
    ) -> tuple[ReferenceProfile | None, list[FitReport]]:
        """The federation's reference profile under ``weights`` (when the run config asks)."""
        notify_phase(self.observers, "profile")
        profile_settings = self.settings.profile
        if not profile_settings.enabled:
            return None, []
        bound = profile_settings.value_range
        average = self._federated_average(
            grid,
            context,
            manager,
            institutions,
            config=profile_task(
                plan=self.settings.plan,
                preprocessing=preprocessing,
                server_round=server_round,
                settings=profile_settings,
            ),
            parameters=weights,
            size=federation_layout(schema).size,
            value_range=(-bound, bound),
        )
        if average is None:
            logger.warning("no institution sent its profile: the run has no reference profile")
            return None, []
        return assemble_profile(
            schema=schema,
            average=average.vector,
            rows=average.rows,
            metrics=average.metrics,
            server_round=server_round,
            settings=profile_settings,
        )

    def _initial_weights(
        self, grid: Grid, institutions: dict[int, Institution], preprocessing: str
    ) -> list[np.ndarray]:
        """Ask one institution for the seeded initial model (the coordinator has no model code)."""
        notify_phase(self.observers, "initial model")
        config: dict[str, Scalar] = {
            **self.settings.plan.to_config(),
            TASK_KEY: TASK_INIT,
            PREPROCESSING_KEY: preprocessing,
        }
        for node_id in sorted(institutions, key=lambda n: institutions[n].name):
            message = Message(
                content=compat.getparametersins_to_recorddict(GetParametersIns(config=config)),
                dst_node_id=node_id,
                message_type=MessageTypeLegacy.GET_PARAMETERS,
                group_id="init",
            )
            for reply in grid.send_and_receive([message], timeout=self.settings.round_timeout_s):
                if reply.has_error():
                    logger.warning(
                        "%s could not build the initial model: %s",
                        institutions[node_id].name,
                        reply.error.reason,
                    )
                    continue
                res = compat.recorddict_to_getparametersres(reply.content, keep_input=False)
                if res.status.code == Code.OK:
                    return parameters_to_ndarrays(res.parameters)
        raise FederationError("no institution could build the initial model")

    def _fit_workflow(
        self,
        strategy: FedwardenStrategy,
        manager: ClientManager,
        schedulable: int,
        institutions: dict[int, Institution],
    ) -> tuple[Workflow, SecAggParameters | None]:
        if self.settings.secagg is None:
            return plain_fit_workflow(timeout_s=self.settings.round_timeout_s), None
        sampled = max(
            self._least_per_round(), int(schedulable * self.settings.strategy.fraction_fit)
        )
        plan = self.settings.plan
        parameters = self._secagg_parameters(
            sampled,
            clipping_range=plan.effective_update_clip_norm,
            max_weight=1.0
            if plan.uniform_weights
            else max(i.num_train for i in institutions.values()),
        )
        return secure_fit_workflow(parameters), parameters

    def _secagg_parameters(
        self, count: int, *, clipping_range: float, max_weight: float
    ) -> SecAggParameters:
        secagg = self.settings.secagg
        assert secagg is not None
        return derive_secagg_parameters(
            num_institutions=count,
            clipping_range=clipping_range,
            max_weight=max_weight,
            num_shares=secagg.num_shares,
            reconstruction_threshold=secagg.reconstruction_threshold,
            timeout_s=secagg_timeout_s(
                configured_s=secagg.timeout_s or self.settings.round_timeout_s,
                previous_round_s=self._last_secure_s,
            ),
            min_participants=secagg.min_participants,
        )

    def _least_per_round(self) -> int:
        """The fewest institutions a round may have: k with secure aggregation, else 2."""
        secagg = self.settings.secagg
        return 2 if secagg is None else max(2, secagg.min_participants)



def _reports(metrics: list[dict[str, Scalar]]) -> list[FitReport]:
    """The institutions' reports among a federated average's metrics (unreadable ones left out)."""
    reports = []
    for entry in metrics:
        try:
            reports.append(FitReport.from_metrics(dict(entry)))
        except ConfigError as exc:
            logger.warning("an unreadable report: %s", exc)
    return reports


def _stop_reason(server_round: int, schedulable: int, *, least: int) -> str | None:
    """Why round ``server_round`` must not run with ``schedulable`` institutions, if it must not."""
    if schedulable < 2:
        return (
            f"stopped before round {server_round}: fewer than two institutions can "
            "afford another round within their privacy budgets"
        )
    if schedulable < least:
        # Their sum would say too much about each: no secure round of fewer than k.
        return (
            f"stopped before round {server_round}: only {schedulable} institutions can afford "
            f"another round, fewer than the {least} a secure sum needs (min-secure-participants)"
        )
    return None


def _record(
    strategy: FedwardenStrategy,
    server_round: int,
    secagg: SecAggParameters | None,
    duration_s: float,
) -> RoundRecord:
    log = strategy.logs.get(server_round)
    if log is None:
        return RoundRecord(
            round=server_round,
            loss=None,
            accuracy=None,
            accuracy_by_institution={},
            epsilon=dict(strategy.epsilon),
            participants=[],
            aggregated=False,
            central_epsilon=strategy.central_epsilon(),
            duration_s=duration_s,
        )
    return RoundRecord(
        round=server_round,
        loss=log.loss,
        accuracy=log.accuracy,
        accuracy_by_institution=dict(log.accuracy_by_institution),
        epsilon=dict(strategy.epsilon),
        participants=sorted(log.trained),
        refused=dict(log.refused),
        rejected=dict(log.rejected),
        dropped=dict(log.dropped),
        reports=list(log.reports),
        aggregated=log.aggregated,
        discarded=log.discarded,
        secagg=secagg.to_dict() if secagg is not None else None,
        central_epsilon=strategy.central_epsilon(),
        duration_s=duration_s,
    )
