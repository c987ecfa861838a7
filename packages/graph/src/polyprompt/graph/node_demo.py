"""Node-level RELIEF example: few-shot node classification on k-hop subgraphs.

``python examples/graph/relief_nodes.py [--quick] [--data FOLDER --name cora] [--out DIR]``

Pipeline (RELIEF ``node_level/``): a node graph (Zachary's karate club by default, or an
official Planetoid folder) -> seeded few-shot split (``--shots`` per class) -> one
``--hops``-hop induced subgraph per target node -> GraphCL pre-training of a 2-layer GIN on
the subgraphs of all nodes (cached) -> linear probe, GPF-plus and RELIEF on the frozen GIN,
mean-pooled subgraph readout. Prints method, test accuracy and ROC-AUC (mean ± std over the
seeds) and the share of nodes RELIEF prompts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["main", "run_node_demo"]


def run_node_demo(
    *,
    quick: bool = True,
    seeds: int = 3,
    data: str | None = None,
    name: str = "cora",
    shots: int = 2,
    hops: int = 1,
    out_dir: Path | None = None,
    progress: bool = False,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Run the comparison; returns ``{"rows": [...], "config": {...}}``.

    Raises:
        ConfigError: ``seeds``, ``shots`` or ``hops`` not an int >= 1 (checked before any
            pre-training).
    """
    from polyprompt.core.config import is_int
    from polyprompt.core.errors import ConfigError

    for field, value in (("seeds", seeds), ("shots", shots), ("hops", hops)):
        if not is_int(value) or value < 1:
            raise ConfigError(f"run_node_demo: {field} must be an int >= 1, got {value!r}")
    from polyprompt.core.demo.report import summarize, write_json, write_markdown
    from polyprompt.graph.config import (
        GINConfig,
        GraphClassifierConfig,
        HPPOConfig,
        PretrainGraphConfig,
        RELIEFConfig,
    )
    from polyprompt.graph.methods import (
        GraphGPFPlus,
        GraphLinearProbe,
        evaluate_graph_method,
        train_graph_method,
    )
    from polyprompt.graph.node_tasks import (
        few_shot_node_split,
        load_karate,
        load_planetoid_raw,
        node_subgraphs,
        pretrain_node_gin,
    )
    from polyprompt.graph.relief import RELIEF

    torch.set_num_threads(1)
    graph = (
        load_karate() if data is None else load_planetoid_raw(data, name, trust_pickle=trust_pickle)
    )
    dim = 32 if quick else 64
    gin_cfg = GINConfig(num_layers=2, emb_dim=dim, in_features=graph.x.shape[1], max_nodes=200)
    pre_cfg = PretrainGraphConfig(
        strategies=("graphcl",), epochs=10 if quick else 30, batch_size=16, max_molecules=None
    )
    gin, info = pretrain_node_gin(graph, gin_cfg, pre_cfg, num_hops=hops, progress=progress)
    subgraphs = node_subgraphs(
        graph, num_hops=hops, max_nodes=gin_cfg.max_nodes, require_labels=False
    )
    by_node = {g.node_id: i for i, g in enumerate(subgraphs.graphs)}
    head_epochs = 30 if quick else 50
    relief_epochs = 4 if quick else 10
    results: dict[str, dict[str, list[float]]] = {}
    gin_ids = {id(p) for p in gin.parameters()}
    gin_params = sum(p.numel() for p in gin.parameters())

    def trainable_pct(module: torch.nn.Module) -> float:
        """Trainable parameters outside the frozen GIN, % of the GIN (head, prompts, agent)."""
        own = {id(p): p for p in module.parameters() if p.requires_grad and id(p) not in gin_ids}
        return 100.0 * sum(p.numel() for p in own.values()) / gin_params

    t0 = time.perf_counter()
    for seed in range(seeds):
        tr, va, te = few_shot_node_split(graph, shots, seed=seed)
        train, val, test = (subgraphs.subset([by_node[i] for i in s]) for s in (tr, va, te))
        torch.manual_seed(seed)
        for label, cls in (("linear probe", GraphLinearProbe), ("GPF-plus", GraphGPFPlus)):
            m = cls(gin, GraphClassifierConfig(num_classes=graph.num_classes, num_basis=4))
            train_graph_method(m, train, val, epochs=head_epochs, seed=seed)
            r = evaluate_graph_method(m, test)
            d = results.setdefault(label, {})
            for k in ("accuracy", "roc_auc"):
                d.setdefault(k, []).append(r[k])
            d.setdefault("prompt_ratio", []).append(0.0 if cls is GraphLinearProbe else 1.0)
            d.setdefault("trainable", []).append(trainable_pct(m))
        relief = RELIEF(
            gin,
            RELIEFConfig(
                num_classes=graph.num_classes,
                epochs=relief_epochs,
                head_epochs=3,
                agent=HPPOConfig(ensemble_num=3, max_z=0.5),
            ),
        )
        relief.fit(train, val, seed=seed)
        r = relief.evaluate(test, generator=torch.Generator().manual_seed(seed))
        d = results.setdefault("RELIEF", {})
        for k in ("accuracy", "roc_auc", "prompt_ratio"):
            d.setdefault(k, []).append(r[k])
        d.setdefault("trainable", []).append(trainable_pct(relief))
    rows = []
    for method, d in results.items():
        row: dict[str, Any] = {"method": method}
        for k in ("accuracy", "roc_auc", "prompt_ratio"):
            mean, std = summarize([100 * v for v in d[k]])
            row[k] = mean
            row[k + "_std"] = std
        row["trainable_percent"] = d["trainable"][0]
        rows.append(row)
    out = {
        "rows": rows,
        "config": {
            "graph": graph.name,
            "nodes": graph.num_nodes,
            "classes": graph.num_classes,
            "shots": shots,
            "hops": hops,
            "seeds": seeds,
            "quick": quick,
            "gin": gin_cfg.to_dict(),
            "pretrain_cached": info["cached"],
            "seconds": time.perf_counter() - t0,
        },
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(out_dir / "graph_nodes.json", out)
        write_markdown(out_dir / "graph_nodes.md", format_rows(rows) + "\n")
        _plot(
            rows, out_dir / "graph_nodes.png", f"{graph.name}, {shots} shots/class, {seeds} seeds"
        )
    return out


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Test accuracy and ROC-AUC per method (mean ± std over seeds) as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(rows))
    for shift, key, label in ((-0.2, "accuracy", "accuracy"), (0.2, "roc_auc", "ROC-AUC")):
        ax.bar(
            [i + shift for i in x],
            [r[key] for r in rows],
            0.4,
            yerr=[r[key + "_std"] for r in rows],
            capsize=3,
            label=label,
        )
    ax.set_xticks(list(x), [r["method"] for r in rows])
    ax.set_ylabel("test %")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | accuracy % | ROC-AUC % | nodes prompted % | trainable % of GIN |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['accuracy']:.2f} ± {r['accuracy_std']:.2f} "
            f"| {r['roc_auc']:.2f} ± {r['roc_auc_std']:.2f} "
            f"| {r['prompt_ratio']:.1f} | {r.get('trainable_percent', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller GIN / fewer epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--data", default=None, help="folder with official Planetoid ind.<name>.*")
    p.add_argument("--name", default="cora", help="Planetoid name (with --data)")
    p.add_argument("--shots", type=int, default=2, help="labelled nodes per class")
    p.add_argument("--hops", type=int, default=1, help="k of the k-hop subgraphs")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow reading the --data folder's Planetoid files (Python pickles: trusted copies only)",
    )
    from polyprompt.core.demo.cli import run_cli

    a = p.parse_args(argv)

    def body() -> None:
        out = run_node_demo(
            quick=a.quick,
            seeds=a.seeds,
            data=a.data,
            name=a.name,
            shots=a.shots,
            hops=a.hops,
            out_dir=a.out,
            progress=True,
            trust_pickle=a.trust_pickle,
        )
        c = out["config"]
        print(
            f"{c['graph']}: {c['nodes']} nodes, {c['classes']} classes, {c['shots']} shots/class, "
            f"{c['hops']}-hop subgraphs, {c['seeds']} seeds, {c['seconds']:.0f}s"
        )
        print(format_rows(out["rows"]))

    return run_cli("relief_nodes", body)
