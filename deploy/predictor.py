"""A registered model loaded into onnxruntime, and the holder that swaps versions live.

One ``InferenceSession`` per loaded model version, created once; the CUDA
provider when a CUDA device is present, else the CPU. ``ModelHolder`` replaces a
served version by swapping one reference: requests already running finish on
the version they started with, new ones get the new one, none fails.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client.contract.preprocessing import PreprocessingSpec
from deploy.answers import AnswerWriter
from deploy.artifacts import read_artifact
from deploy.columns import ColumnEncoder
from deploy.errors import ServingError
from deploy.onnx_contract import INPUT_NAMES
from deploy.validation import UNLIMITED, RequestLimits, RowEncoder
from privacy.envelope import Keyring

logger = logging.getLogger(__name__)


def choose_providers(preference: str = "auto") -> list[str]:
    """onnxruntime providers: CUDA first when a CUDA device is really there.

    ``onnxruntime-gpu`` lists the CUDA provider even on machines without a GPU,
    where a session asked for it logs an error and falls back; so the device is
    checked, not the list.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    if preference == "cpu":
        return ["CPUExecutionProvider"]
    cuda = "CUDAExecutionProvider" in available and _cuda_device_present()
    if preference == "cuda" and not cuda:
        raise ServingError("the CUDA provider was asked for, but no CUDA device is available")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def _cuda_device_present() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


@dataclass(frozen=True)
class Prediction:
    labels: list[str]
    probabilities: np.ndarray


class LoadedModel:
    """One model version ready to answer: its session, preprocessing and labels."""

    def __init__(
        self,
        *,
        name: str,
        version: int,
        path: Path | None = None,
        sha256: str,
        preprocessing: PreprocessingSpec,
        providers: list[str],
        threads: int = 1,
        details: dict[str, Any] | None = None,
        keyring: Keyring | None = None,
        data: bytes | None = None,
    ) -> None:
        """``data`` is the artifact's plaintext, already checked against ``sha256`` (as
        ``ArtifactFetcher`` returns it); without it the file at ``path`` is read and checked."""
        import onnxruntime as ort

        if data is None:
            if path is None:
                raise ServingError(f"{name} v{version}: neither an artifact nor its path given")
            data = read_artifact(path, sha256=sha256, keyring=keyring, what=f"{name} v{version}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, sess_options=options, providers=providers)
        self.name = name
        self.version = version
        self.sha256 = sha256
        self.preprocessing = preprocessing
        self.labels = list(preprocessing.schema.target.labels)
        self.encoder = RowEncoder(preprocessing.schema)
        self.column_encoder = ColumnEncoder(preprocessing.schema)
        self.answers = AnswerWriter(self.labels)
        self.providers = self.session.get_providers()
        self.details = details or {}
        logger.info("loaded %s v%d on %s", name, version, self.providers[0])

    def encode(
        self, rows: list[Any], *, limits: RequestLimits = UNLIMITED
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check ``rows`` against the schema (``InvalidRequestError`` names a bad one) and
        encode them for the graph."""
        return self.encoder.encode(rows, limits=limits)

    def encode_columns(
        self, columns: Any, *, limits: RequestLimits = UNLIMITED
    ) -> tuple[np.ndarray, np.ndarray]:
        """Check a columnar batch (``{feature: [values]}``) and encode it for the graph."""
        return self.column_encoder.encode(columns, limits=limits)

    def run(self, numeric: np.ndarray, categorical: np.ndarray) -> Prediction:
        """Each encoded row's class probabilities, from onnxruntime."""
        (probabilities,) = self.session.run(
            None, {INPUT_NAMES[0]: numeric, INPUT_NAMES[1]: categorical}
        )
        best = probabilities.argmax(axis=1)
        return Prediction(labels=[self.labels[i] for i in best], probabilities=probabilities)

    def predict(self, rows: list[Any], *, limits: RequestLimits = UNLIMITED) -> Prediction:
        """``encode`` then ``run``."""
        return self.run(*self.encode(rows, limits=limits))


class ModelHolder:
    """The versions being served, by model name; swapped atomically."""

    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return sorted(self._models)

    def put(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` under its name; return the version it replaced."""
        with self._lock:
            models = dict(self._models)
            previous = models.get(model.name)
            models[model.name] = model
            self._models = models  # one reference swap: readers see old or new, never half
        if previous is not None and previous.version != model.version:
            logger.info("now serving %s v%d (was v%d)", model.name, model.version, previous.version)
        return previous

    def remove(self, name: str) -> None:
        with self._lock:
            models = dict(self._models)
            models.pop(name, None)
            self._models = models
