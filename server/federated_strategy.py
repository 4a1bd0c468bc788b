"""``FedwardenStrategy``: Flower's chosen strategy, wrapped with what fedwarden adds.

Institutions send deltas (local minus global weights); the wrapper turns each
accepted delta back into weights before Flower's strategy aggregates them, so
FedAvg, FedAdam, FedMedian and friends run unchanged. Around that it

* adds the round's plan and preprocessing to every instruction,
* leaves out institutions that cannot afford another round (their own budget or
  the federation's ε cap, from what they reported),
* drops replies that are refused, malformed (wrong shape, NaN/Inf), larger
  than the update bound or weighted by more rows than the institution declared
  in the census, each with a logged reason, before anything is aggregated,
* checks the average itself before it is applied: every update is bounded by
  the plan's norm C, so their weighted average is too, and an average that is
  not finite or exceeds C (under SecAgg+, where single updates cannot be seen;
  or a reply under SecAgg+ claiming more rows than its census, which would
  corrupt the masked weight) discards the whole round (``RoundLog.discarded``),
  leaving the global model as it was, and
* keeps a log of each round for the run's records.

What the checks cannot catch: a hostile institution that sends a finite update
within the bound (its influence is then that of any honest update of its
weight), or one that declared more rows in the census than it has.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy

from client.contract.plan import TrainingPlan
from client.contract.report import FitReport
from client.contract.wire import (
    PREPROCESSING_KEY,
    ROUND_KEY,
    TASK_KEY,
    TASK_TRAIN,
)
from privacy.accounting import AccountingStep, compute_epsilon
from privacy.errors import ConfigError, UpdateRejectedError
from privacy.updates import update_norm, validate_update
from server.checkpoint_format import RunCheckpoint, capture_strategy_state, restore_strategy_state
from server.config import CentralDPSettings
from server.errors import NodeFailedError
from server.run_events import Institution

logger = logging.getLogger(__name__)

_NORM_TOLERANCE = 1e-5
_SECURE_NORM_TOLERANCE = 1e-2
"""SecAgg+ quantizes: the unmasked average is within a few quantization steps of the true one."""


@dataclass
class RoundLog:
    """What the strategy saw in one round."""

    sampled: dict[int, str] = field(default_factory=dict)
    reports: list[FitReport] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    aggregated: bool = False
    discarded: str | None = None
    loss: float | None = None
    accuracy: float | None = None
    accuracy_by_institution: dict[str, float] = field(default_factory=dict)


class FedwardenStrategy(Strategy):
    """Wraps a Flower strategy; see the module docstring."""

    def __init__(
        self,
        inner: Strategy,
        *,
        plan: TrainingPlan,
        preprocessing: str,
        institutions: dict[int, Institution],
        secure: bool,
        epsilon_cap: float | None = None,
        central_dp: CentralDPSettings | None = None,
    ) -> None:
        self.central_dp = central_dp
        self.central_rounds = 0
        if central_dp is not None:
            # Flower's wrapper adds N(0, (σ·S/n)²) to the average of n updates clipped to
            # S on the client; n is set each round to the updates really averaged.
            inner = DifferentialPrivacyClientSideFixedClipping(
                inner,
                noise_multiplier=central_dp.noise_multiplier,
                clipping_norm=plan.effective_update_clip_norm,
                num_sampled_clients=1,
            )
        self.inner = inner
        self.plan = plan
        self.preprocessing = preprocessing
        self.institutions = institutions
        self.secure = secure
        self.epsilon_cap = epsilon_cap
        self.epsilon: dict[str, float] = {i.name: 0.0 for i in institutions.values()}
        self.exhausted: dict[int, str] = {}
        self.logs: dict[int, RoundLog] = {}
        self._global: list[np.ndarray] = []

    # ------------------------------------------------------------------ checkpoints

    @property
    def base_strategy(self) -> Strategy:
        """Flower's aggregation strategy, under the central-DP wrapper if there is one."""
        if isinstance(self.inner, DifferentialPrivacyClientSideFixedClipping):
            return self.inner.strategy
        return self.inner

    def checkpoint(
        self,
        *,
        server_round: int,
        weights: list[np.ndarray],
        preprocessing: str,
        model_spec: dict[str, object],
        run_config: dict[str, object],
    ) -> RunCheckpoint:
        """The state a resumed run needs to carry on after ``server_round``."""
        return RunCheckpoint(
            round=server_round,
            weights=weights,
            preprocessing=preprocessing,
            model_spec=dict(model_spec),
            run_config=dict(run_config),
            strategy_state=capture_strategy_state(self.base_strategy),
            epsilon=dict(self.epsilon),
            exhausted={self._name(node): why for node, why in self.exhausted.items()},
            central_rounds=self.central_rounds,
        )

    def restore(self, checkpoint: RunCheckpoint) -> None:
        """Carry on from ``checkpoint``: ledger snapshot, scheduling, strategy state."""
        self.epsilon.update(checkpoint.epsilon)
        by_name = {i.name: node for node, i in self.institutions.items()}
        for name, reason in checkpoint.exhausted.items():
            if name in by_name:
                self.exhausted[by_name[name]] = reason
        self.central_rounds = checkpoint.central_rounds
        restore_strategy_state(self.base_strategy, checkpoint.strategy_state)

    # ------------------------------------------------------------------ scheduling

    def schedulable(self) -> list[Institution]:
        """Institutions that may still be asked to train."""
        return [i for nid, i in self.institutions.items() if nid not in self.exhausted]

    def _name(self, node_id: int) -> str:
        known = self.institutions.get(node_id)
        return known.name if known is not None else f"node-{node_id}"

    def _log(self, server_round: int) -> RoundLog:
        return self.logs.setdefault(server_round, RoundLog())

    # ------------------------------------------------------------------ Flower API

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None  # the orchestrator puts the initial weights in the run state

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._global = parameters_to_ndarrays(parameters)
        scheduler = SchedulingClientManager(
            client_manager,
            allowed=set(self.institutions) - set(self.exhausted),
            seed=self.plan.seed * 100_003 + server_round,
        )
        pairs = self.inner.configure_fit(server_round, parameters, scheduler)
        extra = {
            **self.plan.to_config(),
            TASK_KEY: TASK_TRAIN,
            ROUND_KEY: server_round,
            PREPROCESSING_KEY: self.preprocessing,
        }
        log = self._log(server_round)
        log.sampled = {proxy.node_id: self._name(proxy.node_id) for proxy, _ in pairs}
        return [(proxy, FitIns(ins.parameters, {**ins.config, **extra})) for proxy, ins in pairs]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        log = self._log(server_round)
        shapes = [a.shape for a in self._global]
        accepted: list[tuple[ClientProxy, FitRes]] = []
        answered: set[int] = set()
        discard: str | None = None  # under SecAgg+ one bad reply spoils the whole sum
        for proxy, res in results:
            answered.add(proxy.node_id)
            name = self._name(proxy.node_id)
            if not self._take_report(log, server_round, name, proxy.node_id, res):
                continue
            overclaim = self._overclaim(proxy.node_id, res.num_examples)
            if overclaim is not None:
                if self.secure:  # its weight is inside the masked sum
                    discard = discard or f"{name}: {overclaim}"
                else:
                    self._reject(log, name, overclaim)
                continue
            delta = parameters_to_ndarrays(res.parameters)
            try:
                validate_update(delta, expected_shapes=shapes)
                if not self.secure:
                    self._check_bound(delta)
            except UpdateRejectedError as exc:
                if self.secure:  # the unmasked sum itself is malformed
                    discard = discard or f"the aggregated update: {exc}"
                else:
                    self._reject(log, name, str(exc))
                continue
            weights = [g + d.astype(g.dtype) for g, d in zip(self._global, delta, strict=True)]
            accepted.append(
                (proxy, FitRes(res.status, ndarrays_to_parameters(weights), res.num_examples, {}))
            )
            log.trained.append(name)
        for failure in failures:
            self._record_failure(log, failure)
        for node_id, name in log.sampled.items():
            if node_id not in answered and name not in log.dropped:
                log.dropped[name] = "no reply (dropped out of the round)"
        if discard is not None:
            return self._discard(log, server_round, discard)
        if not accepted:
            logger.warning(
                "round %d: no update to aggregate; the global model is unchanged", server_round
            )
            return None, {}
        problem = self._check_average(accepted)
        if problem is not None:
            return self._discard(log, server_round, problem)
        if isinstance(self.inner, DifferentialPrivacyClientSideFixedClipping):
            self.inner.num_sampled_clients = len(accepted)
        aggregated, _ = self.inner.aggregate_fit(server_round, accepted, [])
        log.aggregated = aggregated is not None
        if log.aggregated and self.central_dp is not None:
            self.central_rounds += 1
        return aggregated, {}

    def central_epsilon(self) -> float | None:
        """Institution-level ε of the global model so far (``None`` without central DP).

        Each noised round is a Gaussian mechanism on the average, with every
        institution taking part (no sampling amplification is claimed).
        """
        if self.central_dp is None:
            return None
        if self.central_rounds == 0:
            return 0.0
        step = AccountingStep(
            noise_multiplier=self.central_dp.noise_multiplier,
            sample_rate=1.0,
            steps=self.central_rounds,
        )
        return compute_epsilon(
            [step], delta=self.central_dp.delta, accountant=self.plan.dp.accountant
        )

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []  # evaluation is one secure sum of the round (``Federation._evaluate``)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None  # the coordinator holds no data: evaluation is federated

    # ------------------------------------------------------------------ helpers

    def _take_report(
        self, log: RoundLog, server_round: int, name: str, node_id: int, res: FitRes
    ) -> bool:
        """Account for a reply's report; whether its update is to be looked at."""
        try:
            report = FitReport.from_metrics(dict(res.metrics))
        except ConfigError as exc:
            self._reject(log, name, f"unreadable report: {exc}")
            return False
        log.reports.append(report)
        self._schedule_next(node_id, report)
        self.epsilon[name] = report.epsilon if report.dp else math.inf
        if report.refused or res.num_examples == 0:
            log.refused[name] = report.reason or "no training rows"
            logger.warning("round %d: %s refused: %s", server_round, name, log.refused[name])
            return False
        return True

    def _overclaim(self, node_id: int, num_examples: int) -> str | None:
        """Why a reply's weight cannot be accepted: more rows than the census declared."""
        declared = self.institutions.get(node_id)
        if declared is None or num_examples <= max(declared.num_train, 1):
            return None
        return (
            f"the reply claims {num_examples} training rows; the census declared "
            f"{declared.num_train}"
        )

    def _check_average(self, accepted: list[tuple[ClientProxy, FitRes]]) -> str | None:
        """Why the weighted average of the accepted updates must not be applied, if it must not.

        Under SecAgg+ every result carries the same unmasked average (as weights);
        in the clear the average is computed here from the accepted deltas.
        """
        if not accepted:
            return None
        if self.secure:
            weights = parameters_to_ndarrays(accepted[0][1].parameters)
            average = [w.astype(np.float64) - g for w, g in zip(weights, self._global, strict=True)]
            tolerance = _SECURE_NORM_TOLERANCE
        else:
            total = float(sum(res.num_examples for _, res in accepted))
            average = [np.zeros(g.shape, dtype=np.float64) for g in self._global]
            for _, res in accepted:
                share = res.num_examples / total
                for k, (w, g) in enumerate(
                    zip(parameters_to_ndarrays(res.parameters), self._global, strict=True)
                ):
                    average[k] += share * (w.astype(np.float64) - g)
            tolerance = _NORM_TOLERANCE
        if not all(np.all(np.isfinite(a)) for a in average):
            return "the aggregated update is not finite (NaN or Inf)"
        bound = self.plan.effective_update_clip_norm
        norm = update_norm(average)
        if not norm <= bound * (1 + tolerance):
            return (
                f"the aggregated update's norm {norm:.4g} exceeds the plan's bound {bound:.4g}, "
                "which no average of bounded updates can"
            )
        return None

    def _discard(
        self, log: RoundLog, server_round: int, reason: str
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Drop the whole round: nothing is applied, the global model stays as it was."""
        log.discarded = reason
        log.trained.clear()
        log.aggregated = False
        logger.error("round %d discarded, the global model is unchanged: %s", server_round, reason)
        return None, {}

    def _check_bound(self, delta: list[np.ndarray]) -> None:
        bound = self.plan.effective_update_clip_norm
        norm = update_norm(delta)
        if norm > bound * (1 + _NORM_TOLERANCE):
            raise UpdateRejectedError(
                f"update norm {norm:.4g} exceeds the plan's bound {bound:.4g}", norm=norm
            )

    def _reject(self, log: RoundLog, name: str, reason: str) -> None:
        log.rejected[name] = reason
        logger.error("dropping %s's update from the round: %s", name, reason)

    def _record_failure(
        self, log: RoundLog, failure: tuple[ClientProxy, FitRes] | BaseException
    ) -> None:
        if isinstance(failure, NodeFailedError):
            name, reason = self._name(failure.node_id), failure.reason
        elif isinstance(failure, BaseException):
            name, reason = "", str(failure)
        else:
            name, reason = self._name(failure[0].node_id), failure[1].status.message
        logger.warning("a node failed this round: %s %s", name or "(unknown node)", reason)
        if name:
            log.dropped[name] = reason

    def _schedule_next(self, node_id: int, report: FitReport) -> None:
        """Leave an institution out of later rounds once it cannot afford one more."""
        if not report.dp:
            return
        limit = report.epsilon_budget
        if self.epsilon_cap is not None:
            limit = min(limit, self.epsilon_cap)
        if report.epsilon_next > limit + 1e-6:
            reason = (
                f"one more round would take ε to {report.epsilon_next:.4g}, past "
                f"{'the federation cap' if limit == self.epsilon_cap else 'its budget'} {limit:.4g}"
            )
            if node_id not in self.exhausted:
                logger.info("%s will not be scheduled again: %s", report.institution, reason)
            self.exhausted[node_id] = reason


class SchedulingClientManager(ClientManager):
    """A view of a client manager that offers only ``allowed`` nodes and never blocks."""

    def __init__(self, inner: ClientManager, *, allowed: set[int], seed: int) -> None:
        self.inner = inner
        self.allowed = allowed
        self.random = random.Random(seed)

    def all(self) -> dict[str, ClientProxy]:
        return {cid: p for cid, p in self.inner.all().items() if p.node_id in self.allowed}

    def num_available(self) -> int:
        return len(self.all())

    def register(self, client: ClientProxy) -> bool:
        return self.inner.register(client)

    def unregister(self, client: ClientProxy) -> None:
        self.inner.unregister(client)

    def wait_for(self, num_clients: int, timeout: int) -> bool:
        return self.num_available() >= num_clients

    def sample(
        self,
        num_clients: int,
        min_num_clients: int | None = None,
        criterion: Criterion | None = None,
    ) -> list[ClientProxy]:
        candidates = [
            p
            for p in sorted(self.all().values(), key=lambda p: p.node_id)
            if criterion is None or criterion.select(p)
        ]
        if len(candidates) < (min_num_clients or 1):
            return []
        return self.random.sample(candidates, min(num_clients, len(candidates)))
