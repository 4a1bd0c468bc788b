"""Errors of what leaves the federation: export, registry, serving.

::

    FedwardenError (privacy.errors)
     └── DeployError                                             (exit 10)
          ├── ExportError           an artifact cannot be built or fails parity
          └── ServingError          the inference service cannot start or answer
               └── InvalidRequestError   a request's rows are malformed (HTTP 4xx)
                    └── RequestTooLargeError  the body is over the limit (HTTP 413)
"""

from __future__ import annotations

from typing import Any, ClassVar

from privacy.errors import FedwardenError


class DeployError(FedwardenError):
    """Something that leaves the federation cannot be built or served."""

    exit_code: ClassVar[int] = 10


class ExportError(DeployError):
    """The ONNX artifact cannot be exported, or it does not match the PyTorch model."""


class ServingError(DeployError):
    """The inference service cannot load or run a model."""


class InvalidRequestError(ServingError):
    """A prediction request is malformed; ``status_code`` is the HTTP status to answer."""

    def __init__(self, message: str, *, status_code: int = 422, **context: Any) -> None:
        super().__init__(message, **context)
        self.status_code = status_code


class RequestTooLargeError(InvalidRequestError):
    """A request body is larger than the service accepts (HTTP 413)."""

    def __init__(self, message: str = "the request body is too large", **context: Any) -> None:
        super().__init__(message, status_code=413, **context)
