"""DVPT example: Br35H brain-tumour MRI (2-D) or Colin27 lobe patches (3-D), every baseline.

Pipeline: real images (:mod:`polyprompt.medical.data`) -> a small ViT pre-trained in situ
with the label-free rotation pretext (:mod:`polyprompt.medical.pretrain`, cached) -> frozen
-> each method adapts it with 100% / 40% / 10% of the training labels (stratified), over
several seeds -> quadratic weighted kappa (the paper's model-selection metric), accuracy and
ROC-AUC on the held-out test split -> table (method, kappa mean ± std, trainable %,
checkpoint bytes, time), JSON, markdown and two plots (kappa vs label fraction; kappa vs
trainable %).

Methods (same data, backbone, trainer): linear probe (trained on cached frozen features,
:class:`~polyprompt.core.FeatureCache`), full fine-tuning, VPT-deep (core), AdaptFormer, SSF,
DVPT (paper) and DVPT (official-code variant).

    python examples/medical/dvpt_classify.py --quick          # smoke run
    python examples/medical/dvpt_classify.py                  # Br35H, 3 seeds
    python examples/medical/dvpt_classify.py --task colin27   # 3-D, MONAI ViT
    python examples/medical/dvpt_classify.py --data PATH      # APTOS / MedMNIST .npz / folders
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyprompt.core.config import PromptConfig, is_int

__all__ = ["METHODS", "DemoConfig", "MethodSpec", "main", "run_demo"]

DEFAULT_OUT = Path("out") / "medical"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    lr_scale: float = 1.0


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec("linear_probe", "Linear probe", "linear_probe"),
        MethodSpec("full_finetune", "Full FT", "full_finetune", lr_scale=0.1),
        MethodSpec("vpt", "VPT-deep", "vpt", {"num_tokens": 4, "deep": True}),
        MethodSpec("adaptformer", "AdaptFormer", "adaptformer", {"hidden": 4}),
        MethodSpec("ssf", "SSF", "ssf"),
        MethodSpec("dvpt", "DVPT (paper)", "dvpt"),
        MethodSpec(
            "dvpt_official", "DVPT (code)", "dvpt", {"variant": "official", "num_prompts": 10}
        ),
    )
}


@dataclass
class DemoConfig(PromptConfig):
    """Settings of :func:`run_demo` (validated)."""

    task: str = "br35h"
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: tuple[int, ...] = (0, 1, 2)
    label_fractions: tuple[float, ...] = (1.0, 0.4, 0.1)
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    img_size: int = 32
    max_train: int | None = None
    max_eval: int | None = None
    pretrain_epochs: int = 4
    pretrain_max_images: int | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.seeds = tuple(self.seeds)
        self.label_fractions = tuple(float(f) for f in self.label_fractions)
        super().__post_init__()
        r = self.require
        r(self.task in ("br35h", "colin27", "data"), "task", "must be 'br35h', 'colin27' or 'data'")
        unknown = [m for m in self.methods if m not in METHODS]
        r(
            not unknown and self.methods,
            "methods",
            f"unknown {unknown}; choose from {list(METHODS)}",
        )
        r(self.seeds and all(is_int(s) and s >= 0 for s in self.seeds), "seeds", "ints >= 0")
        r(
            self.label_fractions and all(0 < f <= 1 for f in self.label_fractions),
            "label_fractions",
            "values in (0, 1]",
        )
        for n in ("epochs", "batch_size", "img_size", "pretrain_epochs"):
            r(is_int(getattr(self, n)) and getattr(self, n) >= 1, n, "must be an int >= 1")
        r(self.lr > 0, "lr", "must be > 0")
        r(self.max_train is None or self.max_train >= 10, "max_train", "None or >= 10")
        r(self.max_eval is None or self.max_eval >= 10, "max_eval", "None or >= 10")

    @classmethod
    def quick(cls, task: str = "br35h") -> DemoConfig:
        """Smoke run: 1 seed, 2 label fractions, 4 methods, 300 training / 200 val / 200 test images."""
        return cls(
            task=task,
            methods=("linear_probe", "full_finetune", "vpt", "dvpt"),
            seeds=(0,),
            label_fractions=(1.0, 0.4),
            epochs=3,
            max_train=300,
            max_eval=200,
            pretrain_epochs=1,
            pretrain_max_images=300,
        )


# ------------------------------------------------------------------------- backbones
def _arch(task: str, spatial_dims: int, img_size: int, in_chans: int):
    from polyprompt.medical.pretrain import BackboneConfig

    if spatial_dims == 3:
        return BackboneConfig(
            kind="monai",
            spatial_dims=3,
            img_size=img_size,
            patch_size=max(2, img_size // 4),
            in_chans=in_chans,
            embed_dim=48,
            depth=6,
            num_heads=4,
        )
    return BackboneConfig(img_size=img_size, patch_size=max(2, img_size // 4), in_chans=in_chans)


def _load_task(cfg: DemoConfig, data_path: str | None, progress: bool):
    from polyprompt.medical import data as md

    if data_path is not None:
        splits = md.load_dataset(
            data_path, size=cfg.img_size, seed=cfg.split_seed, progress=progress
        )
        name = Path(data_path).stem if Path(data_path).is_file() else Path(data_path).name
    elif cfg.task == "colin27":
        splits = md.load_colin27_patches(patch=16, stride=6, seed=cfg.split_seed)
        name = "colin27-lobes"
    else:
        data = md.load_br35h(size=cfg.img_size, progress=progress)
        splits = md.stratified_split(data, seed=cfg.split_seed)
        name = "br35h"
    return splits, name


# ------------------------------------------------------------------------- one run
def _run_one(
    spec: MethodSpec,
    seed: int,
    fraction: float,
    cfg: DemoConfig,
    pretrained: Any,
    splits: Any,
    num_classes: int,
    metric: str,
) -> dict[str, Any]:
    import torch
    from torch import nn

    from polyprompt.core import FeatureCache, create, trainable_report
    from polyprompt.core.cache import cached_dataset
    from polyprompt.core.metrics import compute_metric
    from polyprompt.core.trainer import Trainer, TrainerConfig
    from polyprompt.medical.data import label_fraction

    start = time.perf_counter()
    train = label_fraction(splits.train, fraction, seed=seed)
    torch.manual_seed(seed)
    model = create(spec.method, pretrained.backbone(), num_classes=num_classes, **spec.options)
    rep = trainable_report(model)
    trainer = Trainer(
        TrainerConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr * spec.lr_scale,
            weight_decay=cfg.weight_decay,
            scheduler="cosine",
            warmup_epochs=1 if cfg.epochs > 1 else 0,
            grad_clip=1.0,
            seed=seed,
            progress=False,
            device="cpu",
        ),
        metric=metric,
        num_classes=num_classes,
    )
    if spec.method == "linear_probe":  # frozen everything: train on cached tokens
        cache = FeatureCache(model.backbone, model.cache_point, in_memory=True)

        class FromTokens(nn.Module):
            def __init__(self, m: nn.Module, k: int) -> None:
                super().__init__()
                self.m, self.k = m, k

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                return self.m.forward_from_tokens(tokens, self.k)

        net: nn.Module = FromTokens(model, model.cache_point)
        tr_ds = cached_dataset(train.dataset(), cache)
        va_ds = cached_dataset(splits.val.dataset(), cache)
        te_x = cache.tokens(splits.test.images, 256)
    else:
        net, tr_ds, va_ds, te_x = model, train.dataset(), splits.val.dataset(), splits.test.images
    result = trainer.fit(net, tr_ds, va_ds)
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(te_x[i : i + 256]) for i in range(0, len(te_x), 256)])
    y = splits.test.labels
    out = {
        "seed": seed,
        "fraction": fraction,
        "n_train": len(train),
        "kappa": compute_metric("quadratic_kappa", logits, y, num_classes=num_classes),
        "accuracy": compute_metric("accuracy", logits, y, num_classes=num_classes),
        "auc": compute_metric("roc_auc", logits, y, num_classes=num_classes),
        "best_val": result.best_metric,
        "best_epoch": result.best_epoch,
        "trainable_params": rep.trainable_params,
        "trainable_percent": rep.percent_of_backbone,
        "checkpoint_bytes": rep.checkpoint_bytes if spec.method != "full_finetune" else None,
        "seconds": time.perf_counter() - start,
    }
    if spec.method == "full_finetune":  # the whole model is the checkpoint
        from polyprompt.core.freezing import safetensors_bytes

        out["checkpoint_bytes"] = len(safetensors_bytes(dict(model.state_dict())))
    return out


# ------------------------------------------------------------------------- demo
def run_demo(
    quick: bool = True,
    out_dir: Path | str | None = None,
    *,
    config: DemoConfig | None = None,
    data_path: str | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the example; returns the result dict (also written to ``out_dir``)."""
    import torch

    from polyprompt.core.demo import report
    from polyprompt.core.progress import progress_bar
    from polyprompt.medical.pretrain import PretrainConfig, pretrain_backbone

    total_start = time.perf_counter()
    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    if data_path is not None:
        cfg = cfg.replace(task="data")
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    splits, name = _load_task(cfg, data_path, progress)
    if cfg.max_train is not None and len(splits.train) > cfg.max_train:
        from polyprompt.medical.data import label_fraction

        splits.train = label_fraction(splits.train, cfg.max_train / len(splits.train), seed=0)
    if cfg.max_eval is not None:
        from polyprompt.medical.data import label_fraction

        for part in ("val", "test"):
            split = getattr(splits, part)
            if len(split) > cfg.max_eval:
                setattr(splits, part, label_fraction(split, cfg.max_eval / len(split), seed=0))
    num_classes = splits.train.num_classes
    sd = splits.train.spatial_dims
    in_chans = int(splits.train.images.shape[1])
    img = int(splits.train.images.shape[-1])
    arch = _arch(cfg.task, sd, img, in_chans)
    pre_imgs = splits.train.images
    if cfg.pretrain_max_images is not None and len(pre_imgs) > cfg.pretrain_max_images:
        pre_imgs = pre_imgs[
            torch.randperm(len(pre_imgs), generator=torch.Generator().manual_seed(0))[
                : cfg.pretrain_max_images
            ]
        ]
    pretrained = pretrain_backbone(
        pre_imgs,
        arch=arch,
        train=PretrainConfig(epochs=cfg.pretrain_epochs),
        name=f"{name}-vit",
        progress=progress,
        verbose=verbose,
    )
    metric = "quadratic_kappa"
    say(
        f"task {name!r}: {num_classes} classes, {sd}-D, train {len(splits.train)} / val "
        f"{len(splits.val)} / test {len(splits.test)}; label fractions "
        f"{list(cfg.label_fractions)}; seeds {list(cfg.seeds)}; backbone {arch.kind} ViT "
        f"({pretrained.num_params():,} params, rotation-pretext accuracy "
        f"{pretrained.pretext_accuracy:.1%})"
    )
    specs = [METHODS[m] for m in cfg.methods]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    total = len(specs) * len(cfg.seeds) * len(cfg.label_fractions)
    bar = progress_bar(total=total, desc="adapting", enabled=progress, unit="run")
    try:
        for fraction in cfg.label_fractions:
            for seed in cfg.seeds:
                for spec in specs:
                    bar.set_postfix(method=spec.name, labels=f"{fraction:.0%}", seed=seed)
                    res = _run_one(
                        spec, seed, fraction, cfg, pretrained, splits, num_classes, metric
                    )
                    runs[spec.name].append(res)
                    line = (
                        f"  {spec.title:<13} {fraction:>4.0%} labels seed {seed}: kappa "
                        f"{res['kappa']:.3f} acc {res['accuracy']:.3f} ({res['seconds']:.0f} s)"
                    )
                    if progress:
                        bar.write(line)
                    else:
                        say(line)
                    bar.update(1)
    finally:
        bar.close()
    rows = []
    for spec in specs:
        for fraction in cfg.label_fractions:
            rs = [r for r in runs[spec.name] if r["fraction"] == fraction]
            k_mean, k_std = report.summarize([r["kappa"] for r in rs])
            a_mean, a_std = report.summarize([r["accuracy"] for r in rs])
            auc_vals = [r["auc"] for r in rs if r["auc"] is not None and math.isfinite(r["auc"])]
            auc = report.summarize(auc_vals) if auc_vals else (float("nan"), 0.0)
            rows.append(
                {
                    "method": spec.name,
                    "title": spec.title,
                    "label_fraction": fraction,
                    "kappa_mean": k_mean,
                    "kappa_std": k_std,
                    "accuracy_mean": a_mean,
                    "accuracy_std": a_std,
                    "auc_mean": auc[0],
                    "auc_std": auc[1],
                    "trainable_params": rs[0]["trainable_params"],
                    "trainable_percent": rs[0]["trainable_percent"],
                    "checkpoint_bytes": rs[0]["checkpoint_bytes"],
                    "seconds_mean": report.summarize([r["seconds"] for r in rs])[0],
                    "runs": rs,
                }
            )
    result = {
        "task": name,
        "quick": quick,
        "config": cfg.to_dict(),
        "backbone": {
            "arch": arch.to_dict(),
            "params": pretrained.num_params(),
            "pretext": "rotation prediction (0/90/180/270), train images only, no labels",
            "pretext_accuracy": pretrained.pretext_accuracy,
            "from_cache": pretrained.from_cache,
            "cache_file": str(pretrained.path) if pretrained.path else None,
        },
        "splits": splits.sizes(),
        "num_classes": num_classes,
        "rows": rows,
    }
    result["total_seconds"] = time.perf_counter() - total_start
    files = _write_outputs(result, out)
    result["files"] = {k: str(v) for k, v in files.items()}
    say("")
    say(table(rows, "markdown"))
    say(
        f"\nresults: {files['markdown']}, {files['json']}, {files['plot_labels']}, {files['plot_trainable']}"
    )
    return result


