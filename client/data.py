"""An institution's rows: where they come from, and its own held-out test split."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord, RecordDict
from sklearn.model_selection import train_test_split

from client.contract.errors import DataChangedError, DataError
from client.contract.schema import TableSchema
from client.datasets import FileSource, get_dataset
from privacy.errors import ConfigError

logger = logging.getLogger(__name__)

TEST_FRACTION = 1 / 3


@dataclass(frozen=True)
class InstitutionData:
    """One institution's validated rows, split once into training and held-out test rows."""

    name: str
    schema: TableSchema
    train: pd.DataFrame
    test: pd.DataFrame


DataLoaderFn = Callable[[Mapping[str, Any]], InstitutionData]
"""Builds an institution's data from its node config (``context.node_config``)."""


def holdout_split(
    name: str,
    frame: pd.DataFrame,
    schema: TableSchema,
    *,
    seed: int,
    test_fraction: float = TEST_FRACTION,
) -> InstitutionData:
    """Split ``frame`` into train and test, stratified by the target where every class
    has at least two rows. The split depends only on ``seed`` and the institution's name."""
    if len(frame) < 3:
        raise DataError(
            f"institution {name!r} has {len(frame)} row(s); at least 3 are needed "
            "to hold out a test split",
            institution=name,
        )
    target = frame[schema.target.name]
    stratify = target if target.value_counts().min() >= 2 else None
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    try:
        train, test = train_test_split(
            frame,
            test_size=test_fraction,
            random_state=int.from_bytes(digest[:4], "big"),
            stratify=stratify,
        )
    except ValueError:  # too few rows of a class for the requested split
        train, test = train_test_split(
            frame, test_size=test_fraction, random_state=int.from_bytes(digest[:4], "big")
        )
    return InstitutionData(
        name=name,
        schema=schema,
        train=train.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )


def load_node_data(node_config: Mapping[str, Any]) -> InstitutionData:
    """Data for a node from its config: an institution's own file, or a natural split.

    Keys: ``data-path`` and ``schema-path`` (and ``institution``, its name, and
    ``delimiter`` of a CSV, detected when absent) for an institution's file;
    otherwise ``dataset`` (default ``heart-disease``) with ``partition-id`` picking
    one of the dataset's natural institutions. ``seed`` fixes the held-out split
    (default 0).
    """
    seed = int(node_config.get("seed", 0))
    if "data-path" in node_config:
        if "schema-path" not in node_config:
            raise ConfigError("node config has data-path but no schema-path")
        delimiter = node_config.get("delimiter")
        source = FileSource(
            str(node_config["data-path"]),
            str(node_config["schema-path"]),
            delimiter=str(delimiter) if delimiter else None,
        )
        name = str(node_config.get("institution", source.data_path.stem))
        return holdout_split(name, source.load(), source.schema, seed=seed)
    dataset = get_dataset(str(node_config.get("dataset", "heart-disease")))
    institutions = dataset.institutions()
    if institutions is None:
        raise ConfigError(
            f"dataset {dataset.name!r} has no natural split into institutions; "
            "simulate it with `fedwarden simulate --dataset "
            f"{dataset.name}`, which partitions it"
        )
    index = int(node_config.get("partition-id", 0))
    names = sorted(institutions)
    if not 0 <= index < len(names):
        raise ConfigError(
            f"partition-id {index} is out of range: {dataset.name!r} has {len(names)} institutions"
        )
    return holdout_split(names[index], institutions[names[index]], dataset.schema, seed=seed)


_FINGERPRINT_KEY = "fedwarden.data"
"""The node's run state record holding the fingerprint of the rows the run began with."""


def data_fingerprint(data: InstitutionData) -> str:
    """SHA-256 over the institution's training and test rows (values, index and columns).

    Numeric columns are hashed as one float64 array (an image's 784 columns in one go;
    pandas' own hashing walks them one by one), the others with pandas' hashing.
    """
    digest = hashlib.sha256(data.name.encode())
    for frame in (data.train, data.test):
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame.index).to_numpy().tobytes())
        numeric = frame.select_dtypes(include=["number", "bool"])
        digest.update(",".join(map(str, numeric.columns)).encode())
        digest.update(numeric.to_numpy(dtype=np.float64).tobytes())
        others = frame.drop(columns=numeric.columns)
        if len(others.columns):
            digest.update(pd.util.hash_pandas_object(others, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def check_data_unchanged(state: RecordDict, *, name: str, fingerprint: str) -> None:
    """Note the rows' fingerprint on a run's first message; refuse later ones if it changed.

    A run's published row counts, its sampling rate and its privacy accounting were made
    for the rows the node began with: rows that change mid-run would train under a plan
    made for others.

    Raises
    ------
    DataChangedError
        The node's data no longer is what this run began with.
    """
    record = state.config_records.get(_FINGERPRINT_KEY)
    if record is None:
        state.config_records[_FINGERPRINT_KEY] = ConfigRecord({"sha256": fingerprint})
        return
    if record["sha256"] != fingerprint:
        logger.error("%s: the data changed during the run; refusing to take part", name)
        raise DataChangedError(
            f"{name}: the data changed since this run began (the node's rows no longer match "
            "the ones its row counts and privacy plan were made for); this node sits out the "
            "rest of the run. Restore the file, or join the next run with the new data",
            institution=name,
        )
