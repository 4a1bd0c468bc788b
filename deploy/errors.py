"""Errors of what leaves the federation: export, registry, serving.

::

    FedwardenError (privacy.errors)
     └── DeployError                                             (exit 10)
          ├── ExportError           an artifact cannot be built or fails parity
          └── ServingError          the inference service cannot start or answer
               └── InvalidRequestError   a request's rows are malformed (HTTP 4xx)
                    ├── RequestTooLargeError     the body is over the limit (HTTP 413)
                    ├── UnknownPredictionError   an outcome for an id never served (404)
                    └── ExpiredPredictionError   an outcome past the retention limit (410)
"""

from __future__ import annotations

from typing import Any, ClassVar

from privacy.errors import FedwardenError
from server.errors import AuthenticationError


class DeployError(FedwardenError):
    """Something that leaves the federation cannot be built or served."""

    exit_code: ClassVar[int] = 10


class ExportError(DeployError):
    """The ONNX artifact cannot be exported, or it does not match the PyTorch model."""


class ServingError(DeployError):
    """The inference service cannot load or run a model."""


class InvalidRequestError(ServingError):
    """A prediction request is malformed; ``status_code`` is the HTTP status to answer."""

    code: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, *, status_code: int = 422, **context: Any) -> None:
        super().__init__(message, **context)
        self.status_code = status_code


class RequestTooLargeError(InvalidRequestError):
    """A request body is larger than the service accepts (HTTP 413)."""

    def __init__(self, message: str = "the request body is too large", **context: Any) -> None:
        super().__init__(message, status_code=413, **context)


class UnknownPredictionError(InvalidRequestError):
    """An outcome names a prediction the service never made (HTTP 404)."""

    code: ClassVar[str] = "not_found"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message, status_code=404, **context)


class ExpiredPredictionError(InvalidRequestError):
    """An outcome names a prediction older than the retention limit (HTTP 410)."""

    code: ClassVar[str] = "gone"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message, status_code=410, **context)


class RateLimitedError(AuthenticationError):
    """Too many failed authentications: from this client, or from everyone at once."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s
