"""Images: the image schema kind, Fashion-MNIST read offline, the DP CNN, NPZ institutions."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from client.contract.architecture import ModelSpec
from client.contract.schema import TableSchema
from client.datasets import get_dataset
from client.image_datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_DIR_ENV,
    load_fashion_mnist,
    read_idx,
)
from client.models import build_model
from client.training import evaluate_model, train_locally
from simulations.own_data import OwnData
from simulations.scenario import Scenario

IMAGE_SCHEMA = {
    "name": "tiny-fashion",
    "features": [{"kind": "image", "name": "pixel", "shape": [28, 28], "range": [0, 255]}],
    "target": {"name": "label", "labels": ["top", "trouser", "bag"]},
}


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def blob_images(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 28x28 images a CNN tells apart: a bright band at rows 2, 12 or 22."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, label in enumerate(labels):
        images[i, 2 + 10 * label : 6 + 10 * label, :] = 230
    return images.astype(np.uint8), labels


def test_an_image_feature_is_its_pixels_with_the_shape_recorded():
    schema = TableSchema.model_validate(IMAGE_SCHEMA)

    assert schema.image_shape == (28, 28)
    assert len(schema.features) == 784 and schema.features[-1].name == "pixel_783"
    assert TableSchema.model_validate_json(schema.model_dump_json()) == schema


def test_an_image_beside_other_features_is_refused():
    bad = {**IMAGE_SCHEMA, "features": [*IMAGE_SCHEMA["features"], {"kind": "numeric",
           "name": "age", "range": [0, 1]}]}  # fmt: skip

    with pytest.raises(ValueError, match="exactly one image feature"):
        TableSchema.model_validate(bad)


def test_idx_files_read_as_fashion_mnist(tmp_path, monkeypatch):
    images, labels = blob_images(30, seed=0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path))
    load_fashion_mnist.cache_clear()
    try:
        read, read_labels = load_fashion_mnist("train")
    finally:
        load_fashion_mnist.cache_clear()

    assert read.shape == (30, 28, 28) and np.array_equal(read, images)
    assert np.array_equal(read_labels, labels)
    assert read_idx(tmp_path / "train-labels-idx1-ubyte.gz").dtype == np.uint8


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path, monkeypatch):
    from client.contract.errors import DataError

    monkeypatch.setenv(FASHION_MNIST_DIR_ENV, str(tmp_path))
    load_fashion_mnist.cache_clear()
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train")
    load_fashion_mnist.cache_clear()


def test_npz_institutions_train_the_dp_cnn(tmp_path):
    """The image path without the Debian package: NPZ files, the image schema, DP-SGD."""
    folder = tmp_path / "labs"
    folder.mkdir()
    for seed, name in enumerate(("lab-a", "lab-b", "lab-c")):
        images, labels = blob_images(90, seed=seed)
        np.savez(folder / f"{name}.npz", X=images, y=np.array(["top", "trouser", "bag"])[labels])
    schema_path = tmp_path / "schema.json"
    schema_path.write_text(TableSchema.model_validate(IMAGE_SCHEMA).model_dump_json())
    scenario = Scenario(own_data=OwnData(data=folder, schema_path=schema_path))
    data = scenario.all_institutions()[0]
    x = data.train[data.schema.feature_names].to_numpy(np.float32) / 255
    y = data.train["label"].map({"top": 0, "trouser": 1, "bag": 2}).to_numpy()
    spec = ModelSpec(name="dpcnn", num_features=784, num_classes=3, image_shape=(28, 28))
    model = build_model(spec, seed=0)

    outcome = train_locally(model, x, y, epochs=8, learning_rate=1.0, sample_rate=0.25,
                            noise_multiplier=0.5, max_grad_norm=1.0, seed=0,
                            device=torch.device("cpu"))  # fmt: skip
    result = evaluate_model(model, x, y, device=torch.device("cpu"))

    assert scenario.num_institutions == 3 and len(data.train) == 60
    assert outcome.accounting is not None and outcome.accounting.steps == 8 * 4
    assert result.accuracy > 0.6  # three balanced classes: chance is 1/3


@pytest.mark.skipif(
    not (DEFAULT_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_the_debian_package_splits_into_institutions():
    source = get_dataset("fashion-mnist-small")

    scenario = Scenario(dataset="fashion-mnist-small", institutions=10, partition="dirichlet")
    first = scenario.all_institutions()[0]

    assert source.schema.image_shape == (28, 28)
    assert len(source.load()) == 12_000
    assert scenario.num_institutions == 10
    assert len(first.train) > 0 and set(first.train.columns) >= {"pixel_0", "label"}
