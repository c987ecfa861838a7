"""Baselines: gradients reach only trainable parts, trained prompts beat the untrained model."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from polyprompt.core import create
from polyprompt.core.errors import InputError
from polyprompt.graph.config import GraphClassifierConfig
from polyprompt.graph.methods import (
    GraphFullFineTune,
    GraphGPF,
    GraphGPFPlus,
    GraphLinearProbe,
    evaluate_graph_method,
    train_graph_method,
)


@pytest.mark.parametrize("name", ["graph_linear_probe", "graph_gpf", "graph_gpf_plus"])
def test_gradients_only_reach_prompt_and_head(gin, split, name):
    method = create(name, gin, num_classes=3)
    batch = Batch.from_data_list(split[0].graphs[:4])
    method(batch).sum().backward()
    for n, p in method.named_parameters():
        if n.startswith("backbone."):
            assert p.grad is None and not p.requires_grad, n
        else:
            assert p.grad is not None, n
    assert set(method.trainable_state_dict()) == {
        n for n, p in method.named_parameters() if not n.startswith("backbone.")
    }


def test_full_finetune_trains_everything(gin):
    ft = GraphFullFineTune(gin, GraphClassifierConfig(num_classes=2))
    assert all(p.requires_grad for p in ft.parameters())


def test_gpf_plus_beats_untrained_on_real_data(gin, split):
    train, val, test = split
    torch.manual_seed(0)
    method = GraphGPFPlus(gin, GraphClassifierConfig(num_classes=3, num_basis=4))
    before = evaluate_graph_method(method, test)["roc_auc"]
    result = train_graph_method(method, train, val, epochs=15, lr=5e-3, seed=0)
    after = evaluate_graph_method(method, test)["roc_auc"]
    assert result.best_epoch is not None
    assert after > before + 0.05


def test_bad_graph_inputs_raise(gin):
    method = GraphGPF(gin, GraphClassifierConfig(num_classes=2))
    from torch_geometric.utils import from_smiles

    g = from_smiles("CCO")
    g.edge_index = g.edge_index.clone()
    g.edge_index[1, 0] = 99
    with pytest.raises(InputError, match="out of range"):
        method(Batch.from_data_list([g]))
    with pytest.raises(InputError, match="GINBackbone-like"):
        GraphLinearProbe(torch.nn.Linear(2, 2), GraphClassifierConfig(num_classes=2))
