"""Data: SMILES policy, graph checks, real data sets, scaffold split, few-shot, MoleculeNet CSV."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import from_smiles

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError
from polyprompt.graph.data import (
    check_graph,
    few_shot,
    load_freesolv,
    load_moleculenet_csv,
    scaffold_split,
    smiles_to_graphs,
)


def test_smiles_skip_and_raise():
    ds = smiles_to_graphs(["CCO", "C1CC", "[Na+]", "", "c1ccccc1"], [0, 1, 0, 1, 1])
    assert len(ds) == 2 and ds.skipped == {"unparsable": 2, "no_edges": 1}
    assert ds.num_classes == 2 and ds.labels.tolist() == [0, 1]
    with pytest.raises(InputError, match=r"row 1 .*C1CC"):
        smiles_to_graphs(["CCO", "C1CC"], [0, 1], on_invalid="raise")
    with pytest.raises(InputError, match="no edges"):
        smiles_to_graphs(["[Na+]"], [0], on_invalid="raise")
    assert len(smiles_to_graphs(["[Na+]"], [0], allow_no_edges=True)) == 1
    big = "C" * 30
    assert smiles_to_graphs([big], [0], max_nodes=20).skipped == {"too_large": 1}
    with pytest.raises(InputError, match="labels"):
        smiles_to_graphs(["CCO"], [0, 1])


def _g(smi="CCO"):
    return from_smiles(smi)


def test_check_graph_bad_inputs():
    check_graph(_g())
    g = _g()
    g.x = g.x[:0]
    with pytest.raises(InputError, match="empty graph"):
        check_graph(g)
    g = _g()
    g.x = g.x.float()
    g.x[1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="node 1"):
        check_graph(g)
    g = _g()
    g.edge_index = g.edge_index.clone()
    g.edge_index[0, 0] = 7
    with pytest.raises(InputError, match="out of range"):
        check_graph(g)
    g = _g()
    g.edge_index = g.edge_index.int()
    with pytest.raises(InputError, match="torch.long"):
        check_graph(g)
    g = _g()
    g.x = g.x[:, :5]
    with pytest.raises(ShapeError, match="expects 9"):
        check_graph(g)
    with pytest.raises(InputError, match="node cap"):
        check_graph(_g("CCCCCC"), max_nodes=4)
    with pytest.raises(InputError, match="Data/Batch"):
        check_graph(torch.zeros(3, 9))


def test_freesolv_balanced_binary():
    ds = load_freesolv()
    assert len(ds) > 550 and ds.num_classes == 2
    frac = ds.labels.float().mean().item()
    assert 0.4 < frac < 0.6


def test_scaffold_split_and_few_shot(solubility):
    tr, va, te = scaffold_split(solubility)
    assert len(set(tr) | set(va) | set(te)) == len(solubility)
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert 0.75 < len(tr) / len(solubility) <= 0.8 + 1e-9
    assert scaffold_split(solubility) == (tr, va, te)  # deterministic
    from polyprompt.graph.data import _scaffold

    scaf_train = {_scaffold(solubility.graphs[i].smiles) for i in tr}
    assert not scaf_train & {_scaffold(solubility.graphs[i].smiles) for i in te}
    fs = few_shot(solubility, tr, 50, seed=3)
    assert len(fs) == 50 and set(fs) <= set(tr)
    assert solubility.labels[fs].unique().numel() == solubility.num_classes
    assert few_shot(solubility, tr, 50, seed=3) == fs
    with pytest.raises(InputError):
        few_shot(solubility, tr[:10], 50)


def test_moleculenet_csv(tmp_path):
    bbbp = tmp_path / "BBBP.csv"
    bbbp.write_text(
        "num,name,p_np,smiles\n1,Propanolol,1,CC(C)NCC(O)COc1cccc2ccccc12\n"
        "2,Terbutylchlorambucil,1,C(=O)(OC(C)(C)C)CCCc1ccc(cc1)N(CCCl)CCCl\n"
        "3,bad,0,not_a_smiles\n4,x,0,CCN(CC)CC\n"
    )
    ds = load_moleculenet_csv(bbbp)
    assert len(ds) == 3 and ds.skipped == {"unparsable": 1} and ds.labels.tolist() == [1, 1, 0]
    tox = tmp_path / "tox21.csv"
    tox.write_text("NR-AR,SR-p53,mol_id,smiles\n0,,TOX1,CCO\n1,1,TOX2,CCN\n,0,TOX3,CCC\n")
    ds = load_moleculenet_csv(tox, "SR-p53")
    assert len(ds) == 2 and ds.skipped == {"missing_label": 1}
    assert len(load_moleculenet_csv(tox)) == 2  # first binary column: NR-AR
    bace = tmp_path / "bace.csv"
    bace.write_text(
        "mol,CID,Class,Model,pIC50\nCCOc1ccccc1,BACE_1,1,Train,9.1\nCCCC,BACE_2,0,Test,4.0\n"
    )
    assert load_moleculenet_csv(bace).labels.tolist() == [1, 0]
    with pytest.raises(InputError, match="not in columns"):
        load_moleculenet_csv(bace, "nope")
    with pytest.raises(InputError, match="not a 0/1"):
        load_moleculenet_csv(bace, "pIC50")
    with pytest.raises(InputError, match="no such file"):
        load_moleculenet_csv(tmp_path / "missing.csv")
