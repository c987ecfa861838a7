"""Node-level RELIEF: k-hop subgraphs of a real node graph (karate club), the node-feature
GIN, GraphCL pre-training, baselines and RELIEF on the subgraphs, Planetoid raw layout,
bad inputs."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.utils import k_hop_subgraph, subgraph

from polyprompt.core.errors import ConfigError, InputError, NonFiniteError, ShapeError
from polyprompt.graph.backbone import GINBackbone
from polyprompt.graph.config import (
    GINConfig,
    GraphClassifierConfig,
    HPPOConfig,
    PretrainGraphConfig,
    RELIEFConfig,
)
from polyprompt.graph.node_tasks import (
    NodeGraph,
    few_shot_node_split,
    load_karate,
    load_planetoid_raw,
    node_subgraphs,
    pretrain_node_gin,
)


@pytest.fixture(scope="module")
def karate():
    return load_karate()


@pytest.fixture(scope="module")
def node_gin(karate, tmp_path_factory, monkeypatch_module):
    torch.set_num_threads(1)
    monkeypatch_module.setenv("POLYPROMPT_HOME", str(tmp_path_factory.mktemp("pp_nodes")))
    cfg = GINConfig(num_layers=2, emb_dim=16, in_features=34)
    pre = PretrainGraphConfig(strategies=("graphcl",), epochs=2, batch_size=16)
    gin, info = pretrain_node_gin(karate, cfg, pre, num_hops=1)
    assert not info["cached"] and len(info["losses"]) == 2
    again, info2 = pretrain_node_gin(karate, cfg, pre, num_hops=1)
    assert info2["cached"]  # written atomically under POLYPROMPT_HOME, read back
    for a, b in zip(gin.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    return gin


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_karate_is_the_real_graph(karate):
    assert karate.num_nodes == 34 and karate.edge_index.shape[1] == 156
    assert torch.bincount(karate.y).tolist() == [13, 12, 4, 5]


@pytest.mark.parametrize("hops", [1, 2])
def test_subgraphs_match_k_hop_subgraph(karate, hops):
    subs = node_subgraphs(karate, num_hops=hops)
    assert len(subs) == 34
    for i, g in enumerate(subs.graphs):
        subset, _, mapping, _ = k_hop_subgraph(i, hops, karate.edge_index, relabel_nodes=True)
        assert g.node_id == i and g.center == int(mapping[0])
        assert torch.equal(g.x, karate.x[subset])
        assert torch.equal(g.x[g.center], karate.x[i])
        ref, _ = subgraph(subset, karate.edge_index, relabel_nodes=True, num_nodes=34)
        assert torch.equal(g.edge_index, ref)
        assert g.edge_attr.shape == (g.edge_index.shape[1], 0)
        assert int(g.y) == int(karate.y[i])


def test_max_nodes_keeps_nearest(karate):
    subs = node_subgraphs(karate, [0], num_hops=2, max_nodes=10)
    g = subs.graphs[0]
    assert g.num_nodes == 10
    one_hop, _, _, _ = k_hop_subgraph(0, 1, karate.edge_index)
    assert one_hop.numel() > 10  # node 0 has 16 neighbours: all 10 kept are 1-hop
    assert set(g.x.argmax(1).tolist()) <= set(one_hop.tolist())
    assert int(g.x[g.center].argmax()) == 0


def test_few_shot_split_is_seeded_stratified_disjoint(karate):
    tr, va, te = few_shot_node_split(karate, 2, seed=3)
    assert torch.bincount(karate.y[tr], minlength=4).tolist() == [2, 2, 2, 2]
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert len(tr) + len(va) + len(te) == 34
    assert (tr, va, te) == few_shot_node_split(karate, 2, seed=3)
    assert tr != few_shot_node_split(karate, 2, seed=4)[0]


def test_feature_gin_shapes_and_prompt(node_gin, karate):
    batch = Batch.from_data_list(node_subgraphs(karate, [0, 5, 33], num_hops=1).graphs)
    h = node_gin(batch)
    assert h.shape == (batch.num_nodes, 16)
    assert node_gin.pool(h, batch.batch).shape == (3, 16)
    p = torch.zeros_like(h)
    assert torch.allclose(node_gin(batch, p), h)
    p[0] = 1.0
    assert not torch.allclose(node_gin(batch, p), h)
    with pytest.raises(ShapeError, match="prompt shape"):
        node_gin(batch, torch.zeros(2, 16))


def test_molecule_path_unchanged():
    cfg = GINConfig(num_layers=2, emb_dim=8)
    assert "in_features" not in GINBackbone(cfg).identity()
    # molecule cache keys are those of before the option existed (no "in_features" key)
    import hashlib
    import json

    from polyprompt.graph.pretrain import cache_key

    gin = cfg.to_dict()
    assert gin.pop("in_features") is None
    pre = PretrainGraphConfig()
    payload = json.dumps(
        {"format": "1", "gin": gin, "pre": pre.to_dict(), "data": "x"}, sort_keys=True
    )
    assert cache_key(cfg, pre, "x") == hashlib.sha256(payload.encode()).hexdigest()[:16]
    feat = GINConfig(num_layers=2, emb_dim=8, in_features=5)
    assert cache_key(feat, pre, "x") != cache_key(cfg, pre, "x")


def test_gpf_plus_gradients_reach_only_prompt_and_head(node_gin, karate):
    from polyprompt.graph.methods import GraphGPFPlus

    m = GraphGPFPlus(copy.deepcopy(node_gin), GraphClassifierConfig(num_classes=4, num_basis=3))
    batch = Batch.from_data_list(node_subgraphs(karate, [1, 2, 30], num_hops=1).graphs)
    y = karate.y[[1, 2, 30]]
    torch.nn.functional.cross_entropy(m(batch), y).backward()
    for name, p in m.named_parameters():
        if name.startswith("backbone."):
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None, name


def test_relief_on_karate_trains_sparse(node_gin, karate):
    from polyprompt.graph.relief import RELIEF

    tr, va, te = few_shot_node_split(karate, 2, seed=0)
    subs = node_subgraphs(karate, num_hops=1)
    frozen = {k: v.clone() for k, v in node_gin.state_dict().items()}
    agent = HPPOConfig(ensemble_num=2, update_epochs=2, minibatch_size=32)
    relief = RELIEF(node_gin, RELIEFConfig(num_classes=4, epochs=2, agent=agent))
    history = relief.fit(subs.subset(tr), subs.subset(va), seed=0)
    assert len(history) == 2
    out = relief.evaluate(subs.subset(te), generator=torch.Generator().manual_seed(0))
    assert 0 < out["prompt_ratio"] < 1  # sparse: revisits leave some nodes unprompted
    assert 0 <= out["accuracy"] <= 1 and np.isfinite(out["loss"])
    for k, v in node_gin.state_dict().items():  # the GIN stays frozen
        assert torch.equal(v, frozen[k]), k
    trainable = {n for n, p in relief.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("backbone.") for n in trainable)


def test_linear_probe_runs_on_subgraphs(node_gin, karate):
    from polyprompt.graph.methods import (
        GraphLinearProbe,
        evaluate_graph_method,
        train_graph_method,
    )

    tr, va, te = few_shot_node_split(karate, 2, seed=0)
    subs = node_subgraphs(karate, num_hops=1)
    m = GraphLinearProbe(node_gin, GraphClassifierConfig(num_classes=4))
    train_graph_method(m, subs.subset(tr), subs.subset(va), epochs=3)
    assert set(evaluate_graph_method(m, subs.subset(te))) >= {"accuracy", "roc_auc"}


def _bad(karate, **kw):
    base = dict(x=karate.x, edge_index=karate.edge_index, y=karate.y, num_classes=4)
    base.update(kw)
    return NodeGraph(**base)


def test_bad_inputs(karate, node_gin):
    with pytest.raises(InputError, match="labels `y` are missing"):
        node_subgraphs(_bad(karate, y=None))
    with pytest.raises(InputError, match="num_hops"):
        node_subgraphs(karate, num_hops=0)
    with pytest.raises(InputError, match="empty graph"):
        node_subgraphs(
            _bad(karate, x=torch.zeros(0, 34), edge_index=torch.zeros(2, 0, dtype=torch.long))
        )
    ei = karate.edge_index.clone()
    ei[0, 3] = 34
    with pytest.raises(InputError, match="out of range"):
        node_subgraphs(_bad(karate, edge_index=ei))
    x = karate.x.clone()
    x[5, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="node 5"):
        node_subgraphs(_bad(karate, x=x))
    with pytest.raises(InputError, match="target node index"):
        node_subgraphs(karate, [40])
    y = karate.y.clone()
    y[0] = -1
    with pytest.raises(InputError, match="no label"):
        node_subgraphs(_bad(karate, y=y), [0])
    with pytest.raises(InputError, match="need > 5 shots"):
        few_shot_node_split(karate, 5)
    with pytest.raises(ConfigError):
        GINConfig(in_features=0)
    # the backbone checks what it is given
    g = node_subgraphs(karate, [0], num_hops=1).graphs[0]
    with pytest.raises(ShapeError, match="expects 34"):
        node_gin(Batch.from_data_list([g.clone().update({"x": g.x[:, :10]})]))
    with pytest.raises(ShapeError, match="edge_attr"):
        node_gin(g.clone().update({"edge_attr": None}))
    with pytest.raises(InputError, match="real-valued"):
        node_gin(g.clone().update({"x": g.x.long()}))


def _write_planetoid(folder, name="toy", n_train=6, n_test=4, n_extra=500, f=5, c=3, seed=0):
    """A tiny folder in the official Planetoid layout (pickled scipy CSR / numpy one-hot,
    dict-of-lists graph, text test index), as ``torch_geometric.io.read_planetoid_data``
    reads it."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_all = n_train + n_extra  # allx: labelled + unlabelled training nodes (val 500 inside)
    n = n_all + n_test

    def onehot(k):
        return np.eye(c)[rng.integers(0, c, k)]

    feats = rng.random((n, f)).astype(np.float32)
    ally = onehot(n_all)
    ty = onehot(n_test)
    test_index = np.arange(n_all, n)[::-1]  # shuffled order, as the official files
    items = {
        "x": sp.csr_matrix(feats[:n_train]),
        "y": ally[:n_train],
        "allx": sp.csr_matrix(feats[:n_all]),
        "ally": ally,
        "tx": sp.csr_matrix(feats[test_index]),
        "ty": ty,
        "graph": {i: [(i + 1) % n, (i + 7) % n] for i in range(n)},
    }
    for key, obj in items.items():
        with open(folder / f"ind.{name}.{key}", "wb") as fh:
            pickle.dump(obj, fh)
    (folder / f"ind.{name}.test.index").write_text("\n".join(map(str, test_index)) + "\n")
    return feats, ally, ty, test_index


