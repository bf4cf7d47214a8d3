"""JSON shapes of the HTTP API (they also make up the OpenAPI document).

Only types are checked here; limits and meaning are the core's, so both transports agree.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="Raw news text; at least one non-whitespace character.")
    id: str = Field("", description="Optional client identifier, echoed back.")


class ClassifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "documents": [{"text": "Crude oil prices rose after OPEC agreed to cut output.", "id": "a1"}],
        "model": "gru", "top_k": 3}]})
    documents: list[DocumentIn]
    model: str = Field(description="Model name, e.g. rnn, lstm, gru, bilstm or ensemble.")
    version: int | None = Field(None, description="Pin a version; newest if neither this nor version_label.")
    version_label: str | None = Field(None, description="Pin a version label such as 'stable'.")
    top_k: int | None = Field(None, description="Topics per document; the gateway's default if omitted.")


class TopicOut(BaseModel):
    name: str
    probability: float


class DocumentResultOut(BaseModel):
    id: str
    topics: list[TopicOut]
    abstained: bool = Field(description="True when the top probability is below the model's abstain threshold.")


class ClassifyOut(BaseModel):
    model: str
    version: int
    results: list[DocumentResultOut]
    abstain_threshold: float | None = None


class ModelVersionOut(BaseModel):
    version: int
    state: str
    metrics: dict[str, float]
    abstain_threshold: float | None = None
    labels: list[str]
    variant: str


class ModelOut(BaseModel):
    name: str
    versions: list[ModelVersionOut]
    version_labels: dict[str, int]
    ready: bool


class ModelsOut(BaseModel):
    models: list[ModelOut]


class ErrorDetail(BaseModel):
    code: str = Field(description="gRPC status code name, e.g. INVALID_ARGUMENT.")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class HealthOut(BaseModel):
    status: str
    models: dict[str, bool] = Field(default_factory=dict)
