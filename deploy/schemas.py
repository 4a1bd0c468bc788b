"""Request and response bodies of the inference API (apart from the store's ORM rows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FeatureValue = float | int | str | bool | None


class PredictRequest(BaseModel):
    """A batch of rows, each by feature name, in the schema's own units."""

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

    rows: list[dict[str, FeatureValue]] = Field(
        min_length=1, description="Rows by feature name; null where a nullable value is missing."
    )


class RowPrediction(BaseModel):
    label: str = Field(description="The most probable class.")
    probabilities: dict[str, float] = Field(description="Probability of each class.")


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
    status: str = Field(description="The worst status of any feature: ok, warning or drift.")
    window_rows: int = Field(description="Rows in the window (the last rows served, in its span).")
    window_span_s: float = Field(description="Seconds between the window's oldest row and now.")
    features: list[DriftFeature]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    models: dict[str, int] = Field(default_factory=dict)
