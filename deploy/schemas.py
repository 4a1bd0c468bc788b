"""Request and response bodies of the inference API (apart from the store's ORM rows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FeatureValue = float | int | str | bool | None


class PredictRequest(BaseModel):
    """A batch of rows, each by feature name, in the schema's own units; or the same batch
    as one list per feature (``columns``: faster to check and to send)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rows": [
                        {
                            "age": 63,
                            "sex": "Male",
                            "cp": "typical angina",
                            "trestbps": 145,
                            "chol": 233,
                            "fbs": "True",
                            "restecg": "lv hypertrophy",
                            "thalch": 150,
                            "exang": "False",
                            "oldpeak": 2.3,
                            "slope": "downsloping",
                            "ca": 0,
                            "thal": "fixed defect",
                        }
                    ]
                }
            ]
        },
    )

    rows: list[dict[str, FeatureValue]] | None = Field(
        default=None,
        min_length=1,
        description="Rows by feature name; null where a nullable value is missing.",
    )
    columns: dict[str, list[FeatureValue]] | None = Field(
        default=None,
        description="Instead of rows: one list per feature, all of the same length.",
    )
    request_id: str | None = Field(
        default=None,
        max_length=200,
        description="The caller's id for this request, to feed outcomes back by; with more "
        "than one row, row i's request id is `<request_id>:<i>`.",
    )


class RowPrediction(BaseModel):
    label: str = Field(description="The most probable class.")
    probabilities: dict[str, float] = Field(description="Probability of each class.")
    prediction_id: str = Field(description="Feed the true outcome back under this id.")
    request_id: str | None = Field(default=None, description="The row's caller request id.")


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[RowPrediction]


class ModelSummary(BaseModel):
    name: str
    version: int
    labels: list[str]
    features: list[str]


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetails(BaseModel):
    name: str
    version: int
    stage: str
    sha256: str
    labels: list[str]
    input_schema: dict[str, Any]
    lineage: dict[str, Any]
    providers: list[str]


class DriftFeature(BaseModel):
    name: str = Field(description="A feature, `prediction`, or `probability:<class>`.")
    kind: str = Field(description="numeric, categorical, prediction or probability.")
    detector: str = Field(description="psi, ks, chi2 or js.")
    score: float
    p_value: float | None = Field(description="For ks and chi2; before the correction.")
    status: str = Field(description="ok, warning or drift.")


class DriftReport(BaseModel):
    model: str
    version: int
    status: str = Field(
        description="The worst status of any feature: ok, warning or drift; insufficient_data "
        "(and no feature scores) while the window holds fewer than min_rows rows."
    )
    window_rows: int = Field(description="Rows in the window (the last rows served, in its span).")
    window_span_s: float = Field(description="Seconds between the window's oldest row and now.")
    min_rows: int = Field(default=0, description="Rows a window needs before it is scored.")
    features: list[DriftFeature]


class OutcomeIn(BaseModel):
    """The true outcome of one served prediction, named by its id or by the caller's request id."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=200)
    label: str = Field(max_length=200, description="The true class, one of the model's labels.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"outcomes": [{"prediction_id": "019ad0c3f1a2" + "0" * 20, "label": "disease"}]}
            ]
        },
    )

    outcomes: list[OutcomeIn] = Field(min_length=1, max_length=10000)


class FeedbackResponse(BaseModel):
    model: str
    accepted: int = Field(description="Outcomes newly joined to their predictions.")
    duplicates: int = Field(description="Outcomes already known (same label): nothing changed.")


class PerformanceReport(BaseModel):
    model: str
    version: int
    window_s: float
    served_rows: int = Field(description="Rows the served version answered in the window.")
    thresholds: dict[str, float] = Field(description="Alert when a metric falls below these.")
    reference: dict[str, Any] = Field(description="The federation's own accuracy, if known.")
    realised: dict[str, Any] = Field(
        description="From outcomes fed back: accuracy, balanced_accuracy, auc, log_loss, brier, "
        "calibration, rows (labelled), status (insufficient_data, ok, alert)."
    )
    estimated: dict[str, Any] = Field(
        description="From the probabilities alone (CBPE on the federation's calibration): "
        "accuracy, auc, rows, calibrated, status."
    )
    versions: list[dict[str, Any]] = Field(description="Realised metrics of every version served.")


class InputSchema(BaseModel):
    name: str
    version: int
    input_schema: dict[str, Any] = Field(
        description="Features (kind, range, categories, nullability, missing codes) and target."
    )


class ShadowReport(BaseModel):
    requests: int
    rows: int
    agreement: float | None = Field(description="share of rows with production's class")
    mean_max_abs_diff: float | None
    max_abs_diff: float | None
    errors: int = Field(description="requests the shadow's own schema refused")


class RolloutReport(BaseModel):
    """What a model serves beside its production version (nothing: ``mode`` is null)."""

    name: str
    production_version: int
    version: int | None = None
    mode: str | None = Field(default=None, description="canary or shadow")
    percent: float | None = None
    shadow: ShadowReport | None = None


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    models: dict[str, int] = Field(default_factory=dict)