def test_planetoid_raw_layout(tmp_path):
    feats, ally, ty, test_index = _write_planetoid(tmp_path)
    with pytest.raises(InputError, match="pickles"):  # untrusted by default
        load_planetoid_raw(tmp_path, "toy")
    g = load_planetoid_raw(tmp_path, "toy", trust_pickle=True)
    n = 510
    assert g.num_nodes == n and g.x.shape == (n, 5) and g.num_classes <= 3
    assert torch.allclose(g.x[:506], torch.from_numpy(feats[:506]))
    # test rows are put back at their node index
    assert torch.allclose(g.x[test_index[0]], torch.from_numpy(feats[test_index[0]]))
    assert g.y[:506].tolist() == ally.argmax(1).tolist()
    assert g.y[torch.from_numpy(test_index.copy())].tolist() == ty.argmax(1).tolist()
    assert int(g.masks["train"].sum()) == 6 and int(g.masks["val"].sum()) == 500
    assert int(g.masks["test"].sum()) == 4
    subs = node_subgraphs(g, torch.nonzero(g.masks["train"]).view(-1), num_hops=2)
    assert len(subs) == 6 and all(s.x.shape[1] == 5 for s in subs.graphs)
    (tmp_path / "ind.toy.ty").unlink()
    with pytest.raises(InputError, match="ind.toy.ty"):
        load_planetoid_raw(tmp_path, "toy", trust_pickle=True)


