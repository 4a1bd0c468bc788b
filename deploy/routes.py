"""The inference API's routes: predictions, model details, drift, health."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deploy.deps import CurrentIdentity, ServiceDep
from deploy.errors import InvalidRequestError
from deploy.schemas import (
    DriftReport,
    ErrorResponse,
    Health,
    ModelDetails,
    ModelList,
    ModelSummary,
    PredictRequest,
    PredictResponse,
)
from server.errors import ConflictError, NotFoundError

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (401, "missing, unknown, wrong, revoked or expired API key"),
        (403, "the key's principal lacks the permission"),
        (404, "no such model in production"),
        (409, "the served version has no reference profile to measure drift against"),
        (413, "too many rows, or a body over the size limit"),
        (422, "a row is malformed: the message names the row and the feature"),
        (503, "the store or the model is not available"),
    )
}

models_router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERRORS)
health_router = APIRouter(tags=["operations"])


@models_router.post("/{name}/predict", response_model=PredictResponse)
async def predict(
    name: str,
    identity: CurrentIdentity,
    service: ServiceDep,
    request: PredictRequest = Body(),  # noqa: B008 - FastAPI's way to declare a body
) -> JSONResponse:
    """Class and probabilities for each row (needs the `predict` permission: role consumer).

    Runs on the event loop: checking, encoding and onnxruntime take well under a
    millisecond for a small batch, less than handing the work to a thread.
    """
    service.authenticator.require(identity, "predict", target=f"model:{name}")
    model = service.holder.get(name)
    if model is None:
        raise NotFoundError(f"model {name!r} has no production version being served", model=name)
    began = time.perf_counter()
    encoded = model.encode(request.rows, limits=service.limits)
    checked = time.perf_counter()
    prediction = model.run(*encoded)
    service.metrics.checks.labels(model=name).observe(checked - began)
    service.metrics.inference.labels(model=name).observe(time.perf_counter() - checked)
    service.metrics.batch_size.labels(model=name).observe(len(request.rows))
    service.usage.count(identity, rows=len(request.rows))
    service.drift.record(
        model, numeric=encoded[0], categorical=encoded[1], probabilities=prediction.probabilities
    )
    labels = model.labels
    return JSONResponse(
        {
            "model": name,
            "version": model.version,
            "predictions": [
                {"label": label, "probabilities": dict(zip(labels, row.tolist(), strict=True))}
                for label, row in zip(prediction.labels, prediction.probabilities, strict=True)
            ],
        }
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
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@health_router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(service: ServiceDep, response: Response) -> Health:
    """Ready when the store answers and at least one model is loaded."""
    models = {}
    for name in service.holder.names():
        model = service.holder.get(name)
        if model is not None:
            models[name] = model.version
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
