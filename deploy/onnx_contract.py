"""What an exported ONNX artifact looks like to those who read it, without torch.

The exporter (``deploy.onnx_export``) writes graphs with these input and output
names; the service (``deploy.predictor``) feeds and reads them, and checks an
artifact's bytes against the sha256 the registry holds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

INPUT_NAMES = ("numeric", "categorical")
OUTPUT_NAME = "probabilities"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
