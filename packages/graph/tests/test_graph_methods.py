"""Baselines: gradients reach only trainable parts, trained prompts beat the untrained model."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from polyprompt.core import create
from polyprompt.core.errors import InputError
from polyprompt.graph.config import AllInOneConfig, GraphClassifierConfig
from polyprompt.graph.methods import (
    GraphAllInOne,
    GraphFullFineTune,
    GraphGPF,
    GraphGPFPlus,
    GraphLinearProbe,
    evaluate_graph_method,
    train_graph_method,
)


@pytest.mark.parametrize(
    "name", ["graph_linear_probe", "graph_gpf", "graph_gpf_plus", "graph_all_in_one"]
)
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


def test_all_in_one_inserts_prompt_graph(gin, split):
    from torch_geometric.utils import from_smiles

    from polyprompt.core.errors import ConfigError

    batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("c1ccccc1")])  # 3 + 6 nodes
    d = gin.embed_dim
    # cross_prune 0: every token links to every node of its graph; inner_prune 0: all pairs
    full = GraphAllInOne(
        gin, AllInOneConfig(num_classes=2, token_num=3, inner_prune=0.0, cross_prune=0.0)
    )
    h, ei, b, emb = full.prompted_graph(batch)
    assert h.shape == (9 + 2 * 3, d) and b.tolist() == [0] * 3 + [1] * 6 + [0] * 3 + [1] * 3
    n_orig = batch.edge_index.shape[1]
    assert ei.shape[1] == n_orig + 2 * 3 * 2 + 9 * 3 + 15  # inner + cross + self-loops
    assert all(e.shape == (ei.shape[1], d) for e in emb)
    cross = ei[:, n_orig + 12 : n_orig + 12 + 27]
    assert (b[cross[0]] == b[cross[1]]).all() and (cross[0] >= 9).all()  # token -> own graph
    # cross_prune 1 and inner_prune 1: no inserted edge, the graph nodes see no prompt
    none = GraphAllInOne(
        gin, AllInOneConfig(num_classes=2, token_num=3, inner_prune=1.0, cross_prune=1.0)
    )
    h, ei, b, emb = none.prompted_graph(batch)
    assert ei.shape[1] == n_orig + 15
    out = gin.forward_blocks(h, graph=batch, edge_emb=emb, edge_index=ei)
    assert torch.allclose(out[:9], gin(batch), atol=1e-5)
    with pytest.raises(ConfigError, match="cross_prune"):
        AllInOneConfig(num_classes=2, cross_prune=1.5)
    # trains on real data: better than untrained
    train, val, test = split
    torch.manual_seed(0)
    method = GraphAllInOne(gin, AllInOneConfig(num_classes=3, token_num=4))
    before = evaluate_graph_method(method, test)["roc_auc"]
    train_graph_method(method, train, val, epochs=10, lr=5e-3, seed=0)
    assert evaluate_graph_method(method, test)["roc_auc"] > before + 0.05
