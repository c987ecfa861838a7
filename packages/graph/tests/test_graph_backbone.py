"""GIN backbone: shapes, prompt hook, official pretrain-gnns checkpoint loader."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import from_smiles

from polyprompt.core.errors import CheckpointError, InputError, ShapeError
from polyprompt.graph.backbone import (
    GINBackbone,
    load_pretrain_gnns_checkpoint,
    official_key_shapes,
    with_self_loops,
)
from polyprompt.graph.config import GINConfig


def test_shapes_and_prompt_hook():
    gin = GINBackbone(GINConfig(num_layers=3, emb_dim=16)).eval()
    batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("c1ccccc1O")])
    h = gin(batch)
    assert h.shape == (10, 16)
    assert gin.pool(h, batch.batch).shape == (2, 16)
    assert gin.embed(batch).shape == (10, 16) and gin.num_blocks == 3 and gin.embed_dim == 16
    # zero prompt = no prompt; a prompt on one node changes that graph only... and its neighbours
    assert torch.allclose(gin(batch, torch.zeros(10, 16)), h)
    p = torch.zeros(10, 16)
    p[0] = 1.0
    h2 = gin(batch, p)
    assert not torch.allclose(h2[:3], h[:3]) and torch.allclose(h2[3:], h[3:])
    with pytest.raises(ShapeError, match="prompt shape"):
        gin(batch, torch.zeros(3, 16))
    with pytest.raises(InputError, match="graph="):
        gin.forward_blocks(h)
    # episode fast path: bond embeddings and self-loops computed once give the same output
    ei = with_self_loops(batch.edge_index, batch.num_nodes)
    assert ei.shape[1] == batch.edge_index.shape[1] + 10
    fast = gin.forward_blocks(
        gin.atom(batch.x) + p, graph=batch, edge_emb=gin.edge_embeddings(batch), edge_index=ei
    )
    assert torch.allclose(fast, h2, atol=1e-6)


def _synthetic_official(layers: int, d: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, shape in official_key_shapes(layers, d).items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(10)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.3
    return state


def _official_forward(state, layers, smiles):
    """pretrain-gnns chem/model.py GNN.forward (JK=last, eval) on its own 2+2 features."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    chir = {
        Chem.ChiralType.CHI_UNSPECIFIED: 0,
        Chem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
        Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 2,
    }
    btype = {
        Chem.BondType.SINGLE: 0,
        Chem.BondType.DOUBLE: 1,
        Chem.BondType.TRIPLE: 2,
        Chem.BondType.AROMATIC: 3,
    }
    x = torch.tensor([[a.GetAtomicNum() - 1, chir[a.GetChiralTag()]] for a in mol.GetAtoms()])
    src, dst, ea = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        src += [i, j]
        dst += [j, i]
        ea += [[btype[b.GetBondType()], 0]] * 2
    n = x.shape[0]
    src = torch.tensor(src + list(range(n)), dtype=torch.long)
    dst = torch.tensor(dst + list(range(n)), dtype=torch.long)
    ea = torch.tensor(ea + [[4, 0]] * n)
    h = state["x_embedding1.weight"][x[:, 0]] + state["x_embedding2.weight"][x[:, 1]]
    for i in range(layers):
        p = f"gnns.{i}."
        e = (
            state[p + "edge_embedding1.weight"][ea[:, 0]]
            + state[p + "edge_embedding2.weight"][ea[:, 1]]
        )
        agg = torch.zeros_like(h).index_add_(0, dst, h[src] + e)
        z = torch.relu(agg @ state[p + "mlp.0.weight"].T + state[p + "mlp.0.bias"])
        z = z @ state[p + "mlp.2.weight"].T + state[p + "mlp.2.bias"]
        b = f"batch_norms.{i}."
        z = (z - state[b + "running_mean"]) / torch.sqrt(state[b + "running_var"] + 1e-5)
        z = z * state[b + "weight"] + state[b + "bias"]
        h = torch.relu(z) if i < layers - 1 else z
    return h


def test_official_checkpoint_reproduces_official_forward(tmp_path):
    state = _synthetic_official(3, 16)
    path = tmp_path / "masking.pth"
    torch.save(state, path)
    gin = load_pretrain_gnns_checkpoint(path)
    assert gin.num_blocks == 3 and gin.embed_dim == 16 and not gin.training
    for smi in ["CCO", "c1ccccc1C(=O)N", "C#CC[C@H](N)Cl"]:
        ours = gin(from_smiles(smi))
        ref = _official_forward(state, 3, smi)
        assert torch.allclose(ours, ref, atol=1e-4), smi
    # a saved GNN_graphpred (keys under gnn.) works too
    gin2 = load_pretrain_gnns_checkpoint({f"gnn.{k}": v for k, v in state.items()})
    assert torch.allclose(gin2(from_smiles("CCO")), gin(from_smiles("CCO")))


def test_official_checkpoint_errors(tmp_path):
    state = _synthetic_official(2, 8)
    bad = dict(state)
    bad.pop("gnns.1.mlp.0.weight")
    with pytest.raises(CheckpointError, match=r"gnns\.1\.mlp\.0\.weight"):
        load_pretrain_gnns_checkpoint(bad)
    bad = dict(state)
    bad["gnns.0.edge_embedding1.weight"] = torch.zeros(5, 8)
    with pytest.raises(CheckpointError, match="shape"):
        load_pretrain_gnns_checkpoint(bad)
    with pytest.raises(CheckpointError, match="config asks"):
        load_pretrain_gnns_checkpoint(state, GINConfig(num_layers=5, emb_dim=8))
    with pytest.raises(CheckpointError, match="missing file"):
        load_pretrain_gnns_checkpoint(tmp_path / "none.pth")
