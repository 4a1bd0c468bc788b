"""The institution's Flower client: summaries, DP-SGD rounds under a budget, evaluation.

Every training reply is a *delta* (local weights minus the global weights),
clipped to the plan's update bound, so that it fits secure aggregation's
quantization range; a refused round replies with a zero delta and zero examples.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.client import NumPyClient

from client.contract.evaluation import EVALUATION_SIZE, evaluation_vector
from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.contract.profile import federation_layout
from client.contract.report import FitReport
from client.contract.wire import (
    ACCURACY_KEY,
    INSTITUTION_KEY,
    PREPROCESSING_KEY,
    PROXIMAL_MU_KEY,
    ROUND_KEY,
    TASK_EVALUATE,
    TASK_INIT,
    TASK_KEY,
    TASK_PROFILE,
    TASK_SUMMARY,
    TASK_TRAIN,
    CensusReply,
)
from client.count_release import PublishedCounts, published_counts
from client.data import InstitutionData
from client.deferred import after_reply
from client.history import continuing_noise_multiplier
from client.models import build_model, get_weights, set_weights
from client.node import NodeSettings
from client.profile_release import institution_profile, model_probabilities, noise_multiplier_of
from client.summary_release import institution_summary
from client.training import Evaluation, evaluate_model, train_locally
from privacy.account import HistoryStore, InstitutionAccount
from privacy.accounting import DEFAULT_ACCOUNTANT, AccountingStep, noise_multiplier_for
from privacy.errors import BudgetExceededError, ConfigError, PolicyRefusalError
from privacy.sampling import effective_sample_rate, steps_per_epoch, training_step
from privacy.updates import clip_update

logger = logging.getLogger(__name__)



class InstitutionClient(NumPyClient):
    """One institution in a federation (a Flower ``NumPyClient``)."""

    def __init__(
        self,
        *,
        data: InstitutionData,
        settings: NodeSettings,
        history: HistoryStore,
        state: RecordDict | None = None,
        prior: Sequence[AccountingStep] = (),
    ) -> None:
        self.data = data
        self.prior = tuple(prior)
        """What the kept history held when the run began (a run that continues earlier ones):
        derived noise spends the run's ε on top of it, never past the budget."""
        self.settings = settings
        self.history = history
        self.state = state if state is not None else RecordDict()
        """The node's run state (Flower's ``context.state``): the run's published counts."""
        self.device = _device(settings.device)

    # ------------------------------------------------------------------ Flower API

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        """The census: who this institution is, how many rows it holds (noised), its schema."""
        budget = self.settings.budget
        counts = self._published_counts(self._account(None))
        return CensusReply(
            institution=self.data.name,
            num_train=counts.train,
            num_test=counts.test,
            schema_json=self.data.schema.model_dump_json(),
            schema_fingerprint=self.data.schema.fingerprint(),
            budget_epsilon=budget.epsilon,
            budget_delta=budget.delta,
            require_secagg=self.settings.require_secagg,
            device=str(self.device),
        ).to_properties()

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        """Initial global weights, built from the plan's seed (the coordinator asks one node)."""
        if config.get(TASK_KEY) != TASK_INIT:
            raise ConfigError("get_parameters needs the init task and a plan")
        plan = TrainingPlan.from_config(config)
        spec = self._preprocessing(config)
        return get_weights(build_model(plan.model_spec(spec), seed=plan.seed))

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        task = str(config.get(TASK_KEY, TASK_TRAIN))
        self.settings.policy.check_task(task, institution=self.data.name)
        plan = TrainingPlan.from_config(config)
        server_round = int(config[ROUND_KEY])
        if task == TASK_SUMMARY:
            return self._summary(plan, server_round)
        spec = self._preprocessing(config)
        zero = [np.zeros_like(p) for p in parameters]
        if task == TASK_PROFILE:  # a refused profile is a vector of its own size
            zero = [np.zeros(federation_layout(self.data.schema).size)]
        if task == TASK_EVALUATE:
            zero = [np.zeros(EVALUATION_SIZE)]
        report = FitReport(
            institution=self.data.name,
            round=server_round,
            dp=plan.dp.enabled,
            delta=self.settings.budget.delta,
            epsilon_budget=self.settings.budget.epsilon if plan.dp.enabled else math.inf,
            schema_fingerprint=self.data.schema.fingerprint(),
        )
        if spec.schema.fingerprint() != self.data.schema.fingerprint():
            reason = "the federation's schema differs from this institution's schema"
            logger.warning("%s refuses round %d: %s", self.data.name, server_round, reason)
            return zero, 0, _replace(report, refused=True, reason=reason).to_metrics()
        if task == TASK_PROFILE:
            return self._profile(parameters, config, plan=plan, spec=spec, report=report)
        if task == TASK_EVALUATE:
            return self._secure_evaluation(parameters, plan=plan, spec=spec, report=report)

        features = spec.transform(self.data.train)
        labels = spec.labels(self.data.train)
        n = len(labels)
        account = self._account(plan)
        try:
            published = self._published_counts(account).train
        except BudgetExceededError as exc:
            return zero, 0, _replace(report, refused=True, reason=str(exc)).to_metrics()
        noise: float | None = None
        planned: AccountingStep | None = None
        if plan.dp.enabled:
            noise = self._noise_multiplier(plan, n)
        try:
            self.settings.policy.check_training(
                dp=plan.dp.enabled, noise_multiplier=noise, institution=self.data.name
            )
        except PolicyRefusalError as exc:
            logger.warning("%s refuses round %d: %s", self.data.name, server_round, exc)
            return zero, 0, _replace(report, refused=True, reason=str(exc)).to_metrics()
        if noise is not None:
            planned = training_step(
                num_examples=n,
                sample_rate=plan.sample_rate,
                local_epochs=plan.local_epochs,
                noise_multiplier=noise,
            )
            try:
                account.check([planned])
            except BudgetExceededError as exc:
                refused = _replace(
                    report,
                    refused=True,
                    reason=str(exc),
                    epsilon=exc.epsilon_spent,
                    epsilon_next=exc.epsilon_projected,
                )
                return zero, 0, refused.to_metrics()

        model = build_model(plan.model_spec(spec))
        set_weights(model, parameters)
        outcome = train_locally(
            model,
            features,
            labels,
            epochs=plan.local_epochs,
            learning_rate=plan.learning_rate,
            sample_rate=plan.sample_rate,
            noise_multiplier=noise,
            max_grad_norm=plan.dp.max_grad_norm,
            proximal_mu=float(config.get(PROXIMAL_MU_KEY, 0.0)),
            seed=self._round_seed(plan, server_round),
            device=self.device,
        )
        delta = [new - old for new, old in zip(outcome.weights, parameters, strict=True)]
        clipped = clip_update(delta, max_norm=plan.effective_update_clip_norm)
        epsilon, epsilon_next = _record_round(account, outcome.accounting)
        # The training loss is not sent: it is a statistic of the rows that no noise covers.
        report = _replace(
            report,
            num_examples=published,
            epsilon=epsilon,
            epsilon_next=epsilon_next,
            noise_multiplier=noise or 0.0,
            sample_rate=planned.sample_rate
            if planned
            else effective_sample_rate(n, plan.sample_rate),
            steps=outcome.accounting.steps if outcome.accounting else 0,
            max_grad_norm=plan.dp.max_grad_norm if plan.dp.enabled else 0.0,
            update_norm=clipped.norm,
            update_clipped=clipped.clipped,
        )
        logger.info(
            "%s round %d: loss %.4f, ε %.4g of %.4g",
            self.data.name,
            server_round,
            outcome.mean_loss,
            epsilon,
            self.settings.budget.epsilon,
        )
        # The weight of this update in the average: its published (noised) rows, or 1
        # when every institution counts equally (central DP bounds each one's share).
        weight = 1 if plan.uniform_weights else published
        return clipped.arrays, weight, report.to_metrics()

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        """An institution's own evaluation, in the clear: only where its policy allows it
        (``allow_clear_evaluation``); the federation's evaluation is a secure sum, the
        ``evaluate`` fit task."""
        self.settings.policy.check_task(TASK_EVALUATE, institution=self.data.name)
        if not self.settings.policy.allow_clear_evaluation:
            raise PolicyRefusalError(
                f"{self.data.name} refuses to send an exact evaluation in the clear: its policy "
                "allows it only into a secure sum",
                institution=self.data.name,
                task=TASK_EVALUATE,
            )
        plan = TrainingPlan.from_config(config)
        self._check_not_exhausted(plan)
        result = self._evaluate_rows(parameters, plan=plan, spec=self._preprocessing(config))
        return (
            result.loss,
            self._published_counts(self._account(plan)).test,
            {INSTITUTION_KEY: self.data.name, ACCURACY_KEY: result.accuracy},
        )

    # ------------------------------------------------------------------ helpers

    def _check_not_exhausted(self, plan: TrainingPlan) -> None:
        """An institution whose budget is spent answers nothing that reads its rows."""
        if not plan.dp.enabled:
            return
        spent = self._account(plan).epsilon()
        if spent >= self.settings.budget.epsilon:
            raise PolicyRefusalError(
                f"{self.data.name} has spent its budget (ε {spent:.4g} of "
                f"{self.settings.budget.epsilon:.4g}) and answers no more evaluations",
                institution=self.data.name,
                epsilon=spent,
            )

    def _evaluate_rows(
        self, parameters: list[np.ndarray], *, plan: TrainingPlan, spec: PreprocessingSpec
    ) -> Evaluation:
        model = build_model(plan.model_spec(spec))
        set_weights(model, parameters)
        return evaluate_model(
            model, spec.transform(self.data.test), spec.labels(self.data.test), device=self.device
        )

    def _secure_evaluation(
        self,
        parameters: list[np.ndarray],
        *,
        plan: TrainingPlan,
        spec: PreprocessingSpec,
        report: FitReport,
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Accuracy and mean loss on the held-out rows, as this node's term of a secure sum
        (weighted by its published test count); SecAgg+ masks it, and the node's mods refuse
        to send it in the clear unless its policy allows."""
        zero = [np.zeros(EVALUATION_SIZE)]
        try:
            self._check_not_exhausted(plan)
            published = self._published_counts(self._account(plan)).test
        except (PolicyRefusalError, BudgetExceededError) as exc:
            return zero, 0, _replace(report, refused=True, reason=str(exc)).to_metrics()
        result = self._evaluate_rows(parameters, plan=plan, spec=spec)
        vector = evaluation_vector(accuracy=result.accuracy, loss=result.loss)
        spent = self._account(plan).epsilon() if plan.dp.enabled else math.inf
        done = _replace(report, num_examples=published, epsilon=spent, epsilon_next=spent)
        return [vector], published, done.to_metrics()

    def _summary(
        self, plan: TrainingPlan, server_round: int
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        report = FitReport(
            institution=self.data.name,
            round=server_round,
            dp=plan.dp.enabled,
            delta=self.settings.budget.delta,
            epsilon_budget=self.settings.budget.epsilon if plan.dp.enabled else math.inf,
            schema_fingerprint=self.data.schema.fingerprint(),
        )
        account = self._account(plan)
        reply = institution_summary(
            data=self.data,
            published_rows=self._published_counts(account).train,
            noise_multiplier=plan.summary_noise_multiplier,
            report=report,
            account=account,
            policy=self.settings.policy,
            seed=self._round_seed(plan, server_round),
        )
        return [reply.shares], reply.weight, reply.report.to_metrics()

    def _profile(
        self,
        parameters: list[np.ndarray],
        config: dict[str, Any],
        *,
        plan: TrainingPlan,
        spec: PreprocessingSpec,
        report: FitReport,
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """The reference profile of this institution's training rows under ``parameters``."""
        probabilities = model_probabilities(
            plan=plan, spec=spec, weights=parameters, data=self.data, device=self.device
        )
        account = self._account(plan)
        reply = institution_profile(
            data=self.data,
            published_rows=self._published_counts(account).train,
            probabilities=probabilities,
            report=report,
            noise_multiplier=noise_multiplier_of(config),
            account=account,
            policy=self.settings.policy,
            seed=self._round_seed(plan, report.round),
        )
        return [reply.shares], reply.weight, reply.report.to_metrics()

    def _round_seed(self, plan: TrainingPlan, server_round: int) -> int | None:
        """The seed of a round's DP randomness: none (drawn on the node from the OS's
        secure source) unless the run asks for a reproducible run and this node's own
        policy allows it."""
        if not plan.reproducible:
            return None
        if not self.settings.policy.allow_reproducible:
            logger.warning(
                "%s: the run asks for reproducible (seeded) DP noise; this node's policy does "
                "not allow it, so its noise stays unpredictable",
                self.data.name,
            )
            return None
        digest = hashlib.sha256(f"{plan.seed}:{self.data.name}:{server_round}".encode()).digest()
        return int.from_bytes(digest[:4], "big")

    def _account(self, plan: TrainingPlan | None) -> InstitutionAccount:
        """The institution's account under the plan's accountant (the default one before a
        plan arrives: the census)."""
        return InstitutionAccount(
            institution=self.data.name,
            budget=self.settings.budget,
            history=self.history,
            accountant=plan.dp.accountant if plan is not None else DEFAULT_ACCOUNTANT,
        )

    def _published_counts(self, account: InstitutionAccount) -> PublishedCounts:
        """The run's noisy row counts (``client.count_release``): every count that leaves."""
        return published_counts(
            institution=self.data.name,
            num_train=len(self.data.train),
            num_test=len(self.data.test),
            noise_multiplier=self.settings.policy.count_noise_multiplier,
            account=account,
            state=self.state,
            reproducible=self.settings.policy.allow_reproducible,
        )

    def _run_releases(self, plan: TrainingPlan) -> tuple[float, ...]:
        """σ of the run's full-data Gaussian releases besides training (the published
        counts, a noisy summary, a noisy profile): derived training noise leaves room for them."""
        return tuple(
            sigma
            for sigma in (
                self.settings.policy.count_noise_multiplier,
                plan.summary_noise_multiplier,
                plan.profile_noise_multiplier,
            )
            if sigma is not None
        )

    def _preprocessing(self, config: dict[str, Any]) -> PreprocessingSpec:
        text = config.get(PREPROCESSING_KEY)
        if not isinstance(text, str):
            raise ConfigError("round config lacks the preprocessing spec")
        return _parse_spec(text)

    def _noise_multiplier(self, plan: TrainingPlan, num_examples: int) -> float:
        """The run's DP-SGD σ: the plan's, or derived so that the run's steps and its other
        releases spend the run's ε (the plan's target, else the budget), on top of ``prior``
        when the run continues a kept history. When too little budget is left, the noise is
        the run's as if nothing had been spent, and the budget check refuses every round."""
        if plan.dp.noise_multiplier is not None:
            return plan.dp.noise_multiplier
        budget = self.settings.budget
        if self.prior:
            sigma = continuing_noise_multiplier(
                prior=self.prior,
                run_epsilon=min(plan.dp.target_epsilon or budget.epsilon, budget.epsilon),
                budget_epsilon=budget.epsilon,
                target_delta=budget.delta,
                sample_rate=effective_sample_rate(num_examples, plan.sample_rate),
                steps=plan.num_rounds
                * plan.local_epochs
                * steps_per_epoch(num_examples, plan.sample_rate),
                accountant=plan.dp.accountant,
                reserved=tuple(
                    AccountingStep(noise_multiplier=sigma, sample_rate=1.0, steps=1)
                    for sigma in self._run_releases(plan)
                ),
            )
            if sigma is not None:
                return sigma
        target = budget.epsilon
        if plan.dp.target_epsilon is not None:
            target = min(target, plan.dp.target_epsilon)
        return _derived_noise(
            target_epsilon=target,
            target_delta=budget.delta,
            sample_rate=effective_sample_rate(num_examples, plan.sample_rate),
            steps=plan.num_rounds
            * plan.local_epochs
            * steps_per_epoch(num_examples, plan.sample_rate),
            accountant=plan.dp.accountant,
            releases=self._run_releases(plan),
        )


@functools.lru_cache(maxsize=32)
def _parse_spec(text: str) -> PreprocessingSpec:
    return PreprocessingSpec.from_json(text)


@functools.lru_cache(maxsize=128)
def _derived_noise(
    *,
    target_epsilon: float,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    releases: tuple[float, ...] = (),
) -> float:
    # The run's other Gaussian releases of the same rows (a noisy summary before the
    # first round, a noisy profile after the last) are composed in: the training noise
    # leaves room for them, so the whole run stays within the target.
    reserved = tuple(
        AccountingStep(noise_multiplier=sigma, sample_rate=1.0, steps=1) for sigma in releases
    )
    sigma = noise_multiplier_for(
        target_epsilon=target_epsilon,
        target_delta=target_delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
        reserved=reserved,
    )
    logger.info(
        "noise multiplier %.4f spends ε=%.4g over %d steps at q=%.4f",
        sigma,
        target_epsilon,
        steps,
        sample_rate,
    )
    return sigma


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA device is available")
    return torch.device(choice)


def _record_round(
    account: InstitutionAccount, taken: AccountingStep | None
) -> tuple[float, float]:
    """Record a round's release: ``(ε now, ε after one more such round)``; the ε after two
    more is left for after the reply (``client.deferred``), for the next round to find."""
    if taken is None:
        return math.inf, math.inf
    epsilon = account.record([taken])
    epsilon_next = account.epsilon([taken])
    after_reply("the next round's accounting", functools.partial(account.epsilon, [taken] * 2))
    return epsilon, epsilon_next


def _replace(report: FitReport, **changes: Any) -> FitReport:
    import dataclasses

    return dataclasses.replace(report, **changes)
