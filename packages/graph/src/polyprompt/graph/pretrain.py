"""In-situ pre-training of the GIN on real unlabelled molecules, cached under ``$POLYPROMPT_HOME``.

No pre-trained GIN ships in any wheel, so the examples pre-train one on rdkit's bundled NCI
molecules (``first_5K.smi``) with the two strategies the issue names, one after the other:

* **AttrMasking** (Hu et al., ICLR 2020; pretrain-gnns ``chem/pretrain_masking.py``): mask
  ``mask_rate`` of the atoms (atomic number -> mask token, other atom features -> 0) and
  predict their atomic number from the node representation with a linear head (CE loss).
* **GraphCL** (You et al., NeurIPS 2020; ``transferLearning_MoleculeNet_PPI/chem/
  pretrain_graphcl.py``): two augmented views (node dropping, attribute masking; ratio
  ``aug_ratio``), mean pool, projection MLP ``D -> D -> D``, NT-Xent with temperature ``T``:
  ``-log(pos / (sum_neg))`` as the official loss.

The weights are saved with safetensors atomically (temp file + rename) under
``polyprompt_home()/graph/gin-<key>.safetensors``; ``key`` hashes the GIN config, the
pre-training config and the data fingerprint, so a change of any of them re-trains.

Example::

    >>> from polyprompt.graph.config import GINConfig, PretrainGraphConfig
    >>> from polyprompt.graph.pretrain import cache_key
    >>> len(cache_key(GINConfig(), PretrainGraphConfig(), "abc"))
    16
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polyprompt.core.errors import CheckpointError
from polyprompt.core.io import atomic_write, polyprompt_home
from polyprompt.core.progress import progress_bar
from polyprompt.graph.backbone import MASK_ATOM, GINBackbone
from polyprompt.graph.config import GINConfig, PretrainGraphConfig

__all__ = ["cache_key", "cache_path", "pretrain_gin"]

_FORMAT = "1"


def cache_key(gin: GINConfig, cfg: PretrainGraphConfig, data_fingerprint: str) -> str:
    gin_dict = gin.to_dict()
    if gin_dict.get("in_features") is None:  # molecule keys unchanged by the node-task option
        gin_dict.pop("in_features", None)
    payload = json.dumps(
        {"format": _FORMAT, "gin": gin_dict, "pre": cfg.to_dict(), "data": data_fingerprint},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_path(key: str) -> Path:
    return polyprompt_home() / "graph" / f"gin-{key}.safetensors"


def _mask_atoms(batch: Any, rate: float, gen: torch.Generator) -> tuple[Any, torch.Tensor]:
    n = batch.x.shape[0]
    k = max(1, round(rate * n))
    idx = torch.randperm(n, generator=gen)[:k]
    masked = batch.clone()
    masked.x = batch.x.clone()
    masked.x[idx] = 0
    masked.x[idx, 0] = MASK_ATOM
    return masked, idx


def _drop_nodes(batch: Any, ratio: float, gen: torch.Generator) -> Any:
    from torch_geometric.data import Data
    from torch_geometric.utils import subgraph

    n = batch.x.shape[0]
    keep = torch.rand(n, generator=gen) >= ratio
    keep[batch.ptr[:-1]] = True  # every graph keeps at least one node
    ei, ea = subgraph(keep, batch.edge_index, batch.edge_attr, relabel_nodes=True, num_nodes=n)
    return Data(x=batch.x[keep], edge_index=ei, edge_attr=ea, batch=batch.batch[keep])


def _nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """GraphCL official loss: ``-log(exp(s_ii/T) / sum_{j != i} exp(s_ij/T))``."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    sim = torch.exp(z1 @ z2.t() / t)
    pos = sim.diag()
    return -torch.log(pos / (sim.sum(1) - pos + 1e-8)).mean()


