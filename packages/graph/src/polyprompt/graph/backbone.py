"""The pretrain-gnns GIN on the ``from_smiles`` atom/bond layout, as a promptable backbone.

Architecture (Hu et al., "Strategies for Pre-training Graph Neural Networks", ICLR 2020;
``chem/model.py`` ``GNN`` / ``GINConv``, identical to RELIEF's ``graph_level/model.py``
``PromptedGNN``):

* atom embedding: sum of one ``nn.Embedding`` per categorical atom feature; here the 9
  features of :func:`torch_geometric.utils.from_smiles` (atomic number -- with one extra
  row for the AttrMasking mask token --, chirality, degree, formal charge, #H, radicals,
  hybridisation, aromatic, in ring). pretrain-gnns uses 2 (atom type, chirality).
* ``num_layers`` x [:class:`GINEdgeConv` (a ``torch_geometric.nn.MessagePassing``:
  self-loops added, message ``x_j + bond_embedding``, sum, MLP ``D -> 2D -> D``),
  ``BatchNorm1d``, ReLU (not after the last layer), dropout]; JK ``last`` by default.
* node prompts (RELIEF, GPF) are added to the atom embedding: ``forward(data, prompt)``.

Node tasks (``GINConfig(in_features=F, num_layers=2)``): real-valued node features go
through a linear :class:`FeatureEncoder` instead of the atom tables and edges carry no
features (:class:`ZeroBond`: message ``x_j``), as RELIEF's ``node_level/model.py`` ``GIN``
(PyG ``GINConv``, 2 layers, SVD-reduced features). The official code adds the prompt to the
raw input features before the first ``GINConv``; here it is added right after the linear
encoder, which spans the same prompts (``W (x + p) = W x + W p``) in the embedding space the
RELIEF agent and GPF already act on.

Promptable-backbone view (``polyprompt.core.backbones.PromptableBackbone``, graph flavour):
``embed(data) -> (N, D)`` node tokens of a PyG batch, ``forward_blocks(h, start, end,
graph=data)``, ``norm`` (identity: the GIN normalises inside each layer), ``pool(h, batch)``
(mean, as the paper), ``embed_dim``, ``num_blocks``, ``blocks``, ``identity()``.

:func:`load_pretrain_gnns_checkpoint` reads the official ``chem/model_gin/*.pth`` key layout
(``x_embedding1/2``, ``gnns.{i}.mlp.{0,2}``, ``gnns.{i}.edge_embedding1/2``,
``batch_norms.{i}``) into this layout (see its docstring for the mapping).

Example::

    >>> import torch
    >>> from torch_geometric.data import Batch
    >>> from torch_geometric.utils import from_smiles
    >>> from polyprompt.graph.backbone import GINBackbone
    >>> from polyprompt.graph.config import GINConfig
    >>> gin = GINBackbone(GINConfig(num_layers=2, emb_dim=32))
    >>> batch = Batch.from_data_list([from_smiles("CCO"), from_smiles("c1ccccc1")])
    >>> gin(batch).shape                                  # (N, D) node representations
    torch.Size([9, 32])
    >>> gin.pool(gin(batch), batch.batch).shape           # (B, D)
    torch.Size([2, 32])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import MessagePassing, global_mean_pool

from polyprompt.core.errors import CheckpointError, InputError, ShapeError
from polyprompt.graph.config import JK, GINConfig
from polyprompt.graph.data import ATOM_VOCAB, BOND_VOCAB, check_graph

__all__ = [
    "MASK_ATOM",
    "AtomEncoder",
    "BondEncoder",
    "FeatureEncoder",
    "GINBackbone",
    "GINEdgeConv",
    "ZeroBond",
    "load_pretrain_gnns_checkpoint",
    "official_key_shapes",
    "with_self_loops",
]

MASK_ATOM = ATOM_VOCAB[0]  # extra row of the atomic-number table: the AttrMasking mask token


class AtomEncoder(nn.Module):
    """Sum of per-feature embeddings of the 9 ``from_smiles`` atom features -> ``(N, D)``."""

    def __init__(self, emb_dim: int) -> None:
        super().__init__()
        sizes = (ATOM_VOCAB[0] + 1, *ATOM_VOCAB[1:])  # +1: mask token
        self.embeddings = nn.ModuleList(nn.Embedding(n, emb_dim) for n in sizes)
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        return sum(emb(x[:, i]) for i, emb in enumerate(self.embeddings))  # type: ignore[return-value]


class BondEncoder(nn.Module):
    """Sum of per-feature embeddings of the 3 ``from_smiles`` bond features, plus one learnt
    vector for the self-loop edges GIN adds (pretrain-gnns: bond type 4)."""

    def __init__(self, emb_dim: int) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, emb_dim) for n in BOND_VOCAB)
        self.self_loop = nn.Parameter(torch.empty(1, emb_dim))
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)
        nn.init.xavier_uniform_(self.self_loop)

    def forward(self, edge_attr: torch.Tensor, num_nodes: int) -> torch.Tensor:
        ea = edge_attr.long()
        e = sum(emb(ea[:, i]) for i, emb in enumerate(self.embeddings))
        if not isinstance(e, torch.Tensor):  # no bond features at all
            e = self.self_loop.new_zeros(0, self.self_loop.shape[1])
        return torch.cat([e, self.self_loop.expand(num_nodes, -1)], 0)


class FeatureEncoder(nn.Module):
    """Linear encoder of real-valued node features ``(N, F) -> (N, D)`` (node tasks)."""

    def __init__(self, in_features: int, emb_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.to(self.linear.weight.dtype))


class ZeroBond(nn.Module):
    """Edge embedding of featureless edges: zeros, so the message is ``x_j`` (PyG
    ``GINConv``). ``self_loop`` is a zero buffer (the interface of :class:`BondEncoder`)."""

    def __init__(self, emb_dim: int) -> None:
        super().__init__()
        self.register_buffer("self_loop", torch.zeros(1, emb_dim), persistent=False)

    def forward(self, edge_attr: torch.Tensor | None, num_nodes: int) -> torch.Tensor:
        e = 0 if edge_attr is None else edge_attr.shape[0]
        return self.self_loop.new_zeros(e + num_nodes, self.self_loop.shape[1])


def with_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``edge_index`` followed by one self-loop per node (the order of ``add_self_loops``)."""
    loops = torch.arange(num_nodes, device=edge_index.device).unsqueeze(0).expand(2, num_nodes)
    return torch.cat([edge_index, loops], 1)