def test_gym_env_accepts_node_subgraphs(node_gin, karate):
    import warnings

    from stable_baselines3.common.env_checker import check_env

    from polyprompt.graph.env import GraphPromptEnv
    from polyprompt.graph.methods import ProjectionHead

    graphs = node_subgraphs(karate, [4, 10, 16], num_hops=1).graphs
    env = GraphPromptEnv(graphs, node_gin, ProjectionHead(16, 4), max_z=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, warn=True)
    bad = graphs[0].clone().update({"edge_attr": torch.zeros(graphs[0].num_edges, 3)})
    with pytest.raises(ShapeError, match="edge_attr"):
        GraphPromptEnv([bad], node_gin, ProjectionHead(16, 4))


def test_node_demo_quick(tmp_path, monkeypatch):
    from polyprompt.graph.node_demo import format_rows, run_node_demo

    monkeypatch.setenv("POLYPROMPT_HOME", str(tmp_path / "home"))
    out = run_node_demo(quick=True, seeds=1, out_dir=tmp_path)
    methods = [r["method"] for r in out["rows"]]
    assert methods == ["linear probe", "GPF-plus", "RELIEF"]
    relief = out["rows"][-1]
    assert 0 < relief["prompt_ratio"] < 100
    assert (tmp_path / "graph_nodes.json").is_file()
    assert "| RELIEF |" in (tmp_path / "graph_nodes.md").read_text()
    assert "RELIEF" in format_rows(out["rows"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "/nonexistent/planetoid"], "missing Planetoid file"),
        (["--seeds", "0"], "seeds must be an int >= 1"),
        (["--shots", "0"], "shots must be an int >= 1"),
        (["--hops", "-1"], "hops must be an int >= 1"),
    ],
)
def test_node_demo_main_reports_bad_input_without_a_traceback(argv, message, capsys, tmp_path):
    from polyprompt.graph.node_demo import main

    assert main(["--quick", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relief_nodes: error:") and message in err
    assert "Traceback" not in err
