"""CUDA placement, tested on a machine without a GPU: the branch, under a faked device."""

from __future__ import annotations

import pytest
import torch

from client.flower_client import _device
from privacy.errors import ConfigError
from simulations.runner import BackendSettings, _backend_config


def test_with_gpus_each_institution_gets_a_share_and_ray_sees_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    config = _backend_config(BackendSettings(), 10)

    assert config["client_resources"]["num_gpus"] == pytest.approx(0.25)
    assert config["init_args"]["num_gpus"] == 2
    assert _device("auto") == torch.device("cuda")


def test_without_gpus_nothing_asks_for_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    config = _backend_config(BackendSettings(), 10)

    assert config["client_resources"]["num_gpus"] == 0.0
    assert "num_gpus" not in config["init_args"]
    assert _device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        _device("cuda")


def test_an_explicit_gpu_share_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    config = _backend_config(BackendSettings(num_gpus_per_institution=0.5), 4)

    assert config["client_resources"]["num_gpus"] == 0.5
