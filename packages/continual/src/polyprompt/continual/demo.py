"""Example: MVP vs baselines on a Si-Blurry stream of real digits (``examples/continual``).

Backbone: the core's timm ViT pre-trained in-situ on MNIST (cached; see
:mod:`polyprompt.continual.backbone`). Stream: the optdigits train split (1,347 real digits,
10 classes) as a Si-Blurry stream (5 hidden tasks, N = 50 %, M = 10 %, stochastic splits),
one pass, several updates per incoming batch; evaluation on the optdigits test split (450)
restricted to the classes seen so far. Every method sees the same streams (one per seed),
the same backbone and the same learner:

=====================  ======================================================================
head_ft                online fine-tuning of a linear head on the frozen backbone
finetune               online full fine-tuning (every weight; the cost reference)
er                     full fine-tuning + reservoir experience replay (small buffer)
l2p                    L2P: pool of 10 prompts (length 5), top-5, prepended
dualprompt             DualPrompt: general prefix (blocks 0-1) + expert prefix pool (blocks 2-4)
mvp                    MVP: DualPrompt + logit masks + contrastive keys + GSF + AFS
mvp_no_<part>          MVP with one component off (mask / contrastive / afs / gsf)
mvp_er                 MVP + the same reservoir buffer as ER (official ``methods/mvp.py``
                       memory path, ``MEM_SIZE > 0``; not run by default)
=====================  ======================================================================

Reported per method (mean ± std over stream seeds): A_auc, A_last, F_last, trainable share of
the backbone, prompt-only checkpoint bytes, training samples per second, wall time.

Example::

    >>> from polyprompt.continual.demo import run_demo
    >>> result = run_demo(quick=True, out_dir="out/continual-quick")   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyprompt.core.config import PromptConfig

__all__ = ["METHODS", "DemoConfig", "MethodSpec", "build_model", "main", "run_demo"]

DEFAULT_OUT = Path("out") / "continual"


@dataclass(frozen=True)
class MethodSpec:
    """A table row: how to build the method and its learner settings."""

    name: str
    kind: str  # "mvp" | "dualprompt" | "l2p" | "linear_probe" | "full_finetune"
    lr: str = "lr_prompt"  # DemoConfig field
    memory: bool = False
    options: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec("head_ft", "linear_probe", "lr_head"),
        MethodSpec("finetune", "full_finetune", "lr_full"),
        MethodSpec("er", "full_finetune", "lr_full", memory=True),
        MethodSpec("l2p", "l2p"),
        MethodSpec("dualprompt", "dualprompt"),
        MethodSpec("mvp", "mvp"),
        MethodSpec("mvp_no_mask", "mvp", options={"use_mask": False}),
        MethodSpec("mvp_no_contrastive", "mvp", options={"use_contrastive": False}),
        MethodSpec("mvp_no_afs", "mvp", options={"use_afs": False}),
        MethodSpec("mvp_no_gsf", "mvp", options={"use_gsf": False}),
        MethodSpec("mvp_er", "mvp", memory=True),
    )
}


@dataclass
class DemoConfig(PromptConfig):
    """Settings of the example (paper values where the small data allow).

    ``batch_size`` 16 instead of the paper's 64: the optdigits stream has 1,347 samples
    (CIFAR-100's has 50,000), so 64 would give ~21 batches for the whole stream.
    """

    seeds: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = ("head_ft", "finetune", "er", "l2p", "dualprompt", "mvp")
    num_tasks: int = 5
    disjoint_percent: float = 50.0
    blurry_percent: float = 10.0
    batch_size: int = 16
    online_iter: int = 3
    eval_period: int = 100
    memory_size: int = 100
    lr_prompt: float = 5e-3
    lr_head: float = 5e-3
    lr_full: float = 1e-4
    max_samples: int | None = None
    quick_backbone: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seeds = tuple(int(s) for s in self.seeds)
        self.methods = tuple(self.methods)
        self.require(bool(self.seeds), "seeds", "needs at least one seed")
        unknown = [m for m in self.methods if m not in METHODS]
        self.require(not unknown, "methods", f"unknown {unknown}; choose from {list(METHODS)}")

    @classmethod
    def quick(cls) -> DemoConfig:
        """Smoke run (< 1 minute once the backbone is cached): one seed, 3 methods, 600 samples."""
        return cls(
            seeds=(1,),
            methods=("head_ft", "dualprompt", "mvp"),
            max_samples=600,
            eval_period=100,
            quick_backbone=False,
        )

    def replace(self, **changes: Any) -> DemoConfig:
        return type(self)(**{**self.to_dict(), **changes})


def build_model(spec: MethodSpec, backbone: Any, num_classes: int) -> Any:
    """A fresh model of ``spec`` over ``backbone`` (the learner decides what trains)."""
    from polyprompt.continual.method import (
        L2P,
        MVP,
        DualPrompt,
        DualPromptConfig,
        L2PConfig,
        MVPConfig,
    )
    from polyprompt.core.registry import create

    if spec.kind == "mvp":
        return MVP(backbone, MVPConfig(num_classes=num_classes, **spec.options))
    if spec.kind == "dualprompt":
        return DualPrompt(backbone, DualPromptConfig(num_classes=num_classes, **spec.options))
    if spec.kind == "l2p":
        return L2P(backbone, L2PConfig(num_classes=num_classes, **spec.options))
    return create(spec.kind, backbone, num_classes=num_classes)


def _curve_mean(curves: list[tuple[list[int], list[float]]]) -> tuple[list[float], list[float]]:
    n = min(len(c[0]) for c in curves)
    xs = [sum(c[0][i] for c in curves) / len(curves) for i in range(n)]
    ys = [sum(c[1][i] for c in curves) / len(curves) for i in range(n)]
    return xs, ys


def curve_plot(curves: dict[str, tuple[list[float], list[float]]], path: Path, title: str) -> Path:
    """The A_auc curves (accuracy on seen classes along the stream), one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.io import atomic_write

    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        style = "-" if name in ("mvp", "dualprompt", "l2p") else "--"
        ax.plot(xs, [100 * y for y in ys], style, color=f"C{i % 10}", label=name, lw=1.4)
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("accuracy on seen classes (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


COLUMNS_DOC = (
    "A_auc: mean accuracy on the seen classes, evaluated every eval_period samples; A_last: "
    "accuracy after the last task; F_last: forgetting (Si-Blurry definition, core "
    "polyprompt.core.metrics); mean ± sample std over stream seeds. trainable %: trainable "
    "parameters / backbone parameters; checkpoint: prompt-only safetensors bytes (the whole "
    "model for fine-tuning); samples/s: training throughput (updates only); time: wall seconds "
    "per seed incl. evaluation."
)


def run_demo(
    quick: bool = True,
    out_dir: str | Path | None = None,
    *,
    config: DemoConfig | None = None,
    data: tuple[Any, Any] | None = None,
    backbone_factory: Any = None,
    backbone_note: str = "custom backbone",
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the methods over the Si-Blurry streams; table + JSON + markdown + A_auc curve plot.

    Args:
        quick: :meth:`DemoConfig.quick` unless ``config`` is given.
        out_dir: where ``results.json``, ``results.md`` and ``auc_curve.png`` go.
        data: ``(train ImageSet, test ImageSet)``; default optdigits.
        backbone_factory: ``() -> PromptableBackbone`` (fresh copy per run); default the
            MNIST-pre-trained digit ViT.
        backbone_note: how the custom backbone is described in the title.

    Returns:
        ``{"rows": [...], "config": ..., "curves": ..., "table": markdown}``.
    """
    import torch

    from polyprompt.continual.data import load_digit_pool
    from polyprompt.continual.learner import LearnerConfig, OnlineLearner
    from polyprompt.continual.stream import SiBlurryConfig, SiBlurryStream
    from polyprompt.core.demo.report import (
        Column,
        format_bytes,
        format_table,
        summarize,
        write_json,
        write_markdown,
    )
    from polyprompt.core.freezing import trainable_report
    from polyprompt.core.progress import progress_bar

    cfg = config if config is not None else (DemoConfig.quick() if quick else DemoConfig())
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    if backbone_factory is None:
        from polyprompt.continual.backbone import digit_backbone

        pre = digit_backbone(quick=cfg.quick_backbone, progress=progress, verbose=verbose)
        backbone_factory = pre.backbone
        backbone_note = (
            f"timm ViT ({pre.num_params():,} params) pre-trained in-situ on MNIST "
            f"(test acc {pre.mnist_test_accuracy:.1%})"
        )
    train, test = (
        data if data is not None else load_digit_pool("optdigits", max_samples=cfg.max_samples)
    )
    num_classes = max(train.num_classes, int(train.labels.max()) + 1)
    rows: list[dict[str, Any]] = []
    curves: dict[str, tuple[list[float], list[float]]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    bar = progress_bar(
        total=len(cfg.seeds) * len(cfg.methods), desc="continual runs", enabled=progress
    )
    for name in cfg.methods:
        spec = METHODS[name]
        runs[name] = []
        report = None
        for seed in cfg.seeds:
            stream = SiBlurryStream(
                train.labels,
                SiBlurryConfig(
                    num_tasks=cfg.num_tasks,
                    disjoint_percent=cfg.disjoint_percent,
                    blurry_percent=cfg.blurry_percent,
                    batch_size=cfg.batch_size,
                    seed=seed,
                ),
                images=train.images,
                num_classes=num_classes,
            )
            torch.manual_seed(seed)
            model = build_model(spec, backbone_factory(), num_classes)
            report = trainable_report(model)
            learner = OnlineLearner(
                model,
                LearnerConfig(
                    online_iter=cfg.online_iter,
                    lr=float(getattr(cfg, spec.lr)),
                    memory_size=cfg.memory_size if spec.memory else 0,
                    eval_period=cfg.eval_period,
                    seed=seed,
                ),
            )
            t0 = time.perf_counter()
            res = learner.run(stream, test.images, test.labels)
            wall = time.perf_counter() - t0
            runs[name].append({"seed": seed, "wall_seconds": wall, **res.to_dict()})
            bar.set_postfix(method=name, a_last=f"{res.a_last:.3f}")
            bar.update(1)
        r = runs[name]
        row: dict[str, Any] = {"method": name}
        for key in ("a_auc", "a_last", "f_last", "samples_per_second", "wall_seconds"):
            row[f"{key}_mean"], row[f"{key}_std"] = summarize([x[key] for x in r])
        assert report is not None
        row["trainable_percent"] = report.percent_of_backbone
        row["trainable_params"] = report.trainable_params
        row["checkpoint_bytes"] = report.checkpoint_bytes
        rows.append(row)
        curves[name] = _curve_mean([(x["curve_samples"], x["curve_acc"]) for x in r])
    bar.close()
    cols = [
        Column("method", "method", align="left"),
        Column("A_auc (%)", "a_auc_mean", std_key="a_auc_std", scale=100, fmt="{:.1f}"),
        Column("A_last (%)", "a_last_mean", std_key="a_last_std", scale=100, fmt="{:.1f}"),
        Column("F_last (%)", "f_last_mean", std_key="f_last_std", scale=100, fmt="{:.1f}"),
        Column("trainable %", "trainable_percent", fmt="{:.2f}"),
        Column("checkpoint", "checkpoint_bytes", fmt=format_bytes),
        Column("samples/s", "samples_per_second_mean", fmt="{:.0f}"),
        Column("time / seed (s)", "wall_seconds_mean", fmt="{:.0f}"),
    ]
    table = format_table(rows, cols, style="markdown")
    title = (
        f"Si-Blurry stream ({cfg.num_tasks} tasks, N={cfg.disjoint_percent:g}%, "
        f"M={cfg.blurry_percent:g}%) of {len(train)} {train.name} images, test {len(test)}; "
        f"{backbone_note}; seeds {list(cfg.seeds)}"
    )
    result = {
        "title": title,
        "config": cfg.to_dict(),
        "rows": rows,
        "curves": {k: {"samples": v[0], "acc": v[1]} for k, v in curves.items()},
        "runs": runs,
        "table": table,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_markdown(
        out / "results.md",
        f"# {title}\n\n{table}\n{COLUMNS_DOC}\n\n![A_auc curve](auc_curve.png)\n",
    )
    curve_plot(curves, out / "auc_curve.png", title)
    if verbose:
        print(title)
        print(table)
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'auc_curve.png'}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mvp_si_blurry",
        description="MVP vs baselines on a Si-Blurry stream (real digits by default).",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run (< 1 min with a cached backbone)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", help="stream seeds (default 1 2 3)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="methods to run")
    p.add_argument("--ablations", action="store_true", help="also run MVP with each component off")
    p.add_argument(
        "--data",
        type=Path,
        help="the paper's data set in its official layout (see --data-format)",
    )
    p.add_argument(
        "--data-format",
        choices=("cifar100", "tinyimagenet", "imagenet-r", "folder"),
        default="cifar100",
        help="layout of --data (cifar100: ROOT/{train,test}/<class>/*.png)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="ViT checkpoint in timm key layout (e.g. ViT-B/16); default: the MNIST digit ViT",
    )
    p.add_argument(
        "--arch", default="vit_base_patch16_224", help="timm architecture of --checkpoint"
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _load_data(args: argparse.Namespace, size: int, channels: int) -> tuple[Any, Any]:
    from polyprompt.continual import data as d

    if args.data_format == "cifar100":
        return d.load_cifar100_folder(args.data, size=size, channels=channels)
    if args.data_format == "tinyimagenet":
        return d.load_tinyimagenet(args.data, size=size, channels=channels)
    if args.data_format == "imagenet-r":
        return d.load_imagenet_r(args.data, size=size, channels=channels)
    full = d.load_image_folder(args.data, size=size, channels=channels)
    tr, te = d._stratified_split(full.labels.numpy(), 0.2, 0)
    return full.subset(tr, f"{full.name}/train"), full.subset(te, f"{full.name}/test")


def main(argv: Sequence[str] | None = None) -> int:
    """``examples/continual/mvp_si_blurry.py`` / ``polyprompt run continual``; exit code."""
    import torch

    from polyprompt.core.demo.cli import overrides, run_cli

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(1)  # tiny models: one thread is fastest on shared cores

    def body() -> None:
        cfg = DemoConfig.quick() if args.quick else DemoConfig()
        changes = overrides(args, {"seeds": "seeds", "methods": "methods"})
        if args.ablations:
            base = changes.get("methods", cfg.methods)
            abl = [m for m in METHODS if m.startswith("mvp_no_")]
            changes["methods"] = tuple(dict.fromkeys([*base, *abl]))
        if changes:
            cfg = cfg.replace(**changes)
        factory = None
        data = None
        if args.checkpoint is not None:
            import copy

            from polyprompt.continual.backbone import load_vit_checkpoint

            base = load_vit_checkpoint(args.checkpoint, args.arch)

            def factory() -> Any:
                return copy.deepcopy(base)

        if args.data is not None:
            if factory is not None:
                size, channels = base.img_size[0] if base.img_size else 224, base.in_chans
            else:
                size, channels = 32, 1  # the digit ViT: grey 32 x 32
            data = _load_data(args, size, channels)
        run_demo(
            quick=args.quick,
            out_dir=args.out,
            config=cfg,
            data=data,
            backbone_factory=factory,
            progress=not args.no_progress,
        )

    return run_cli("mvp_si_blurry", body)
