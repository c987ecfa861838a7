"""Baselines on the frozen GIN sharing data, backbone and the core ``Trainer``.

* ``graph_linear_probe`` -- frozen GIN, projection head on the mean-pooled output.
* ``graph_full_finetune`` -- every GIN parameter trains with the head.
* ``graph_gpf`` / ``graph_gpf_plus`` -- Fang et al. (NeurIPS 2023) feature prompts through
  the core :class:`~polyprompt.core.prompts.feature.FeaturePrompt`, added to every node's
  atom embedding (RELIEF's insertion point) -- the dense counterpart of RELIEF's sparse prompts.

The head is RELIEF's ``GNNBasedNet`` projection head: ``head_layers - 1`` x (Linear D->D,
ReLU) then Linear D->C over the mean-pooled node representations.

The core's ``linear_probe`` / ``full_finetune`` expect tensor inputs (``check_tensor``);
graphs arrive as PyG batches, hence these graph versions (same head, same Trainer).

Example::

    >>> import torch
    >>> from torch_geometric.data import Batch
    >>> from torch_geometric.utils import from_smiles
    >>> from polyprompt.core import create
    >>> from polyprompt.graph.backbone import GINBackbone
    >>> from polyprompt.graph.config import GINConfig
    >>> import polyprompt.graph.methods
    >>> gin = GINBackbone(GINConfig(num_layers=2, emb_dim=32))
    >>> gpf = create("graph_gpf_plus", gin, num_classes=3, num_basis=4)
    >>> gpf(Batch.from_data_list([from_smiles("CCO"), from_smiles("CCN")])).shape
    torch.Size([2, 3])
    >>> sorted(n.split(".")[0] for n in gpf.trainable_state_dict())[:2]
    ['head', 'head']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from polyprompt.core.errors import InputError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.prompts.feature import FeaturePrompt
from polyprompt.core.registry import register_method
from polyprompt.graph.config import AllInOneConfig, GraphClassifierConfig

__all__ = [
    "GraphClassifier",
    "GraphFullFineTune",
    "GraphGPF",
    "GraphGPFPlus",
    "GraphLinearProbe",
    "ProjectionHead",
    "collate_graphs",
    "evaluate_graph_method",
    "graph_loader",
    "graph_step",
    "train_graph_method",
]


class ProjectionHead(nn.Module):
    """RELIEF ``GNNBasedNet`` head: ``(B, D) -> (B, C)``."""

    def __init__(self, dim: int, num_classes: int, layers: int = 1) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for _ in range(layers - 1):
            mods += [nn.Linear(dim, dim), nn.ReLU()]
        mods.append(nn.Linear(dim, num_classes))
        self.linears = nn.Sequential(*mods)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linears(pooled)


class GraphClassifier(PromptMethod):
    """Backbone + optional node prompt + projection head (base of the graph methods)."""

    config_class = GraphClassifierConfig
    frozen_backbone = True

    def __init__(self, backbone: nn.Module, config: GraphClassifierConfig) -> None:
        super().__init__(backbone, config)
        for attr in ("atom", "forward_blocks", "pool", "embed_dim"):
            if not hasattr(backbone, attr):
                raise InputError(
                    f"{type(self).__name__}: backbone must be a GINBackbone-like module "
                    f"(missing {attr!r}), got {type(backbone).__name__}"
                )
        if self.frozen_backbone:
            from polyprompt.core.freezing import freeze_backbone

            freeze_backbone(backbone)
        self.head = ProjectionHead(int(backbone.embed_dim), config.num_classes, config.head_layers)

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()
        return self

    def node_prompt(self, h0: torch.Tensor, data: Any) -> torch.Tensor:
        """Atom embeddings ``(N, D)`` -> prompted atom embeddings (no prompt by default)."""
        return h0

    def node_representations(self, data: Any) -> torch.Tensor:
        self.backbone.check(data, f"{type(self).__name__}.forward")
        h0 = self.backbone.atom(data.x)
        return self.backbone.forward_blocks(self.node_prompt(h0, data), graph=data)

    def forward(self, data: Any) -> torch.Tensor:
        """PyG ``Batch`` of ``B`` graphs -> logits ``(B, num_classes)``."""
        h = self.node_representations(data)
        return self.head(self.backbone.pool(h, getattr(data, "batch", None)))


@register_method("graph_linear_probe")
class GraphLinearProbe(GraphClassifier):
    """Frozen GIN; only the projection head trains."""


@register_method("graph_full_finetune")
class GraphFullFineTune(GraphClassifier):
    """Every GIN parameter trains with the head (the upper baseline)."""

    frozen_backbone = False

    def __init__(self, backbone: nn.Module, config: GraphClassifierConfig) -> None:
        super().__init__(backbone, config)
        for p in self.backbone.parameters():
            p.requires_grad_(True)


@register_method("graph_gpf")
class GraphGPF(GraphClassifier):
    """GPF: one learnable vector added to every node's atom embedding (+ head)."""

    prompt_kind = "gpf"

    def __init__(self, backbone: nn.Module, config: GraphClassifierConfig) -> None:
        super().__init__(backbone, config)
        self.prompt = FeaturePrompt(
            int(backbone.embed_dim), kind=self.prompt_kind, num_basis=config.num_basis
        )

    def node_prompt(self, h0: torch.Tensor, data: Any) -> torch.Tensor:
        return self.prompt(h0)


