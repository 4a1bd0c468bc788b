"""The coordinator's run: census, federated summary, initial model, the rounds, the profile.

``Federation.run`` is what the ServerApp's ``main`` calls. Each phase goes through
Flower's grid; training rounds go through ``plain_fit_workflow`` or, with secure
aggregation, Flower's ``SecAggPlusWorkflow``, and so do the summary from which
the preprocessing is fitted and the reference profile drift is measured against.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    GetParametersIns,
    GetPropertiesIns,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import Strategy
from flwr.server.strategy.aggregate import aggregate
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp.grid import Grid

from client.flower_client import PREPROCESSING_KEY
from client.plan import TASK_INIT, TASK_KEY, TASK_SUMMARY
from client.preprocessing import PreprocessingSpec, summary_size
from client.profile import ProfileLayout, ReferenceProfile
from client.report import FitReport
from client.schema import TableSchema
from privacy.secagg import SecAggParameters, derive_secagg_parameters
from server.checkpoints import RunCheckpoint
from server.config import FederationSettings
from server.errors import FederationError
from server.federated_strategy import FedwardenStrategy, SchedulingClientManager
from server.profiling import assemble_profile, profile_settings_from_run_config, profile_task
from server.records import Institution, RoundRecord, RunObserver, RunResult, RunStart
from server.strategies import build_strategy
from server.workflows import Workflow, evaluate_workflow, plain_fit_workflow, secure_fit_workflow

logger = logging.getLogger(__name__)

_SUMMARY_TOLERANCE = 1e-3


class Federation:
    """Runs one federation with ``settings``, reporting to ``observers``."""

    def __init__(
        self,
        settings: FederationSettings,
        observers: Sequence[RunObserver] = (),
        *,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.observers = list(observers)
        self.run_config = dict(run_config or {})

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
        wanted = settings.min_institutions
        if not manager.wait_for(wanted, timeout=int(settings.wait_timeout_s)):
            raise FederationError(
                f"only {manager.num_available()} of the {wanted} institutions needed connected "
                f"within {settings.wait_timeout_s:g} s"
            )
        institutions, schema = self._census(grid, manager)
        secure = settings.secagg is not None
        if resume is None:
            spec = self._summary(grid, context, manager, institutions, schema)
            preprocessing = spec.to_json()
            initial = self._initial_weights(grid, institutions, preprocessing)
            first_round = 1
        else:
            spec = PreprocessingSpec.from_json(resume.preprocessing)
            if spec.schema.fingerprint() != schema.fingerprint():
                raise FederationError(
                    "cannot resume: the institutions' schema differs from the checkpoint's"
                )
            preprocessing, initial = resume.preprocessing, resume.weights
            first_round = resume.round + 1
            logger.info("resuming after round %d", resume.round)
        model_spec = settings.plan.model_spec(spec).to_dict()
        strategy = FedwardenStrategy(
            build_strategy(
                settings.strategy,
                initial_parameters=ndarrays_to_parameters(initial),
                min_clients=2,
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
            context=_fresh(context),
            config=ServerConfig(num_rounds=settings.plan.num_rounds),
            strategy=strategy,
            client_manager=manager,
        )
        legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(initial)
        round_config = ConfigRecord()
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = round_config
        start = RunStart(
            institutions=sorted(institutions.values(), key=lambda i: i.name),
            settings=_describe(settings),
            secure=secure,
            first_round=first_round,
            preprocessing=preprocessing,
            model_spec=model_spec,
        )
        for observer in self.observers:
            observer.on_run_start(start)

        evaluate = evaluate_workflow(timeout_s=settings.round_timeout_s)
        records: list[RoundRecord] = []
        stopped = "completed every round"
        for server_round in range(first_round, settings.plan.num_rounds + 1):
            schedulable = strategy.schedulable()
            if len(schedulable) < 2:
                stopped = (
                    f"stopped before round {server_round}: fewer than two institutions can "
                    "afford another round within their privacy budgets"
                )
                logger.warning(stopped)
                break
            round_config[Key.CURRENT_ROUND] = server_round
            began = time.perf_counter()
            fit, secagg = self._fit_workflow(strategy, manager, len(schedulable), institutions)
            fit(grid, legacy)
            evaluate(grid, legacy)
            checkpoint = strategy.checkpoint(
                server_round=server_round,
                weights=_weights(legacy),
                preprocessing=preprocessing,
                model_spec=model_spec,
                run_config=self.run_config,
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
            weights=_weights(legacy),
            preprocessing=preprocessing,
            server_round=records[-1].round if records else first_round - 1,
        )

        result = RunResult(
            weights=_weights(legacy),
            model_spec=model_spec,
            preprocessing=preprocessing,
            rounds=records,
            stopped_reason=stopped,
            profile=profile,
            profile_reports=profile_reports,
        )
        for observer in self.observers:
            observer.on_run_end(result)
        return result

    def _census(
        self, grid: Grid, manager: ClientManager
    ) -> tuple[dict[int, Institution], TableSchema]:
        """Ask every connected node who it is; keep those that share the majority's schema."""
        node_ids = sorted(proxy.node_id for proxy in manager.all().values())
        content = compat.getpropertiesins_to_recorddict(GetPropertiesIns(config={}))
        messages = [
            Message(
                content=content,
                dst_node_id=node_id,
                message_type=MessageTypeLegacy.GET_PROPERTIES,
                group_id="census",
            )
            for node_id in node_ids
        ]
        properties: dict[int, dict[str, Scalar]] = {}
        for reply in grid.send_and_receive(messages, timeout=self.settings.round_timeout_s):
            if reply.has_error():
                logger.warning(
                    "node %d did not answer the census: %s",
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            res = compat.recorddict_to_getpropertiesres(reply.content)
            if res.status.code == Code.OK:
                properties[reply.metadata.src_node_id] = res.properties
        fingerprints = Counter(str(p.get("fw.schema-fingerprint")) for p in properties.values())
        if not fingerprints:
            raise FederationError("no institution answered the census")
        majority, _ = fingerprints.most_common(1)[0]
        institutions: dict[int, Institution] = {}
        schema: TableSchema | None = None
        for node_id, props in properties.items():
            if props.get("fw.schema-fingerprint") != majority:
                logger.error(
                    "leaving out %s: its schema differs from the federation's",
                    props.get("fw.institution"),
                )
                continue
            schema = schema or TableSchema.model_validate_json(str(props["fw.schema"]))
            institutions[node_id] = Institution(
                node_id=node_id,
                name=str(props["fw.institution"]),
                num_train=int(props["fw.num-train"]),
                num_test=int(props["fw.num-test"]),
                budget_epsilon=float(props["fw.budget-epsilon"]),
                budget_delta=float(props["fw.budget-delta"]),
                require_secagg=bool(props["fw.require-secagg"]),
            )
        claimed = Counter(i.name for i in institutions.values())
        for name in sorted(n for n, count in claimed.items() if count > 1):
            # Two nodes speak for one institution: at most one is genuine, and which one
            # cannot be told here, so neither takes part; the run goes on without them.
            nodes = sorted(nid for nid, i in institutions.items() if i.name == name)
            logger.error(
                "leaving out nodes %s: each claims to be %s (a misconfigured or "
                "impersonating node)",
                nodes,
                name,
            )
            for node_id in nodes:
                del institutions[node_id]
        names = [i.name for i in institutions.values()]
        if len(institutions) < self.settings.min_institutions or schema is None:
            raise FederationError(
                f"{len(institutions)} institution(s) share a schema; "
                f"{self.settings.min_institutions} are needed"
            )
        if self.settings.secagg is None:
            strict = sorted(i.name for i in institutions.values() if i.require_secagg)
            if strict:
                logger.warning(
                    "%s require secure aggregation and will refuse rounds run without it",
                    ", ".join(strict),
                )
        logger.info("census: %s", ", ".join(sorted(names)))
        return institutions, schema

    def _summary(
        self,
        grid: Grid,
        context: Context,
        manager: ClientManager,
        institutions: dict[int, Institution],
        schema: TableSchema,
    ) -> PreprocessingSpec:
        """Fit the preprocessing from the institutions' summed summaries (round 0)."""
        average = self._federated_average(
            grid,
            context,
            manager,
            institutions,
            config={TASK_KEY: TASK_SUMMARY},
            parameters=[],
            size=summary_size(schema),
            value_range=(0.0, 1.0),
        )
        if average is None or average.rows <= 0:
            raise FederationError("the federated summary failed: no institution's summary arrived")
        return PreprocessingSpec.from_summary(schema, average.vector)

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
    ) -> FederatedAverage | None:
        """The row-weighted average of one vector per institution, in one fit round.

        Each institution answers the task in ``config`` (with ``parameters`` as
        the instruction's arrays) with a vector of ``size`` values within
        ``value_range``, weighted by its rows. With secure aggregation only the
        weighted sum is ever unmasked. ``None`` when no vector arrived.
        """
        strategy = _AverageStrategy(
            size=size,
            allowed=set(institutions),
            config=config,
            parameters=parameters,
            value_range=value_range,
        )
        legacy = LegacyContext(
            context=_fresh(context),
            config=ServerConfig(num_rounds=0),
            strategy=strategy,
            client_manager=manager,
        )
        legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(parameters)
        legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 0})
        if self.settings.secagg is not None:
            secagg = self._secagg_parameters(
                len(institutions),
                clipping_range=max(abs(value_range[0]), abs(value_range[1])),
                max_weight=max(i.num_train for i in institutions.values()),
            )
            secure_fit_workflow(secagg)(grid, legacy)
        else:
            plain_fit_workflow(timeout_s=self.settings.round_timeout_s)(grid, legacy)
        return strategy.result

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
        profile_settings = profile_settings_from_run_config(self.run_config)
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
            size=ProfileLayout.for_schema(schema).size,
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
        sampled = max(2, int(schedulable * self.settings.strategy.fraction_fit))
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
            timeout_s=secagg.timeout_s or self.settings.round_timeout_s,
        )


