"""Prometheus metrics of one service instance, in a registry of its own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServiceMetrics:
    """Request counts, latencies, batch sizes, errors by status code, served versions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedwarden_http_requests_total",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedwarden_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "fedwarden_http_errors_total",
            "Error responses by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fedwarden_predict_batch_rows",
            "Rows per prediction request.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "fedwarden_model_inference_seconds",
            "Time in onnxruntime per prediction request.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.checks = Histogram(
            "fedwarden_input_check_seconds",
            "Time checking rows against the schema and encoding them, per prediction request.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.drift_score = Gauge(
            "fedwarden_drift_score",
            "Drift score of a feature (or model output) by detector, at the last check.",
            ["model", "feature", "detector"],
            registry=self.registry,
        )
        self.drift_status = Gauge(
            "fedwarden_drift_status",
            "Drift status at the last check: -1 insufficient data, 0 ok, 1 warning, 2 drift.",
            ["model"],
            registry=self.registry,
        )
        self.drift_window_rows = Gauge(
            "fedwarden_drift_window_rows",
            "Rows in the drift window at the last check.",
            ["model"],
            registry=self.registry,
        )
        self.performance = Gauge(
            "fedwarden_performance",
            "Performance of the served version over the window: realised (outcomes fed back) "
            "or estimated (from the probabilities, calibrated on the federation's reference).",
            ["model", "metric", "kind"],
            registry=self.registry,
        )
        self.performance_status = Gauge(
            "fedwarden_performance_status",
            "Performance status at the last check: -1 insufficient data, 0 ok, 1 alert.",
            ["model", "kind"],
            registry=self.registry,
        )
        self.performance_rows = Gauge(
            "fedwarden_performance_window_rows",
            "Rows behind the performance figures: labelled (realised) or served (estimated).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "fedwarden_feedback_outcomes_total",
            "Outcomes fed back, by result (accepted or duplicate).",
            ["model", "result"],
            registry=self.registry,
        )
        self.rollout_rows = Counter(
            "fedwarden_rollout_rows_total",
            "Rows a rollout version handled: answered (canary) or scored unseen (shadow).",
            ["model", "version", "mode"],
            registry=self.registry,
        )
        self.shadow_agreement = Gauge(
            "fedwarden_shadow_agreement",
            "Share of rows on which the shadow version's class matches production's.",
            ["model", "version"],
            registry=self.registry,
        )
        self.version = Gauge(
            "fedwarden_model_version_served",
            "The model version being served.",
            ["model"],
            registry=self.registry,
        )
