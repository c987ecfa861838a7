"""Session fixtures of the graph tests: tiny GIN, real solubility molecules, few-shot split."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="session")
def solubility():
    from polyprompt.graph.data import load_solubility

    return load_solubility()


@pytest.fixture(scope="session")
def split(solubility):
    """(train 50 few-shot, val, test) subsets of the scaffold split of solubility."""
    from polyprompt.graph.data import few_shot, scaffold_split

    tr, va, te = scaffold_split(solubility)
    fs = few_shot(solubility, tr, 50, seed=0)
    return solubility.subset(fs), solubility.subset(va[:64]), solubility.subset(te)


@pytest.fixture(scope="session")
def _pretrained_gin(tmp_path_factory):
    """A tiny GIN pre-trained in-situ (AttrMasking, 300 NCI molecules): no cache needed."""
    import os

    import torch

    from polyprompt.graph.config import GINConfig, PretrainGraphConfig
    from polyprompt.graph.pretrain import pretrain_gin

    home = tmp_path_factory.mktemp("pp_home")
    old = os.environ.get("POLYPROMPT_HOME")
    os.environ["POLYPROMPT_HOME"] = str(home)
    torch.set_num_threads(1)
    try:
        gin, _ = pretrain_gin(
            GINConfig(num_layers=2, emb_dim=32),
            PretrainGraphConfig(strategies=("attr_masking",), epochs=1, max_molecules=300),
            progress=False,
        )
    finally:
        if old is None:
            os.environ.pop("POLYPROMPT_HOME", None)
        else:
            os.environ["POLYPROMPT_HOME"] = old
    return gin


@pytest.fixture
def gin(_pretrained_gin):
    """A fresh copy of the tiny pre-trained GIN per test."""
    return copy.deepcopy(_pretrained_gin)