@dataclass(frozen=True)
class FederatedAverage:
    """A row-weighted average of the institutions' vectors, the rows behind it, their reports."""

    vector: np.ndarray
    rows: float
    metrics: list[dict[str, Scalar]]


class _AverageStrategy(Strategy):
    """One fit round in which every institution sends a vector; keep their weighted average."""

    def __init__(
        self,
        *,
        size: int,
        allowed: set[int],
        config: dict[str, Scalar],
        parameters: list[np.ndarray],
        value_range: tuple[float, float],
    ) -> None:
        self.size = size
        self.allowed = allowed
        self.config = config
        self.parameters = parameters
        self.low, self.high = value_range
        self.result: FederatedAverage | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        scheduler = SchedulingClientManager(client_manager, allowed=self.allowed, seed=0)
        proxies = sorted(scheduler.all().values(), key=lambda p: p.node_id)
        ins = FitIns(ndarrays_to_parameters(self.parameters), dict(self.config))
        return [(proxy, ins) for proxy in proxies]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        accepted = []
        metrics = []
        for proxy, res in results:
            if res.num_examples <= 0:
                # A refusal weighs nothing: its report counts, its vector does not. (Under
                # SecAgg+ every result carries the unmasked aggregate, which is not finite
                # when every institution refused.)
                metrics.append(dict(res.metrics))
                continue
            arrays = parameters_to_ndarrays(res.parameters)
            if (
                len(arrays) != 1
                or arrays[0].shape != (self.size,)
                or not np.all(np.isfinite(arrays[0]))
                or arrays[0].min() < self.low - _SUMMARY_TOLERANCE
                or arrays[0].max() > self.high + _SUMMARY_TOLERANCE
            ):
                logger.error("dropping a malformed vector from node %d", proxy.node_id)
                continue
            metrics.append(dict(res.metrics))
            accepted.append((arrays, res.num_examples))
        for failure in failures:
            logger.warning("a node's vector failed: %s", failure)
        if accepted:
            self.result = FederatedAverage(
                vector=np.clip(aggregate(accepted)[0], self.low, self.high),
                rows=float(sum(weight for _, weight in accepted)),
                metrics=metrics,
            )
        elif metrics:
            self.result = FederatedAverage(vector=np.zeros(self.size), rows=0.0, metrics=metrics)
        return None, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[Any]:
        return []

    def aggregate_evaluate(
        self, server_round: int, results: list[Any], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


def _weights(legacy: LegacyContext) -> list[np.ndarray]:
    return parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
    )


def _fresh(context: Context) -> Context:
    """A copy of ``context`` with its own state, so phases do not share records."""
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=RecordDict(),
        run_config=context.run_config,
    )


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


def _describe(settings: FederationSettings) -> dict[str, Any]:
    plan = settings.plan
    return {
        "plan": {**plan.to_config()},
        "strategy": settings.strategy.name,
        "secagg": settings.secagg is not None,
        "min_institutions": settings.min_institutions,
        "epsilon_cap": settings.epsilon_cap,
    }
