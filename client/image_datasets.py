"""Image datasets that work offline: Fashion-MNIST from Debian's ``dataset-fashion-mnist``.

The package (``apt-get install dataset-fashion-mnist``) puts the original IDX
files under ``/usr/share/datasets/fashion-mnist/``: 60,000 training and 10,000
test images of 28x28 grey pixels, ten classes of clothing. Each image is one
row of 784 pixels (the schema's ``image`` feature). ``fashion-mnist`` is the
60,000 training images, pooled: a simulation splits them IID or Dirichlet
across institutions, each of which holds a third of its share out for testing.
``fashion-mnist-small`` is the first 12,000 of them, for bounded runs.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from client.contract.errors import DataError
from client.contract.schema import TableSchema
from client.sources import DatasetSource, TrainingDefaults

FASHION_MNIST_DIR_ENV = "FEDWARDEN_FASHION_MNIST_DIR"
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def fashion_mnist_dir() -> Path:
    """Where the IDX files are: ``$FEDWARDEN_FASHION_MNIST_DIR`` or Debian's folder."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV, DEFAULT_FASHION_MNIST_DIR))


def fashion_mnist_available() -> bool:
    folder = fashion_mnist_dir()
    return all((folder / name).is_file() for name in _FILES["train"])


_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes", path=str(path))
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if values.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {values.size} values, not {shape}", path=str(path))
    return values.reshape(shape)


@functools.cache
def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` of the ``train`` or ``test`` split."""
    folder = fashion_mnist_dir()
    images_name, labels_name = _FILES[split]
    if not (folder / images_name).is_file():
        raise DataError(
            f"Fashion-MNIST is not installed: {folder / images_name} is missing "
            "(apt-get install dataset-fashion-mnist, or set "
            f"{FASHION_MNIST_DIR_ENV} to a folder with the IDX files)",
            path=str(folder),
        )
    return read_idx(folder / images_name), read_idx(folder / labels_name)


_FASHION_SCHEMA = TableSchema.model_validate(
    {
        "name": "fashion-mnist",
        "features": [{"kind": "image", "name": "pixel", "shape": [28, 28], "range": [0, 255]}],
        "target": {"name": "label", "labels": list(FASHION_MNIST_LABELS)},
    }
)


class FashionMnistSource(DatasetSource):
    """Fashion-MNIST training images (60,000), pooled for a partitioner to split."""

    name = "fashion-mnist"
    # The DP-friendly CNN (tanh, GroupNorm); Poisson batches of about 1/20 of an
    # institution's rows, a few local epochs per round.
    defaults = TrainingDefaults(
        model="dpcnn", num_rounds=10, learning_rate=1.0, local_epochs=1, sample_rate=0.05
    )
    limit: ClassVar[int | None] = None

    @property
    def schema(self) -> TableSchema:
        return _FASHION_SCHEMA

    def load(self) -> pd.DataFrame:
        return _fashion_frame(self.limit)


@functools.cache
def _fashion_frame(limit: int | None) -> pd.DataFrame:
    images, labels = load_fashion_mnist("train")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    # Already a checked grid of bytes: columns built directly, not validated per value
    # (0..255 is the schema's range by construction of uint8).
    frame = pd.DataFrame(
        images.reshape(len(images), -1).astype(np.float64), columns=_FASHION_SCHEMA.feature_names
    )
    frame[_FASHION_SCHEMA.target.name] = np.asarray(FASHION_MNIST_LABELS, dtype=object)[labels]
    return frame


class SmallFashionMnistSource(FashionMnistSource):
    """The first 12,000 Fashion-MNIST training images: bounded benchmarks and tests."""

    name = "fashion-mnist-small"
    limit = 12_000