def _train(
    model: GINBackbone,
    graphs: list[Any],
    cfg: PretrainGraphConfig,
    strategy: str,
    progress: bool,
    second_view: Callable[[Any, float, torch.Generator], Any] | None = None,
    desc: str | None = None,
) -> list[float]:
    """One pre-training strategy over ``graphs``; per-epoch mean losses.

    GraphCL's two views are node dropping and ``second_view(batch, aug_ratio, gen)`` —
    atom-type masking for molecules (default), feature masking for node-task subgraphs.
    """
    from torch_geometric.data import Batch

    d = model.embed_dim
    gen = torch.Generator().manual_seed(cfg.seed)
    if strategy == "attr_masking":
        head: nn.Module = nn.Linear(d, MASK_ATOM)  # predict atomic number 0..118
    else:
        head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=cfg.lr)
    model.train()
    losses: list[float] = []
    n_batches = (len(graphs) + cfg.batch_size - 1) // cfg.batch_size
    bar = progress_bar(
        total=cfg.epochs * n_batches, desc=desc or f"pre-train GIN ({strategy})", enabled=progress
    )
    for _ in range(cfg.epochs):
        order = torch.randperm(len(graphs), generator=gen).tolist()
        total = 0.0
        for b in range(n_batches):
            items = [graphs[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            if len(items) < 2:
                continue
            batch = Batch.from_data_list(items)
            if strategy == "attr_masking":
                masked, idx = _mask_atoms(batch, cfg.mask_rate, gen)
                h = model(masked, check=False)
                loss = F.cross_entropy(head(h[idx]), batch.x[idx, 0].long())
            else:
                v1 = _drop_nodes(batch, cfg.aug_ratio, gen)
                v2 = (
                    _mask_atoms(batch, cfg.aug_ratio, gen)[0]
                    if second_view is None
                    else second_view(batch, cfg.aug_ratio, gen)
                )
                z1 = head(model.pool(model(v1, check=False), v1.batch))
                z2 = head(model.pool(model(v2, check=False), v2.batch))
                loss = _nt_xent(z1, z2, cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(total / max(1, n_batches))
    bar.close()
    return losses


def pretrain_gin(
    gin_config: GINConfig | None = None,
    pretrain_config: PretrainGraphConfig | None = None,
    *,
    molecules: Any = None,
    cache: bool = True,
    progress: bool = True,
    verbose: bool = False,
) -> tuple[GINBackbone, dict[str, Any]]:
    """Pre-train (or load from the cache) a GIN; returns ``(backbone in eval mode, info)``.

    ``molecules``: a :class:`~polyprompt.graph.data.MoleculeData` (default: rdkit's NCI
    subset, capped at ``pretrain_config.max_molecules``). ``info`` has ``cached``,
    ``seconds``, ``losses`` (per strategy and epoch) and ``path``.
    """
    from safetensors.torch import load_file, save_file

    from polyprompt.graph.data import load_nci_unlabelled

    gin_cfg = gin_config or GINConfig()
    cfg = pretrain_config or PretrainGraphConfig()
    start = time.perf_counter()
    if molecules is None:
        molecules = load_nci_unlabelled(cfg.max_molecules, max_nodes=gin_cfg.max_nodes)
    key = cache_key(gin_cfg, cfg, molecules.fingerprint())
    path = cache_path(key)
    model = GINBackbone(gin_cfg)
    if cache and path.is_file():
        try:
            state = load_file(str(path))
            model.load_state_dict(state)
            if verbose:
                print(f"GIN: loaded pre-trained weights from {path}")
            return model.eval(), {
                "cached": True,
                "seconds": time.perf_counter() - start,
                "path": str(path),
                "losses": {},
            }
        except Exception as exc:  # corrupt / incompatible cache: retrain, then overwrite
            if verbose:
                print(f"GIN cache {path} unusable ({CheckpointError.__name__}: {exc}); re-training")
    torch.manual_seed(cfg.seed)
    model = GINBackbone(gin_cfg)
    losses = {s: _train(model, molecules.graphs, cfg, s, progress) for s in cfg.strategies}
    model.eval()
    if cache:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"key": key}))
    if verbose:
        print(
            f"GIN: pre-trained on {len(molecules)} molecules in {time.perf_counter() - start:.0f}s"
        )
    return model, {
        "cached": False,
        "seconds": time.perf_counter() - start,
        "path": str(path) if cache else None,
        "losses": losses,
    }