def table(rows: Sequence[dict[str, Any]], style: str = "markdown") -> str:
    from polyprompt.core.demo.report import Column, format_bytes, format_table

    cols = [
        Column("method", "title", align="left"),
        Column("labels", "label_fraction", fmt="{:.0%}"),
        Column("kappa", "kappa_mean", std_key="kappa_std", fmt="{:.3f}"),
        Column("accuracy", "accuracy_mean", std_key="accuracy_std", fmt="{:.3f}"),
        Column("AUC", "auc_mean", std_key="auc_std", fmt="{:.3f}"),
        Column("trainable %", "trainable_percent", fmt="{:.3g}"),
        Column("checkpoint", "checkpoint_bytes", fmt=format_bytes),
        Column("time/run (s)", "seconds_mean", fmt="{:.0f}"),
    ]
    return format_table(list(rows), cols, style=style)


def _write_outputs(result: dict[str, Any], out: Path) -> dict[str, Path]:
    from polyprompt.core.demo import report

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "plot_labels": out / "kappa_vs_labels.png",
        "plot_trainable": out / "kappa_vs_trainable.png",
    }
    cfg = result["config"]
    bb = result["backbone"]
    md = [
        f"# polyprompt-medical: DVPT on {result['task']}",
        "",
        f"Backbone: {bb['arch']['kind']} ViT, {bb['params']:,} params, pre-trained in situ with "
        f"the rotation pretext on the train images (no labels; pretext accuracy "
        f"{bb['pretext_accuracy']:.1%}). Splits {result['splits']}. Test-split metrics, mean ± "
        f"sample std over seeds {cfg['seeds']}; model selection by validation quadratic kappa. "
        f"Total {result['total_seconds']:.0f} s.",
        "",
        table(result["rows"], "markdown"),
        "",
        "Reproduce: `python examples/medical/dvpt_classify.py"
        + (" --quick" if result["quick"] else "")
        + (f" --task {cfg['task']}" if cfg["task"] == "colin27" else "")
        + f" --seeds {' '.join(map(str, cfg['seeds']))}`",
    ]
    report.write_markdown(files["markdown"], "\n".join(md))
    report.write_json(files["json"], result)
    _plot_labels(result, files["plot_labels"])
    _plot_trainable(result, files["plot_trainable"])
    return files


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Any, path: Path) -> None:
    from polyprompt.core.io import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _plot_labels(result: dict[str, Any], path: Path) -> None:
    fig, ax = _figure()
    by: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        by.setdefault(r["title"], []).append(r)
    for i, (title, rs) in enumerate(by.items()):
        rs = sorted(rs, key=lambda r: r["label_fraction"])
        xs = [100 * r["label_fraction"] for r in rs]
        ax.errorbar(
            xs,
            [r["kappa_mean"] for r in rs],
            yerr=[r["kappa_std"] for r in rs],
            marker="o",
            capsize=3,
            label=title,
            color=f"C{i}",
            lw=2.2 if title.startswith("DVPT") else 1.2,
        )
    ax.set_xlabel("training labels used (%)")
    ax.set_ylabel("test quadratic kappa")
    ax.set_title(f"{result['task']}: kappa vs label fraction", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def _plot_trainable(result: dict[str, Any], path: Path) -> None:
    fig, ax = _figure()
    full = max(r["label_fraction"] for r in result["rows"])
    for i, r in enumerate(r for r in result["rows"] if r["label_fraction"] == full):
        ax.errorbar(
            [max(r["trainable_percent"], 1e-3)],
            [r["kappa_mean"]],
            yerr=[r["kappa_std"]],
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=r["title"],
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of backbone, log)")
    ax.set_ylabel("test quadratic kappa")
    ax.set_title(f"{result['task']}: kappa vs trainable share ({full:.0%} labels)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


# ------------------------------------------------------------------------- CLI
def build_parser(prog: str = "polyprompt run medical") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (1 seed, small subset)")
    p.add_argument("--task", choices=("br35h", "colin27"), default="br35h")
    p.add_argument("--data", metavar="PATH", help="APTOS folder, MedMNIST .npz, class folders")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT))
    p.add_argument("--seeds", type=int, nargs="+", metavar="S")
    p.add_argument("--fractions", type=float, nargs="+", metavar="F", help="label fractions")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), metavar="M")
    p.add_argument("--epochs", type=int)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``examples/medical/dvpt_classify.py``; returns the exit code."""
    from polyprompt.core.demo.cli import overrides, run_cli

    args = build_parser().parse_args(argv)

    def body() -> None:
        cfg = DemoConfig.quick(args.task) if args.quick else DemoConfig(task=args.task)
        changes = overrides(
            args,
            {"seeds": "seeds", "fractions": "label_fractions", "methods": "methods",
             "epochs": "epochs"},
        )  # fmt: skip
        if changes:
            cfg = cfg.replace(**changes)
        res = run_demo(
            args.quick, args.out, config=cfg, data_path=args.data, progress=not args.no_progress
        )
        print(json.dumps({"total_seconds": round(res["total_seconds"], 1)}))

    return run_cli("dvpt_classify", body)
