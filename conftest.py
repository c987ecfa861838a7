"""Fixtures every test in the workspace gets (core, packages/*, tests/)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the test models are tiny, so several threads gain nothing, and on a
    busy 2-core machine OpenMP threads spin-wait and run many times slower."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
