"""Shared fixtures of the polyprompt-pointcloud tests: one torch thread, tiny backbones, a
temporary POLYPROMPT_HOME (tests never depend on an existing cache)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path_factory.getbasetemp() / "polyprompt-home"))


@pytest.fixture
def tiny_backbone():
    from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig

    torch.manual_seed(0)
    return PointMAEBackbone(PointMAEConfig.tiny()).eval()


@pytest.fixture
def clouds():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 128, 3, generator=g)
