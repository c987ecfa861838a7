"""In-situ pre-training: both strategies run, the cache is written atomically and reused."""

from __future__ import annotations

import torch

from polyprompt.graph.config import GINConfig, PretrainGraphConfig
from polyprompt.graph.data import load_nci_unlabelled
from polyprompt.graph.pretrain import pretrain_gin


def test_pretrain_both_strategies_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path))
    mols = load_nci_unlabelled(max_molecules=64)
    assert len(mols) > 50
    cfg = PretrainGraphConfig(epochs=1, batch_size=32, max_molecules=64)
    gin, info = pretrain_gin(
        GINConfig(num_layers=2, emb_dim=16), cfg, molecules=mols, progress=False
    )
    assert not info["cached"] and set(info["losses"]) == {"attr_masking", "graphcl"}
    assert all(torch.isfinite(torch.tensor(v)).all() for v in info["losses"].values())
    files = list((tmp_path / "graph").glob("gin-*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "graph").glob("*.tmp*"))
    gin2, info2 = pretrain_gin(
        GINConfig(num_layers=2, emb_dim=16), cfg, molecules=mols, progress=False
    )
    assert info2["cached"]
    for (k, a), b in zip(gin.state_dict().items(), gin2.state_dict().values()):
        assert torch.equal(a, b), k
