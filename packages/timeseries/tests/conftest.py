"""Shared fixtures of the polyprompt-timeseries tests (real seglearn watch data, tiny models)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Caches go to a fresh folder: no test relies on a cache that already exists."""
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path_factory.getbasetemp() / "pp_home"))


@pytest.fixture(scope="session")
def watch():
    """Real watch windows: 128 steps, no overlap (about 1,800 windows, 10 subjects)."""
    from polyprompt.timeseries.data import load_watch

    return load_watch(window=128, stride=128)


@pytest.fixture(scope="session")
def tst_config():
    from polyprompt.timeseries.backbone import TSTConfig

    return TSTConfig(c_in=6, seq_len=128, patch_len=16, d_model=16, n_layers=2, n_heads=2, d_ff=32)
