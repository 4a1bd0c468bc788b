"""The institution's Flower client: summaries, DP-SGD rounds under a budget, evaluation.

Every training reply is a *delta* (local weights minus the global weights),
clipped to the plan's update bound, so that it fits secure aggregation's
quantization range; a refused round replies with a zero delta and zero examples.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient

from client.data import InstitutionData
from client.history import HistoryStore
from client.models import build_model, get_weights, set_weights
from client.node import NodeSettings
from client.plan import TASK_INIT, TASK_KEY, TASK_PROFILE, TASK_SUMMARY, TrainingPlan
from client.preprocessing import PreprocessingSpec, summarize
from client.profile import federation_layout
from client.profiling import institution_profile, model_probabilities, noise_multiplier_of
from client.report import FitReport
from client.training import effective_sample_rate, evaluate_model, steps_per_epoch, train_locally
from privacy.accounting import AccountingStep, compute_epsilon, noise_multiplier_for
from privacy.budget import ensure_within_budget
from privacy.errors import BudgetExceededError, ConfigError
from privacy.updates import clip_update

logger = logging.getLogger(__name__)

PREPROCESSING_KEY = "fw.preprocessing"
ROUND_KEY = "fw.round"
PROXIMAL_MU_KEY = "proximal_mu"  # the key Flower's FedProx puts in the fit config


class InstitutionClient(NumPyClient):
    """One institution in a federation (a Flower ``NumPyClient``)."""

    def __init__(
        self, *, data: InstitutionData, settings: NodeSettings, history: HistoryStore
    ) -> None:
        self.data = data
        self.settings = settings
        self.history = history
        self.device = _device(settings.device)

    # ------------------------------------------------------------------ Flower API

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        """The census: who this institution is, how many rows it holds, its schema.

        Row counts travel in the clear in every Flower reply anyway; the schema is
        the consortium's data dictionary, not data.
        """
        budget = self.settings.budget
        return {
            "fw.institution": self.data.name,
            "fw.num-train": len(self.data.train),
            "fw.num-test": len(self.data.test),
            "fw.schema": self.data.schema.model_dump_json(),
            "fw.schema-fingerprint": self.data.schema.fingerprint(),
            "fw.budget-epsilon": budget.epsilon,
            "fw.budget-delta": budget.delta,
            "fw.require-secagg": self.settings.require_secagg,
            "fw.device": str(self.device),
        }

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
        if config.get(TASK_KEY) == TASK_SUMMARY:
            return self._summary()
        plan = TrainingPlan.from_config(config)
        spec = self._preprocessing(config)
        server_round = int(config[ROUND_KEY])
        zero = [np.zeros_like(p) for p in parameters]
        if config.get(TASK_KEY) == TASK_PROFILE:  # a refused profile is a vector of its own size
            zero = [np.zeros(federation_layout(self.data.schema).size)]
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
        if config.get(TASK_KEY) == TASK_PROFILE:
            return self._profile(parameters, config, plan=plan, spec=spec, report=report)

        features = spec.transform(self.data.train)
        labels = spec.labels(self.data.train)
        n = len(labels)
        history = self.history.load()
        noise: float | None = None
        planned: AccountingStep | None = None
        if plan.dp.enabled:
            noise = self._noise_multiplier(plan, n)
            planned = AccountingStep(
                noise_multiplier=noise,
                sample_rate=effective_sample_rate(n, plan.sample_rate),
                steps=plan.local_epochs * steps_per_epoch(n, plan.sample_rate),
            )
            try:
                ensure_within_budget(
                    institution=self.data.name,
                    history=history,
                    planned=planned,
                    budget=self.settings.budget,
                    accountant=plan.dp.accountant,
                )
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
            seed=_round_seed(plan.seed, self.data.name, server_round),
            device=self.device,
        )
        delta = [new - old for new, old in zip(outcome.weights, parameters, strict=True)]
        clipped = clip_update(delta, max_norm=plan.effective_update_clip_norm)
        epsilon = epsilon_next = math.inf
        if outcome.accounting is not None:
            self.history.append(outcome.accounting)
            history = [*history, outcome.accounting]
            delta_budget = self.settings.budget.delta
            epsilon = compute_epsilon(history, delta=delta_budget, accountant=plan.dp.accountant)
            epsilon_next = compute_epsilon(
                [*history, outcome.accounting], delta=delta_budget, accountant=plan.dp.accountant
            )
        report = _replace(
            report,
            num_examples=outcome.num_examples,
            train_loss=outcome.mean_loss,
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
        # The weight of this update in the average: its rows, or 1 when every
        # institution counts equally (central DP bounds each one's share).
        weight = 1 if plan.uniform_weights else outcome.num_examples
        return clipped.arrays, weight, report.to_metrics()

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        plan = TrainingPlan.from_config(config)
        spec = self._preprocessing(config)
        model = build_model(plan.model_spec(spec))
        set_weights(model, parameters)
        result = evaluate_model(
            model, spec.transform(self.data.test), spec.labels(self.data.test), device=self.device
        )
        return (
            result.loss,
            result.num_examples,
            {"fw.institution": self.data.name, "fw.accuracy": result.accuracy},
        )

    # ------------------------------------------------------------------ helpers

    def _summary(self) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        summary = summarize(self.data.train, self.data.schema)
        return [summary], len(self.data.train), {"fw.institution": self.data.name}

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
        reply = institution_profile(
            data=self.data,
            probabilities=probabilities,
            report=report,
            noise_multiplier=noise_multiplier_of(config),
            history=self.history,
            budget=self.settings.budget,
            accountant=plan.dp.accountant,
        )
        return [reply.shares], reply.weight, reply.report.to_metrics()

    def _preprocessing(self, config: dict[str, Any]) -> PreprocessingSpec:
        text = config.get(PREPROCESSING_KEY)
        if not isinstance(text, str):
            raise ConfigError("round config lacks the preprocessing spec")
        return _parse_spec(text)

    def _noise_multiplier(self, plan: TrainingPlan, num_examples: int) -> float:
        if plan.dp.noise_multiplier is not None:
            return plan.dp.noise_multiplier
        budget = self.settings.budget
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
            profile_noise=plan.profile_noise_multiplier,
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
    profile_noise: float | None = None,
) -> float:
    # A noisy reference profile after the last round is one more Gaussian release of
    # the same rows (``client.profiling``): the training noise leaves room for it.
    reserved = (
        ()
        if profile_noise is None
        else (AccountingStep(noise_multiplier=profile_noise, sample_rate=1.0, steps=1),)
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


def _round_seed(seed: int, institution: str, server_round: int) -> int:
    import hashlib

    digest = hashlib.sha256(f"{seed}:{institution}:{server_round}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA device is available")
    return torch.device(choice)


def _replace(report: FitReport, **changes: Any) -> FitReport:
    import dataclasses

    return dataclasses.replace(report, **changes)
