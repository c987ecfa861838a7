"""Node classification as RELIEF episodes: one k-hop induced subgraph per target node.

RELIEF's official node-level code (JasonZhujp/RELIEF ``node_level/preprocess.py``,
``split_subgraph`` / ``generate_subgraph``) turns a node task into a graph task: for every
target node ``i`` it takes ``k_hop_subgraph(i, num_hops)``, the induced subgraph
(``subgraph(subset, edge_index, relabel_nodes=True)``) with the node's features and the
*node's* label ``y[i]``; ``node_level/main.py`` then runs the graph-level machinery on these
subgraphs with a 2-layer GIN and **mean pooling** (``--graph_pooling mean``): the readout is
the pooled subgraph, not the centre node, so the existing :class:`~polyprompt.graph.relief.RELIEF`
and baselines apply unchanged. Official choices: ``num_hops`` 4 (Cora), 3 (CiteSeer), 2
(PubMed / Amazon); features SVD-reduced to 100; ``shot_number`` nodes per class for
training, then 500 validation and 500 test nodes drawn at random from the rest; subgraphs
with fewer than ``min_node_num_limit`` or more than ``max_node_num_limit`` nodes excluded.

Here every subgraph also records ``center`` (the centre node's index inside the subgraph)
and ``node_id`` (its index in the full graph), and carries ``edge_attr`` of shape
``(E, 0)`` (featureless edges, :class:`~polyprompt.graph.backbone.ZeroBond`).

Data (offline, nothing downloads):

* :func:`load_karate` -- Zachary's karate club as shipped inside torch_geometric
  (``torch_geometric.datasets.KarateClub``: 34 members, 78 friendships; one-hot identity
  features; 4 classes, the community labels of the PyG dataset, obtained by modularity-based
  clustering, following Kipf & Welling's GCN example).
* :func:`load_planetoid_raw` -- the official Planetoid files
  ``ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`` from a local folder, read by
  :func:`torch_geometric.io.read_planetoid_data` (the reader ``Planetoid`` uses; the files
  are Python pickles, read only trusted copies).

In-situ pre-training (:func:`pretrain_node_gin`): GraphCL (You et al. 2020; node dropping
vs. feature masking views, NT-Xent) on the k-hop subgraphs of all nodes of the unlabelled
graph, cached under ``$POLYPROMPT_HOME/graph/``. The official node code loads a
ProG-pre-trained GIN (``--gnn_file Gprompt_Cora.pth``); this is the documented substitute.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyprompt.core.errors import InputError, NonFiniteError, ShapeError
from polyprompt.graph.data import check_edge_index

__all__ = [
    "NodeGraph",
    "NodeSubgraphs",
    "check_feature_graph",
    "check_node_graph",
    "few_shot_node_split",
    "load_karate",
    "load_planetoid_raw",
    "node_subgraphs",
    "pretrain_node_gin",
]


@dataclass
class NodeGraph:
    """A node-classification graph: ``x`` (N, F) float, ``edge_index`` (2, E), ``y`` (N,)
    long (``-1`` = unlabelled), optional boolean ``train/val/test`` masks."""

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor | None
    num_classes: int
    name: str = "graph"
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    def fingerprint(self) -> str:
        """sha256 (16 hex) of features, edges and labels (cache keys depend on the data)."""
        h = hashlib.sha256()
        for t in (self.x.float(), self.edge_index, self.y):
            if t is not None:
                h.update(t.contiguous().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass
class NodeSubgraphs(torch.utils.data.Dataset):
    """One induced subgraph (PyG ``Data``) per target node; the interface of
    :class:`~polyprompt.graph.data.MoleculeData` used by RELIEF and the baselines."""

    graphs: list[Any]
    num_classes: int
    name: str = "nodes"

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> Any:
        return self.graphs[i]

    @property
    def labels(self) -> torch.Tensor:
        return torch.cat([g.y.view(-1) for g in self.graphs]) if self.graphs else torch.zeros(0)

    def subset(self, indices: Sequence[int], name: str | None = None) -> NodeSubgraphs:
        return NodeSubgraphs([self.graphs[i] for i in indices], self.num_classes, name or self.name)


# ------------------------------------------------------------------------- validation
def _check_x(x: Any, where: str, in_features: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{where}: node features `x` must be a tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ShapeError(f"{where}: `x` must be (num_nodes, num_features), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{where}: empty graph (0 nodes)")
    if in_features is not None and x.shape[1] != in_features:
        raise ShapeError(
            f"{where}: `x` has {x.shape[1]} features per node, the backbone expects {in_features}"
        )
    if not x.is_floating_point():
        raise InputError(f"{where}: node features must be real-valued (float), got {x.dtype}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(1).nonzero()[0, 0])
        raise NonFiniteError(f"{where}: node features contain NaN/inf (first at node {bad})")


def check_node_graph(graph: NodeGraph, where: str = "node graph") -> None:
    """Raise one of our errors when ``graph`` is not a valid node-classification graph.

    Raises:
        InputError: labels missing, empty graph, integer features, ``edge_index`` of the
            wrong dtype or out of range, labels outside ``[0, num_classes)`` (``-1`` allowed).
        NonFiniteError: NaN / inf node features.
        ShapeError: ``x`` / ``edge_index`` / ``y`` / mask shapes.
    """
    _check_x(graph.x, where)
    n = graph.num_nodes
    check_edge_index(graph.edge_index, n, where)
    if graph.y is None:
        raise InputError(f"{where}: node labels `y` are missing (node classification needs y)")
    if graph.y.shape != (n,):
        raise ShapeError(f"{where}: `y` must be ({n},), got {tuple(graph.y.shape)}")
    if graph.num_classes < 2:
        raise InputError(f"{where}: num_classes must be >= 2, got {graph.num_classes}")
    y = graph.y
    if ((y < -1) | (y >= graph.num_classes)).any():
        raise InputError(f"{where}: labels must be in [0, {graph.num_classes}) or -1 (unlabelled)")
    for name, m in graph.masks.items():
        if m.dtype != torch.bool or m.shape != (n,):
            raise ShapeError(f"{where}: mask {name!r} must be a bool tensor of shape ({n},)")


def check_feature_graph(
    data: Any, in_features: int, *, max_nodes: int | None = None, where: str = "graph"
) -> None:
    """Validate a PyG ``Data``/``Batch`` for a node-feature GIN (``GINConfig.in_features``):
    float finite ``x`` ``(N, in_features)``, ``edge_index`` in range, ``edge_attr`` ``(E, 0)``
    (as :func:`node_subgraphs` builds it), at most ``max_nodes`` nodes per graph."""
    x = getattr(data, "x", None)
    _check_x(x, where, in_features)
    n = x.shape[0]
    check_edge_index(getattr(data, "edge_index", None), n, where)
    ea = getattr(data, "edge_attr", None)
    e = data.edge_index.shape[1]
    if ea is None or ea.dim() != 2 or ea.shape != (e, 0):
        got = None if ea is None else tuple(ea.shape)
        raise ShapeError(
            f"{where}: featureless edges need `edge_attr` of shape ({e}, 0), got {got} "
            "(build the graphs with polyprompt.graph.node_tasks.node_subgraphs)"
        )
    if max_nodes is not None:
        batch = getattr(data, "batch", None)
        sizes = [n] if batch is None else torch.bincount(batch).tolist()
        if max(sizes) > max_nodes:
            raise InputError(f"{where}: a graph has {max(sizes)} nodes, more than {max_nodes}")


# ------------------------------------------------------------------------- subgraphs
def node_subgraphs(
    graph: NodeGraph,
    nodes: Sequence[int] | torch.Tensor | None = None,
    num_hops: int = 2,
    *,
    max_nodes: int | None = None,
    require_labels: bool = True,
) -> NodeSubgraphs:
    """The ``num_hops``-hop induced subgraph of every node in ``nodes`` (default: all), each
    ``Data(x, edge_index, edge_attr (E, 0), y (1,), center, node_id)`` -- official
    ``generate_subgraph`` in ``node_level/preprocess.py``.

    ``max_nodes``: keep the ``max_nodes - 1`` nearest nodes (BFS order, then index) when a
    neighbourhood is larger (the official code drops such targets instead).

    Raises:
        InputError: ``num_hops < 1``, node index out of range, unlabelled target node.
    """
    from torch_geometric.data import Data
    from torch_geometric.utils import k_hop_subgraph, subgraph

    where = f"node_subgraphs({graph.name})"
    if not isinstance(num_hops, int) or isinstance(num_hops, bool) or num_hops < 1:
        raise InputError(f"{where}: num_hops must be an int >= 1, got {num_hops!r}")
    if require_labels or graph.y is not None:
        check_node_graph(graph, where)
    else:
        _check_x(graph.x, where)
        check_edge_index(graph.edge_index, graph.num_nodes, where)
    n = graph.num_nodes
    idx = torch.arange(n) if nodes is None else torch.as_tensor(nodes, dtype=torch.long).view(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise InputError(f"{where}: target node index out of range [0, {n})")
    x = graph.x.float()
    out = []
    for i in idx.tolist():
        subset, _, mapping, _ = k_hop_subgraph(i, num_hops, graph.edge_index, num_nodes=n)
        if max_nodes is not None and subset.numel() > max_nodes:
            hops = [torch.tensor([i])]  # BFS rings, nearest first
            for h in range(1, num_hops + 1):
                ring, _, _, _ = k_hop_subgraph(i, h, graph.edge_index, num_nodes=n)
                hops.append(ring[~torch.isin(ring, torch.cat(hops))])
            subset = torch.cat(hops)[:max_nodes].sort().values
            mapping = (subset == i).nonzero().view(-1)
        ei, _ = subgraph(subset, graph.edge_index, relabel_nodes=True, num_nodes=n)
        y = None
        if graph.y is not None:
            if require_labels and int(graph.y[i]) < 0:
                raise InputError(f"{where}: target node {i} has no label (y = -1)")
            y = graph.y[i].view(1).long()
        out.append(
            Data(
                x=x[subset],
                edge_index=ei,
                edge_attr=x.new_zeros(ei.shape[1], 0),
                y=y,
                center=int(mapping[0]),
                node_id=i,
            )
        )
    return NodeSubgraphs(out, graph.num_classes, graph.name)


def few_shot_node_split(
    graph: NodeGraph,
    shots: int,
    *,
    num_val: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """Seeded few-shot split (official ``split_subgraph``): ``shots`` labelled nodes per
    class for training, then validation / test nodes drawn at random from the remaining
    labelled nodes (default: half / half of them; the official code uses 500 / 500).

    Raises:
        InputError: labels missing, ``shots < 1``, a class with fewer than ``shots + 1``
            nodes, not enough nodes left for the requested validation / test sizes.
    """
    where = f"few_shot_node_split({graph.name})"
    check_node_graph(graph, where)
    if not isinstance(shots, int) or shots < 1:
        raise InputError(f"{where}: shots must be an int >= 1, got {shots!r}")
    rng = random.Random(seed)
    y = graph.y.tolist()
    train: list[int] = []
    for c in range(graph.num_classes):
        members = [i for i, v in enumerate(y) if v == c]
        if len(members) <= shots:
            raise InputError(
                f"{where}: class {c} has {len(members)} labelled nodes, need > {shots} shots"
            )
        train += rng.sample(members, shots)
    chosen = set(train)
    rest = [i for i, v in enumerate(y) if v >= 0 and i not in chosen]
    rng.shuffle(rest)
    nv = len(rest) // 2 if num_val is None else num_val
    nt = len(rest) - nv if num_test is None else num_test
    if nv < 1 or nt < 1 or nv + nt > len(rest):
        raise InputError(
            f"{where}: {len(rest)} labelled nodes left, cannot draw {nv} val + {nt} test"
        )
    return sorted(train), sorted(rest[:nv]), sorted(rest[nv : nv + nt])


# ------------------------------------------------------------------------- data
def load_karate() -> NodeGraph:
    """Zachary's karate club from ``torch_geometric.datasets.KarateClub`` (bundled, no
    download): 34 nodes, 156 directed edges, identity one-hot features (34), 4 community
    labels (13 / 12 / 4 / 5 members; the PyG labels from modularity-based clustering)."""
    from torch_geometric.datasets import KarateClub

    d = KarateClub()[0]
    return NodeGraph(d.x.float(), d.edge_index, d.y.long(), 4, "karate")


def load_planetoid_raw(folder: str | Path, name: str, *, trust_pickle: bool = False) -> NodeGraph:
    """The official Planetoid layout (``ind.<name>.x/.tx/.allx/.y/.ty/.ally/.graph/.test.index``)
    in ``folder``, read with :func:`torch_geometric.io.read_planetoid_data` (no download).
    Labels are the arg-max of the one-hot rows (nodes with an all-zero row -- CiteSeer's
    isolated test nodes -- get ``-1``). Masks: the Planetoid ``train/val/test`` split.

    The official files are Python pickles, and unpickling can run code from the file, so
    they are read only with ``trust_pickle=True`` (the example's ``--trust-pickle``): pass it
    for a copy you trust (e.g. the kimiyoung/planetoid repository's ``data/`` folder).

    Raises:
        InputError: missing folder or file (names which), ``trust_pickle`` not set,
            unreadable content.
    """
    from torch_geometric.io import read_planetoid_data

    folder = Path(folder)
    where = f"load_planetoid_raw({folder}, {name!r})"
    missing = [
        f"ind.{name.lower()}.{s}"
        for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
        if not (folder / f"ind.{name.lower()}.{s}").is_file()
    ]
    if missing:
        raise InputError(f"{where}: missing Planetoid file(s) {missing}")
    if not trust_pickle:
        raise InputError(
            f"{where}: the Planetoid files are Python pickles, which can run code when loaded; "
            "pass trust_pickle=True (example: --trust-pickle) only for a copy you trust"
        )
    try:
        d = read_planetoid_data(str(folder), name)
    except Exception as exc:  # malformed pickles / shapes
        raise InputError(
            f"{where}: unreadable Planetoid data ({type(exc).__name__}: {exc})"
        ) from exc
    y = d.y.long()
    if y.dim() == 2:  # one-hot (older PyG versions)
        y = torch.where(d.y.sum(1) > 0, d.y.argmax(1), -1)
    num_classes = int(y.max()) + 1
    masks = {k: d[f"{k}_mask"] for k in ("train", "val", "test")}
    graph = NodeGraph(d.x.float(), d.edge_index, y, num_classes, name.lower(), masks)
    check_node_graph(graph, where)
    return graph


# ------------------------------------------------------------------------- pre-training
def _mask_features(batch: Any, rate: float, gen: torch.Generator) -> Any:
    n = batch.x.shape[0]
    k = max(1, round(rate * n))
    idx = torch.randperm(n, generator=gen)[:k]
    masked = batch.clone()
    masked.x = batch.x.clone()
    masked.x[idx] = 0.0
    return masked


def pretrain_node_gin(
    graph: NodeGraph,
    gin_config: Any = None,
    pretrain_config: Any = None,
    *,
    num_hops: int = 2,
    cache: bool = True,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """GraphCL pre-training of a node-feature GIN on the ``num_hops``-hop subgraphs of all
    nodes of ``graph`` (labels unused); cached under ``$POLYPROMPT_HOME/graph/`` keyed by
    the configs and the data fingerprint. Views: node dropping and feature masking (ratio
    ``aug_ratio``), projection MLP, NT-Xent with ``temperature`` (the pieces of
    :mod:`polyprompt.graph.pretrain`). Only ``"graphcl"`` in ``strategies`` applies.

    Returns ``(backbone in eval mode, info)`` with ``cached``, ``seconds``, ``losses``, ``path``.
    """
    from safetensors.torch import load_file, save_file

    from polyprompt.core.io import atomic_write
    from polyprompt.graph.backbone import GINBackbone
    from polyprompt.graph.config import GINConfig, PretrainGraphConfig
    from polyprompt.graph.pretrain import _train, cache_key, cache_path

    gin_cfg = gin_config or GINConfig(num_layers=2, emb_dim=64, in_features=graph.x.shape[1])
    if gin_cfg.in_features != graph.x.shape[1]:
        raise InputError(
            f"pretrain_node_gin: GINConfig.in_features={gin_cfg.in_features} but the graph has "
            f"{graph.x.shape[1]} node features"
        )
    cfg = pretrain_config or PretrainGraphConfig(strategies=("graphcl",), epochs=20, batch_size=16)
    start = time.perf_counter()
    fp = json.dumps({"node_graph": graph.fingerprint(), "hops": num_hops})
    key = cache_key(gin_cfg, cfg, fp)
    path = cache_path(key)
    model = GINBackbone(gin_cfg)
    if cache and path.is_file():
        try:
            model.load_state_dict(load_file(str(path)))
            info = {"cached": True, "seconds": time.perf_counter() - start, "path": str(path)}
            return model.eval(), {**info, "losses": []}
        except Exception:  # corrupt / incompatible cache: retrain and overwrite
            pass
    graphs = node_subgraphs(
        graph, num_hops=num_hops, max_nodes=gin_cfg.max_nodes, require_labels=False
    ).graphs
    torch.manual_seed(cfg.seed)
    model = GINBackbone(gin_cfg)
    # the molecule GraphCL loop, with feature masking as the second view
    losses = _train(
        model,
        graphs,
        cfg,
        "graphcl",
        progress,
        second_view=_mask_features,
        desc="pre-train node GIN",
    )
    model.eval()
    if cache:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"key": key}))
    return model, {
        "cached": False,
        "seconds": time.perf_counter() - start,
        "path": str(path) if cache else None,
        "losses": losses,
    }