@register_method("graph_gpf_plus")
class GraphGPFPlus(GraphGPF):
    """GPF-plus: ``num_basis`` vectors mixed per node by a softmax score (+ head)."""

    prompt_kind = "gpf_plus"


@register_method("graph_all_in_one")
class GraphAllInOne(GraphClassifier):
    """All-in-One (Sun et al., KDD 2023, Section 3.3; ProG ``HeavyPrompt``): a learnable
    prompt graph of ``token_num`` tokens is *inserted* into every input graph.

    Tokens live in the atom-embedding space (the frozen GIN's input, as GPF's prompts);
    inner links ``token_i - token_j`` where ``sigmoid(p_i . p_j) >= inner_prune``, cross
    links ``token_k -> node_n`` where ``sigmoid(p_k . x_n) >= cross_prune`` (``x_n`` the
    node's atom embedding; directed token -> node as ProG's ``cross_adj.nonzero()``);
    the inserted edges carry a zero bond embedding. The frozen GIN runs on the combined
    graph and the head reads the mean over all its nodes (tokens included, as ProG pools
    the prompted batch). Trainable: the tokens and the head; the pruning is not
    differentiable (ProG alike), the tokens learn through message passing."""

    config_class = AllInOneConfig

    def __init__(self, backbone: nn.Module, config: AllInOneConfig) -> None:
        super().__init__(backbone, config)
        self.tokens = nn.Parameter(torch.empty(config.token_num, int(backbone.embed_dim)))
        nn.init.kaiming_uniform_(self.tokens, nonlinearity="leaky_relu", mode="fan_in", a=0.01)

    def prompted_graph(self, data: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
        """-> (node tokens ``(N + B K, D)``, ``edge_index`` with self-loops, ``batch``,
        per-layer edge embeddings) of the graphs with the prompt graph inserted."""
        from polyprompt.graph.backbone import with_self_loops

        gnn = self.backbone
        cfg = self.config
        x = gnn.atom(data.x)  # (N, D)
        n, b, k = x.shape[0], data.num_graphs, self.tokens.shape[0]
        batch = data.batch if getattr(data, "batch", None) is not None else x.new_zeros(n).long()
        tok_base = n + torch.arange(b, device=x.device) * k  # first token of each graph
        with torch.no_grad():
            inner = torch.sigmoid(self.tokens @ self.tokens.T) >= cfg.inner_prune
            inner.fill_diagonal_(False)
            ti, tj = inner.nonzero().T
            ck, cn = (torch.sigmoid(self.tokens @ x.T) >= cfg.cross_prune).nonzero().T
        inner_ei = torch.stack(
            [(tok_base[:, None] + ti).reshape(-1), (tok_base[:, None] + tj).reshape(-1)]
        )
        cross_ei = torch.stack([n + batch[cn] * k + ck, cn])
        new_ei = torch.cat([inner_ei, cross_ei], 1)
        total = n + b * k
        edge_index = with_self_loops(torch.cat([data.edge_index, new_ei], 1), total)
        zeros = x.new_zeros(new_ei.shape[1], x.shape[1])
        edge_emb = [
            torch.cat([conv.bond(data.edge_attr, 0), zeros, conv.bond.self_loop.expand(total, -1)])
            for conv in gnn.gnns
        ]
        h = torch.cat([x, self.tokens.repeat(b, 1)])
        full_batch = torch.cat([batch, torch.arange(b, device=x.device).repeat_interleave(k)])
        return h, edge_index, full_batch, edge_emb

    def forward(self, data: Any) -> torch.Tensor:
        self.backbone.check(data, "GraphAllInOne.forward")
        h, edge_index, batch, edge_emb = self.prompted_graph(data)
        h = self.backbone.forward_blocks(h, graph=data, edge_emb=edge_emb, edge_index=edge_index)
        return self.head(self.backbone.pool(h, batch))


# ---------------------------------------------------------------------------- training
def collate_graphs(items: Sequence[Any]) -> tuple[Any, torch.Tensor]:
    """List of labelled ``Data`` -> ``(Batch, y (B,))``."""
    from torch_geometric.data import Batch

    return Batch.from_data_list(list(items)), torch.cat([g.y.view(-1) for g in items])


def graph_loader(data: Any, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader of ``(Batch, y)`` with a seeded (resumable) sampler."""
    if len(data) == 0:
        raise InputError("graph_loader: empty data set")
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=collate_graphs)


def graph_step(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Trainer ``step_fn``: cross-entropy of ``model(graphs)`` against ``y``."""
    data, y = batch
    data = data.to(y.device)
    logits = model(data)
    return F.cross_entropy(logits, y), logits, y


def train_graph_method(
    method: GraphClassifier,
    train: Any,
    val: Any | None = None,
    *,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: int = 0,
    weight_decay: float = 0.0,
    progress: bool = False,
    checkpoint_dir: str | None = None,
    device: str = "cpu",
) -> Any:
    """Fit ``method`` with the core :class:`~polyprompt.core.trainer.Trainer` (Adam, model
    selection on validation ROC-AUC, best weights restored). Returns the ``TrainResult``."""
    from polyprompt.core.trainer import Trainer, TrainerConfig

    cfg = TrainerConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer="adam",
        weight_decay=weight_decay,
        seed=seed,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        device=device,
        grad_clip=None,
    )
    trainer = Trainer(
        cfg, step_fn=graph_step, metric="roc_auc", num_classes=method.config.num_classes
    )
    val_loader = graph_loader(val, 64, shuffle=False) if val is not None else None
    return trainer.fit(
        method, graph_loader(train, batch_size, shuffle=True, seed=seed), val=val_loader
    )


@torch.no_grad()
def predict_logits(
    method: nn.Module, data: Any, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, C), labels (N,))`` of ``method`` over a data set, in eval mode."""
    was = method.training
    method.eval()
    logits, ys = [], []
    for batch, y in graph_loader(data, batch_size, shuffle=False):
        logits.append(method(batch))
        ys.append(y)
    method.train(was)
    return torch.cat(logits), torch.cat(ys)


def roc_auc(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """ROC-AUC via torchmetrics (macro one-vs-rest for multi-class; = binary AUC for 2)."""
    from polyprompt.core.metrics import build_metric, prepare_preds

    m = build_metric("roc_auc", num_classes=num_classes)
    m.update(prepare_preds("roc_auc", logits.float(), y), y)
    return float(m.compute())


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def evaluate_graph_method(method: Any, data: Any, batch_size: int = 64) -> dict[str, float]:
    """``{"roc_auc", "accuracy"}`` of ``method`` on ``data``."""
    logits, y = predict_logits(method, data, batch_size)
    return {
        "roc_auc": roc_auc(logits, y, method.config.num_classes),
        "accuracy": accuracy(logits, y),
    }