class GINEdgeConv(MessagePassing):
    """pretrain-gnns ``GINConv``: ``MLP(sum_{j in N(i) + i} (h_j + e_ji))`` (self-loops added)."""

    def __init__(self, emb_dim: int, *, bond_features: bool = True) -> None:
        super().__init__(aggr="add")
        self.mlp = nn.Sequential(
            nn.Linear(emb_dim, 2 * emb_dim), nn.ReLU(), nn.Linear(2 * emb_dim, emb_dim)
        )
        self.bond: nn.Module = BondEncoder(emb_dim) if bond_features else ZeroBond(emb_dim)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_emb: torch.Tensor | None = None,
        *,
        loops_added: bool = False,
    ) -> torch.Tensor:
        """``loops_added``: ``edge_index`` already ends with the self-loops
        (:func:`with_self_loops`; reused across the steps of an RL episode)."""
        n = x.size(0)
        if not loops_added:
            edge_index = with_self_loops(edge_index, n)
        e = self.bond(edge_attr, n) if edge_emb is None else edge_emb
        return self.mlp(self.propagate(edge_index, x=x, edge_attr=e))

    def message(self, x_j: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return x_j + edge_attr


class GINBackbone(nn.Module):
    """Frozen-able GIN with a node-prompt hook (see module docstring)."""

    num_prefix_tokens = 0

    def __init__(self, config: GINConfig | None = None) -> None:
        super().__init__()
        self.config = config or GINConfig()
        d = self.config.emb_dim
        f = self.config.in_features
        # `atom`: the input encoder (atom tables for molecules, linear for node features)
        self.atom: nn.Module = AtomEncoder(d) if f is None else FeatureEncoder(f, d)
        self.gnns = nn.ModuleList(
            GINEdgeConv(d, bond_features=f is None) for _ in range(self.config.num_layers)
        )
        self.batch_norms = nn.ModuleList(nn.BatchNorm1d(d) for _ in range(self.config.num_layers))

    # -- protocol --------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.config.emb_dim

    @property
    def num_blocks(self) -> int:
        return self.config.num_layers

    @property
    def blocks(self) -> nn.ModuleList:
        return self.gnns

    def check(self, data: Any, where: str = "GINBackbone") -> None:
        """:func:`~polyprompt.graph.data.check_graph` (molecules) or
        :func:`~polyprompt.graph.node_tasks.check_feature_graph` (node features) with this
        backbone's node cap."""
        if self.config.in_features is None:
            check_graph(data, max_nodes=self.config.max_nodes, where=where)
        else:
            from polyprompt.graph.node_tasks import check_feature_graph

            check_feature_graph(
                data, self.config.in_features, max_nodes=self.config.max_nodes, where=where
            )

    def embed(self, data: Any) -> torch.Tensor:
        """Atom embedding of a PyG ``Data``/``Batch`` -> node tokens ``(N, D)``."""
        self.check(data, "GINBackbone.embed")
        return self.atom(data.x)

    def forward_blocks(
        self,
        h: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        *,
        graph: Any = None,
        prefix: Mapping[int, torch.Tensor] | None = None,
        edge_emb: list[torch.Tensor] | None = None,
        edge_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Layers ``[start, end)`` on node tokens ``h`` ``(N, D)`` of ``graph``.

        ``edge_emb``: per-layer bond embeddings from :meth:`edge_embeddings`, and
        ``edge_index``: ``graph.edge_index`` with self-loops (:func:`with_self_loops`) --
        both reused across the steps of an RL episode, where only the node prompt changes."""
        if graph is None:
            raise InputError("GINBackbone.forward_blocks: pass graph=<the PyG Data/Batch of h>")
        if prefix:
            raise InputError("GINBackbone.forward_blocks: prefix prompts do not apply to a GNN")
        end = self.num_blocks if end is None else end
        layers = [h]
        for i in range(start, end):
            e = None if edge_emb is None else edge_emb[i]
            if edge_index is None:
                h = self.gnns[i](h, graph.edge_index, graph.edge_attr, e)
            else:
                h = self.gnns[i](h, edge_index, graph.edge_attr, e, loops_added=True)
            h = self.batch_norms[i](h)
            if i < self.num_blocks - 1:
                h = F.relu(h)
            h = F.dropout(h, self.config.drop_ratio, training=self.training)
            layers.append(h)
        if self.config.jk is JK.LAST or start != 0:
            return h
        stacked = torch.stack(layers[1:], 0)
        return stacked.sum(0) if self.config.jk is JK.SUM else stacked.max(0).values

    def edge_embeddings(self, graph: Any) -> list[torch.Tensor]:
        """Per-layer bond embeddings (self-loops appended) of ``graph``."""
        n = graph.x.shape[0]
        return [conv.bond(graph.edge_attr, n) for conv in self.gnns]

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def pool(self, h: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Mean pooling per graph ``(N, D) -> (B, D)`` (RELIEF ``graph_pooling="mean"``)."""
        if batch is None:
            batch = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        return global_mean_pool(h, batch)

    def forward(
        self, data: Any, prompt: torch.Tensor | None = None, *, check: bool = True
    ) -> torch.Tensor:
        """Node representations ``(N, D)``; ``prompt`` ``(N, D)`` is added after the atom
        embedding (RELIEF / GPF insertion point)."""
        if check:
            self.check(data, "GINBackbone.forward")
        h = self.atom(data.x)
        if prompt is not None:
            if prompt.shape != h.shape:
                raise ShapeError(
                    f"GINBackbone.forward: prompt shape {tuple(prompt.shape)} must equal the "
                    f"node embedding shape {tuple(h.shape)}"
                )
            h = h + prompt
        return self.forward_blocks(h, graph=data)

    def identity(self) -> dict[str, Any]:
        from polyprompt.core.freezing import module_identity

        ident = module_identity(self)
        ident.update(num_layers=self.config.num_layers, emb_dim=self.config.emb_dim)
        if self.config.in_features is not None:
            ident.update(in_features=self.config.in_features)
        return ident


# ---------------------------------------------------------------------------- official
# pretrain-gnns chem/loader.py: allowable_features['possible_atomic_num_list'] = range(1, 119)
# (index = atomic number - 1; 118 unused, 119 = mask), chirality [UNSPECIFIED, CW, CCW, OTHER],
# bonds [SINGLE, DOUBLE, TRIPLE, AROMATIC] (+4 self-loop, +5 mask), dirs [NONE, ENDUPRIGHT,
# ENDDOWNRIGHT]. from_smiles bond_type indices of SINGLE/DOUBLE/TRIPLE/AROMATIC:
_FROM_SMILES_BOND = (1, 2, 3, 12)


def _official_state(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        from polyprompt.core.checkpoint import load_torch_state

        state = load_torch_state(source)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"pretrain-gnns checkpoint {source}: not a state dict")
        state = dict(state)
    if any(k.startswith("gnn.") for k in state):  # a saved GNN_graphpred
        state = {k[4:]: v for k, v in state.items() if k.startswith("gnn.")}
    return state


def load_pretrain_gnns_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor], config: GINConfig | None = None
) -> GINBackbone:
    """Build a :class:`GINBackbone` from an official pretrain-gnns GIN checkpoint.

    ``source``: a ``chem/model_gin/{masking,contextpred,infomax,edgepred,...}.pth`` file
    (read with ``torch.load(weights_only=True)``) or its state dict. Layers and width are
    read from the keys. Mapping onto the ``from_smiles`` layout (the output of the official
    model is reproduced exactly on molecules without directional bonds):

    * atomic number ``a`` (1..118) <- ``x_embedding1[a-1]``; the mask token <-
      ``x_embedding1[119]``; ``a = 0`` (dummy atom) <- ``x_embedding1[118]``;
    * chirality 0..2 <- ``x_embedding2[0..2]``; the 7 other atom tables start at zero;
    * bond type SINGLE/DOUBLE/TRIPLE/AROMATIC <- ``edge_embedding1[0..3] + edge_embedding2[0]``
      (bond direction NONE: ``from_smiles`` has no direction feature), the self-loop vector
      <- ``edge_embedding1[4] + edge_embedding2[0]``; stereo / conjugation tables at zero;
    * ``gnns.{i}.mlp`` and ``batch_norms.{i}`` as they are.

    Raises:
        CheckpointError: unreadable file, missing keys, inconsistent shapes (message names
            the key).
    """
    state = _official_state(source)
    where = "load_pretrain_gnns_checkpoint"
    for key in ("x_embedding1.weight", "x_embedding2.weight"):
        if key not in state:
            raise CheckpointError(f"{where}: missing key {key!r} (got {sorted(state)[:6]}...)")
    emb_dim = int(state["x_embedding1.weight"].shape[1])
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("gnns.")})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"{where}: no consecutive gnns.<i>.* layers in the checkpoint")
    cfg = config or GINConfig(num_layers=len(layers), emb_dim=emb_dim)
    if cfg.num_layers != len(layers) or cfg.emb_dim != emb_dim:
        raise CheckpointError(
            f"{where}: checkpoint has {len(layers)} layers of width {emb_dim}, config asks for "
            f"{cfg.num_layers} x {cfg.emb_dim}"
        )
    model = GINBackbone(cfg)

    def get(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"{where}: missing key {key!r}")
        t = state[key]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{where}: {key!r} has shape {tuple(t.shape)}, expected {shape}")
        return t.detach().float()

    d = emb_dim
    with torch.no_grad():
        x1 = get("x_embedding1.weight", (120, d))
        x2 = get("x_embedding2.weight", (3, d))
        for emb in model.atom.embeddings:
            emb.weight.zero_()
        atomic = model.atom.embeddings[0].weight
        atomic[1:119] = x1[0:118]
        atomic[0] = x1[118]
        atomic[MASK_ATOM] = x1[119]
        model.atom.embeddings[1].weight[0:3] = x2
        for i in layers:
            p = f"gnns.{i}."
            conv = model.gnns[i]
            e1 = get(p + "edge_embedding1.weight", (6, d))
            e2 = get(p + "edge_embedding2.weight", (3, d))
            for emb in conv.bond.embeddings:
                emb.weight.zero_()
            bt = conv.bond.embeddings[0].weight
            bt[:] = e2[0]
            for k, row in enumerate(_FROM_SMILES_BOND):
                bt[row] = e1[k] + e2[0]
            conv.bond.self_loop[0] = e1[4] + e2[0]
            conv.mlp[0].weight.copy_(get(p + "mlp.0.weight", (2 * d, d)))
            conv.mlp[0].bias.copy_(get(p + "mlp.0.bias", (2 * d,)))
            conv.mlp[2].weight.copy_(get(p + "mlp.2.weight", (d, 2 * d)))
            conv.mlp[2].bias.copy_(get(p + "mlp.2.bias", (d,)))
            bn = model.batch_norms[i]
            b = f"batch_norms.{i}."
            bn.weight.copy_(get(b + "weight", (d,)))
            bn.bias.copy_(get(b + "bias", (d,)))
            bn.running_mean.copy_(get(b + "running_mean", (d,)))
            bn.running_var.copy_(get(b + "running_var", (d,)))
            if b + "num_batches_tracked" in state:
                bn.num_batches_tracked.copy_(state[b + "num_batches_tracked"].long())
    return model.eval()


def official_key_shapes(num_layers: int = 5, emb_dim: int = 300) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official pretrain-gnns GIN state dict (for synthetic checkpoints)."""
    d = emb_dim
    shapes: dict[str, tuple[int, ...]] = {
        "x_embedding1.weight": (120, d),
        "x_embedding2.weight": (3, d),
    }
    for i in range(num_layers):
        shapes.update(
            {
                f"gnns.{i}.mlp.0.weight": (2 * d, d),
                f"gnns.{i}.mlp.0.bias": (2 * d,),
                f"gnns.{i}.mlp.2.weight": (d, 2 * d),
                f"gnns.{i}.mlp.2.bias": (d,),
                f"gnns.{i}.edge_embedding1.weight": (6, d),
                f"gnns.{i}.edge_embedding2.weight": (3, d),
                f"batch_norms.{i}.weight": (d,),
                f"batch_norms.{i}.bias": (d,),
                f"batch_norms.{i}.running_mean": (d,),
                f"batch_norms.{i}.running_var": (d,),
                f"batch_norms.{i}.num_batches_tracked": (),
            }
        )
    return shapes
