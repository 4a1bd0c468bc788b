"""The packages import one way (privacy ← client ← server ← deploy ← simulations), the
coordinator and the service reach the node's package only through its contract, and the
contract, the coordinator's settings and the service load without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["privacy", "client", "server", "deploy", "simulations"]
# What deploy may take from the node's package beyond its contract: the exporter
# builds the torch model it turns into ONNX.
ALLOWED_OUTSIDE_CONTRACT = {("deploy/onnx_export.py", "client.models")}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _arrows() -> list[tuple[str, str, str]]:
    arrows = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = str(path.relative_to(ROOT))
            for name in _imports(path):
                top = name.split(".")[0]
                if top in LAYERS and top != package:
                    arrows.append((package, source, name))
    return arrows


def test_packages_import_only_downwards():
    upward = [
        f"{source} imports {name}"
        for package, source, name in _arrows()
        if LAYERS.index(name.split(".")[0]) > LAYERS.index(package)
    ]

    assert upward == []


def test_the_coordinator_and_the_service_use_only_the_nodes_contract():
    outside = [
        f"{source} imports {name}"
        for package, source, name in _arrows()
        if package in ("server", "deploy")
        and name.split(".")[0] == "client"
        and not name.startswith("client.contract")
        and (source, name) not in ALLOWED_OUTSIDE_CONTRACT
    ]

    assert outside == []


def test_the_contract_the_coordinators_settings_and_the_service_load_without_torch():
    code = (
        "import sys, client.contract.wire, client.contract.plan, client.contract.schema, "
        "server.config, server.census, deploy.service; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
