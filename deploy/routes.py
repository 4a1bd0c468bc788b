"""The inference API's routes: predictions, outcomes, performance, model details, drift, health."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from deploy.deps import CurrentIdentity, ServiceDep
from deploy.errors import InvalidRequestError
from deploy.outcomes import Outcome
from deploy.requests import parse_predict_body
from deploy.schemas import (
    DriftReport,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    InputSchema,
    ModelDetails,
    ModelList,
    ModelSummary,
    PerformanceReport,
    PredictRequest,
    PredictResponse,
    RolloutReport,
    ShadowReport,
)
from server.errors import ConflictError, NotFoundError

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (401, "missing, unknown, wrong, revoked or expired API key"),
        (403, "the key's principal lacks the permission"),
        (404, "no such model in production (or, for feedback, no such prediction)"),
        (
            409,
            "drift or performance monitoring is off, the served version has no reference "
            "profile, or an outcome contradicts one already fed back",
        ),
        (410, "an outcome for a prediction past the retention limit"),
        (413, "too many rows, or a body over the size limit"),
        (422, "a row is malformed: the message names the row and the feature"),
        (503, "the store or the model is not available"),
    )
}

models_router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)
health_router = APIRouter(tags=["operations"])


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@models_router.post("/{name}/predict", response_model=PredictResponse, openapi_extra=PREDICT_BODY)
async def predict(
    name: str, http: Request, identity: CurrentIdentity, service: ServiceDep
) -> Response:
    """Class, probabilities and a `prediction_id` for each row (needs `predict`: role consumer).

    The body holds `rows` (objects by feature name) or `columns` (one list per
    feature), and optionally the caller's `request_id`. Runs on the event loop:
    parsing (orjson), checking, encoding and onnxruntime take well under a
    millisecond for a small batch, less than handing the work to a thread.
    """
    service.authenticator.require(identity, "predict", target=f"model:{name}")
    production = service.holder.get(name)
    if production is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    began = time.perf_counter()
    body = parse_predict_body(await http.body())
    model, rollout = production, service.catalog.rollouts.get(name)
    if rollout is not None and rollout.mode == "canary" and rollout.takes(body.request_id):
        model = rollout.model
    if body.columns is not None:
        encoded = model.encode_columns(body.columns, limits=service.limits)
    else:
        encoded = model.encode(body.rows or [], limits=service.limits)
    checked = time.perf_counter()
    prediction = model.run(*encoded)
    rows = len(encoded[0])
    service.metrics.checks.labels(model=name).observe(checked - began)
    service.metrics.inference.labels(model=name).observe(time.perf_counter() - checked)
    service.metrics.batch_size.labels(model=name).observe(rows)
    service.usage.count(identity, rows=rows)
    service.drift.record(
        model, numeric=encoded[0], categorical=encoded[1], probabilities=prediction.probabilities
    )
    ids, requests = service.outcomes.record(
        model=name,
        version=model.version,
        probabilities=prediction.probabilities,
        request_id=body.request_id,
    )
    answer = model.answers.write(
        model=name,
        version=model.version,
        labels=prediction.labels,
        probabilities=prediction.probabilities,
        prediction_ids=ids,
        request_ids=requests,
    )
    shadow = None
    if rollout is not None and rollout.mode == "shadow" and rollout.takes(body.request_id):
        shadow = BackgroundTask(
            service.shadow.score,
            rollout,
            body=body,
            production=prediction.probabilities,
            limits=service.limits,
            metrics=service.metrics,
        )
    elif model is not production:
        service.metrics.rollout_rows.labels(
            model=name, version=str(model.version), mode="canary"
        ).inc(rows)
    return Response(answer, media_type="application/json", background=shadow)


@models_router.post("/{name}/feedback", response_model=FeedbackResponse)
def feedback(
    name: str,
    identity: CurrentIdentity,
    service: ServiceDep,
    request: FeedbackRequest = Body(),  # noqa: B008 - FastAPI's way to declare a body
) -> FeedbackResponse:
    """Feed back the true outcomes of served predictions (needs `feedback`: consumer, operator).

    Each outcome names its prediction by `prediction_id` (from the predict
    response) or by the caller's `request_id`, and gives the true label. All or
    nothing: an unknown id is a 404, one past the retention limit a 410, a label
    that contradicts one already fed back a 409; the same label again is
    counted as a duplicate. Labels may come days late (up to the retention).
    """
    service.authenticator.require(identity, "feedback", target=f"model:{name}")
    model = service.holder.get(name)
    if model is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    if not service.settings.performance_monitoring:
        raise ConflictError("performance monitoring is off in this service", model=name)
    result = service.outcomes.feed(
        model=name,
        labels=model.labels,
        outcomes=[
            Outcome(label=o.label, prediction_id=o.prediction_id, request_id=o.request_id)
            for o in request.outcomes
        ],
    )
    service.metrics.feedback.labels(model=name, result="accepted").inc(result.accepted)
    service.metrics.feedback.labels(model=name, result="duplicate").inc(result.duplicates)
    return FeedbackResponse(model=name, accepted=result.accepted, duplicates=result.duplicates)


@models_router.get("/{name}/performance", response_model=PerformanceReport)
def performance(name: str, identity: CurrentIdentity, service: ServiceDep) -> PerformanceReport:
    """Realised performance (from outcomes fed back) and estimated performance (from the
    probabilities, calibrated on the federation's reference) over the window (`model:read`).

    A change of status (`ok`, `alert`) is written to the store and audited once.
    """
    service.authenticator.require(identity, "model:read", target=f"model:{name}")
    model = service.holder.get(name)
    if model is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    if not service.settings.performance_monitoring:
        raise ConflictError("performance monitoring is off in this service", model=name)
    service.outcomes.flush()
    return PerformanceReport.model_validate(service.performance.evaluate(model))


@models_router.get("/{name}/rollout", response_model=RolloutReport)
def rollout(name: str, identity: CurrentIdentity, service: ServiceDep) -> RolloutReport:
    """The version served beside production, if any, compared with it (needs `model:read`).

    A `canary` answers `percent` % of the requests (sticky by `request_id`); a
    `shadow` scores them unseen. Beside each: rows handled, and for a shadow its
    agreement with production; realised performance per version is on
    `/performance`.
    """
    service.authenticator.require(identity, "model:read", target=f"model:{name}")
    production = service.holder.get(name)
    if production is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    served = service.catalog.rollouts.get(name)
    if served is None:
        return RolloutReport(name=name, production_version=production.version)
    comparison = (
        ShadowReport.model_validate(service.shadow.summary(name, served.model.version))
        if served.mode == "shadow"
        else None
    )
    return RolloutReport(
        name=name,
        production_version=production.version,
        version=served.model.version,
        mode=served.mode,
        percent=served.percent,
        shadow=comparison,
    )


@models_router.get("/{name}/schema", response_model=InputSchema)
def input_schema(name: str, identity: CurrentIdentity, service: ServiceDep) -> InputSchema:
    """The served version's full input schema (needs `predict` or `model:read`)."""
    if "model:read" not in identity.permissions:
        service.authenticator.require(identity, "predict", target=f"model:{name}")
    model = service.holder.get(name)
    if model is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    return InputSchema(
        name=name,
        version=model.version,
        input_schema=model.preprocessing.schema.model_dump(mode="json"),
    )


@models_router.get("", response_model=ModelList)
def list_models(identity: CurrentIdentity, service: ServiceDep) -> ModelList:
    """The served models: name, version, labels, features (needs `predict` or `model:read`)."""
    if "model:read" not in identity.permissions:
        service.authenticator.require(identity, "predict", target="model:*")
    summaries = []
    for name in service.holder.names():
        model = service.holder.get(name)
        if model is not None:
            summaries.append(
                ModelSummary(
                    name=name,
                    version=model.version,
                    labels=model.labels,
                    features=model.preprocessing.schema.feature_names,
                )
            )
    return ModelList(models=summaries)


@models_router.get("/{name}", response_model=ModelDetails)
def model_details(name: str, identity: CurrentIdentity, service: ServiceDep) -> ModelDetails:
    """Version, input schema and lineage of a served model (needs `model:read`)."""
    service.authenticator.require(identity, "model:read", target=f"model:{name}")
    model = service.holder.get(name)
    if model is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    return ModelDetails(
        name=name,
        version=model.version,
        stage=str(model.details.get("stage", "production")),
        sha256=model.sha256,
        labels=model.labels,
        input_schema=model.preprocessing.schema.model_dump(mode="json"),
        lineage=dict(model.details.get("lineage", {})),
        providers=list(model.providers),
    )


@models_router.get("/{name}/drift", response_model=DriftReport)
def drift(name: str, identity: CurrentIdentity, service: ServiceDep) -> DriftReport:
    """How far the served rows have moved from the training data (needs `model:read`).

    Scores the window of recently served rows against the version's reference
    profile: per feature and detector a score, a p-value where the detector has
    one, and a status; overall the worst. Runs in a worker thread: a change of
    status is written to the store and audited, once per change.
    """
    service.authenticator.require(identity, "model:read", target=f"model:{name}")
    model = service.holder.get(name)
    if model is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    if not service.settings.drift_monitoring:
        raise ConflictError("drift monitoring is off in this service", model=name)
    monitor = service.drift.monitor(model)
    if monitor is None:
        raise ConflictError(
            f"{name} v{model.version} has no reference profile to measure drift against",
            model=name,
            version=model.version,
        )
    return DriftReport.model_validate(service.drift.evaluate(monitor).to_dict())


@health_router.get("/healthz", response_model=Health)
def healthz(service: ServiceDep) -> Health:
    """The process is up; the models it serves (the same as `/readyz` reports)."""
    return Health(status="ok", models=_served(service))


def _served(service: Any) -> dict[str, int]:
    models = {}
    for name in service.holder.names():
        model = service.holder.get(name)
        if model is not None:
            models[name] = model.version
    return models


@health_router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(service: ServiceDep, response: Response) -> Health:
    """Ready when the store answers and at least one model is loaded."""
    models = _served(service)
    try:
        with service.store.session() as session:
            session.connection()
        reachable = True
    except Exception:
        reachable = False
    ready = reachable and bool(models)
    response.status_code = 200 if ready else 503
    status = "ready" if ready else ("no model in production" if reachable else "store unreachable")
    return Health(status=status, models=models)


@health_router.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: requests, latency, batch sizes, errors by code, served versions."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["InvalidRequestError", "health_router", "models_router"]
