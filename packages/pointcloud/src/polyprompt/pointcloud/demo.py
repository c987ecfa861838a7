"""IDPT example: a frozen, in-situ pre-trained Point-MAE adapted to real 3-D furniture.

Data: the furniture meshes of Debian's ``sweethome3d-furniture`` (:func:`~.data.load_furniture`,
11 catalog categories, ~820 meshes, split by mesh into train / val / test), or MNIST digits as
point sets (``--task digits``), or the paper's data (``--data PATH``: ModelNet40 / ScanObjectNN
in their official layouts; their test split is split in half into val / test).

Backbone: a CPU-size Point-MAE encoder (:meth:`~.backbone.PointMAEConfig.small`) pre-trained
with masked point modelling (:mod:`.pretrain`, cached) on unlabelled clouds: the ``pybullet_data``
meshes (:func:`~.data.load_pybullet_meshes`, when ``pybullet`` is installed: ``pretrain_meshes``
``"auto"``/``"pybullet"``), the *training* split only (never val / test) and trimesh primitives. The
pre-training keeps the same number of optimisation steps whatever the mesh set
(``pretrain_epochs`` epochs of train split + primitives; fewer passes over the larger set). Methods, all on the same data, backbone copy, and :class:`~polyprompt.core.Trainer`:

==============  ===============================================================
linear_probe    core ``linear_probe`` (frozen; trained on cached features)
full_finetune   core ``full_finetune`` (every weight trains)
vpt_shallow     core ``vpt`` (prompts before block 0; the static-prompt baseline)
vpt_deep        core ``vpt`` with ``deep=True`` (new prompts before every block)
idpt            :class:`~.method.IDPT` (DGCNN prompt before the last block + MLP head)
==============  ===============================================================

Protocol: each seed initialises and shuffles with its own seed; the epoch with the best *val*
accuracy is kept; the test accuracy is reported as mean ± std over seeds with the trainable
share of the backbone, the prompt-only checkpoint size and the time per seed. With augmentation
off (the default here, so runs fit a CPU budget) IDPT and the linear probe train on cached
frozen tokens (identical results to the uncached path, see the tests); ``--augment`` turns on
the paper's scale + translate for every method (IDPT then runs blocks below the prompt under
``no_grad`` each step).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyprompt.core.cache import FromCachedTokens
from polyprompt.core.config import PromptConfig, is_int

# the method rows, result and table are the core digits demo's own (same columns)
from polyprompt.core.demo.digits import DemoResult as CoreDemoResult
from polyprompt.core.demo.digits import MethodSpec

__all__ = ["METHODS", "DemoConfig", "DemoResult", "main", "run_demo"]

DEFAULT_OUT = Path("out") / "pointcloud"
#: unlabelled mesh sets for pre-training ("auto": pybullet_data when installed, else none)
PRETRAIN_MESHES = ("auto", "pybullet", "none")


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec("linear_probe", "linear_probe", "linear probe", "lr_head"),
        MethodSpec("full_finetune", "full_finetune", "full fine-tuning", "lr_full"),
        MethodSpec("vpt_shallow", "vpt", "VPT-shallow (static)", "lr_prompt", {"deep": False}),
        MethodSpec("vpt_deep", "vpt", "VPT-deep (static)", "lr_prompt", {"deep": True}),
        MethodSpec("idpt", "idpt", "IDPT (dynamic)", "lr_idpt"),
    )
}


@dataclass
class DemoConfig(PromptConfig):
    """Settings of :func:`run_demo` (saved with the results).

    Learning rates: IDPT uses the paper's AdamW 5e-4 (wd 0.05, cosine, warm-up); the baselines'
    rates are common defaults for their kind (head 1e-2, prompts 1e-2, full FT 5e-4), not tuned
    on the test split.
    """

    task: str = "furniture"
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 8
    batch_size: int = 32
    num_points: int = 512
    lr_head: float = 1e-2
    lr_prompt: float = 1e-2
    lr_full: float = 5e-4
    lr_idpt: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    num_tokens: int = 10
    augment: bool = False
    use_cache: bool = True
    methods: tuple[str, ...] = tuple(METHODS)
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    max_train: int | None = None
    split_seed: int = 0
    pretrain_epochs: int = 10
    pretrain_primitives: int = 200
    pretrain_meshes: str = "auto"
    pretrain_max_meshes: int | None = None
    save_checkpoints: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seeds = tuple(self.seeds)
        self.methods = tuple(self.methods)
        r = self.require
        r(self.task in ("furniture", "digits"), "task", "must be 'furniture' or 'digits'")
        r(bool(self.seeds) and all(is_int(s) and s >= 0 for s in self.seeds), "seeds", "ints >= 0")
        r(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat")
        self.require_ints("epochs", "batch_size", "num_points", "num_tokens", "pretrain_epochs")
        r(self.batch_size >= 2, "batch_size", "must be >= 2 (batch norm in the heads)")
        r(
            is_int(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            "must be an int in [0, epochs]",
        )
        for name in ("lr_head", "lr_prompt", "lr_full", "lr_idpt"):
            r(
                isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0,
                name,
                "> 0",
            )
        r(
            self.pretrain_meshes in PRETRAIN_MESHES,
            "pretrain_meshes",
            f"one of {PRETRAIN_MESHES} ('auto': pybullet_data if installed, else none)",
        )
        r(
            self.pretrain_max_meshes is None
            or (is_int(self.pretrain_max_meshes) and self.pretrain_max_meshes >= 1),
            "pretrain_max_meshes",
            "None or an int >= 1",
        )
        unknown = [m for m in self.methods if m not in METHODS]
        r(bool(self.methods) and not unknown, "methods", f"names of {sorted(METHODS)}")
        r(
            self.max_train is None or (is_int(self.max_train) and self.max_train >= 10),
            "max_train",
            "None or an int >= 10",
        )

    @classmethod
    def quick(cls) -> DemoConfig:
        """Smoke size (~1 minute): one seed, 3 epochs, 160 training clouds, short pre-training."""
        return cls(
            seeds=(0,),
            epochs=3,
            warmup_epochs=1,
            max_train=160,
            pretrain_epochs=2,
            pretrain_primitives=32,
            pretrain_max_meshes=64,
            num_points=256,
        )


@dataclass
class DemoResult(CoreDemoResult):
    """What :func:`run_demo` returns (the core digits demo's result, with this demo's config)."""

    config: DemoConfig


def _load_task(cfg: DemoConfig, data_path: str | Path | None, progress: bool):
    from polyprompt.pointcloud.data import (
        PointSplits,
        load_digit_points,
        load_furniture,
        load_point_dataset,
        split_data,
    )

    if data_path is not None:
        train, test = load_point_dataset(data_path, num_points=max(cfg.num_points, 1024))
        from sklearn.model_selection import train_test_split

        idx = list(range(len(test)))
        y = test.labels.numpy()
        strat = y if min(test.counts().values()) >= 2 else None
        val_idx, test_idx = train_test_split(
            idx, test_size=0.5, stratify=strat, random_state=cfg.split_seed
        )
        splits = PointSplits(
            train.with_points(cfg.num_points),
            test.subset(sorted(val_idx)).with_points(cfg.num_points),
            test.subset(sorted(test_idx)).with_points(cfg.num_points),
        )
        return splits, train.name.split("/")[0]
    if cfg.task == "digits":
        data = load_digit_points(num_points=max(cfg.num_points, 256))
    else:
        data = load_furniture(num_points=1024, progress=progress)
    splits = split_data(data, cfg.val_fraction, cfg.test_fraction, seed=cfg.split_seed)
    splits.train = splits.train.with_points(cfg.num_points)
    splits.val = splits.val.with_points(cfg.num_points)
    splits.test = splits.test.with_points(cfg.num_points)
    return splits, data.name


def _subsample(data, n: int | None, seed: int):
    if n is None or n >= len(data):
        return data
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(
        list(range(len(data))), train_size=n, stratify=data.labels.numpy(), random_state=seed
    )
    return data.subset(sorted(idx))


def run_demo(
    quick: bool = False,
    out_dir: str | Path | None = None,
    *,
    config: DemoConfig | None = None,
    data_path: str | Path | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> DemoResult:
    """Run the example (see the module docstring); writes JSON, markdown and a plot to ``out_dir``."""
    from polyprompt.core.cache import FeatureCache
    from polyprompt.core.demo import report
    from polyprompt.core.progress import progress_bar
    from polyprompt.pointcloud.backbone import PointMAEConfig
    from polyprompt.pointcloud.data import PointAugment, primitive_clouds
    from polyprompt.pointcloud.pretrain import pretrain_point_mae

    t0 = time.perf_counter()
    cfg = config if config is not None else (DemoConfig.quick() if quick else DemoConfig())
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    splits, data_name = _load_task(cfg, data_path, progress)
    train_full = _subsample(splits.train, cfg.max_train, cfg.split_seed)
    n_cls = splits.train.num_classes
    say(
        f"{data_name}: {n_cls} classes, train {len(train_full)}, val {len(splits.val)}, "
        f"test {len(splits.test)} clouds of {cfg.num_points} points"
    )
    arch = PointMAEConfig.small()
    clouds = train_full.points  # the training split only: never val / test
    parts = [f"train split {len(clouds)}"]
    if cfg.pretrain_primitives:
        prims = primitive_clouds(cfg.pretrain_primitives, cfg.num_points, seed=0)
        clouds = torch.cat([clouds, prims])
        parts.append(f"primitives {len(prims)}")
    mesh_set, meshes = _pretrain_meshes(cfg, progress)
    pcfg = _pretrain_config(cfg, len(clouds), len(meshes) if meshes is not None else 0)
    if meshes is not None:
        clouds = torch.cat([meshes.points, clouds])
        parts.insert(0, f"pybullet_data {len(meshes)} (skipped {meshes.skipped})")
    say(
        f"Point-MAE pre-training on {len(clouds)} unlabelled clouds ({', '.join(parts)}), "
        f"{pcfg.epochs} epochs"
    )
    data_tag = f"{mesh_set}+train:{data_name}+primitives:{cfg.pretrain_primitives}"
    pre = pretrain_point_mae(clouds, arch, pcfg, progress=progress, data_tag=data_tag)
    say(
        f"  {'loaded from cache' if pre.from_cache else 'trained'}: Chamfer-L2 "
        f"{pre.losses[0]:.4f} -> {pre.losses[-1]:.4f} ({pre.seconds:.0f} s)"
    )
    augment = PointAugment() if cfg.augment else None
    specs = [METHODS[m] for m in cfg.methods]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    cached: dict[str, dict[str, Any]] = {}
    bar = progress_bar(
        total=len(specs) * len(cfg.seeds), desc="adapting", enabled=progress, unit="run"
    )
    try:
        for seed in cfg.seeds:
            for spec in specs:
                bar.set_postfix(method=spec.name, seed=seed)
                ckpt = (
                    out / "checkpoints" / spec.name
                    if cfg.save_checkpoints and seed == cfg.seeds[0]
                    else None
                )
                res = _run_one(
                    spec, seed, cfg, pre, train_full, splits, augment, cached, ckpt, FeatureCache
                )
                runs[spec.name].append(res)
                line = (
                    f"  {spec.title:<22} seed {seed}: test acc {res['test_accuracy']:.2%} "
                    f"(best val {res['best_val_accuracy']:.2%} @ epoch {res['best_epoch']}), "
                    f"{res['seconds']:.1f} s"
                )
                bar.write(line) if (verbose and progress) else say(line)
                bar.update(1)
    finally:
        bar.close()
    rows = [
        report.method_row(spec, runs[spec.name]) | {"cached": runs[spec.name][0]["cached"]}
        for spec in specs
    ]
    info = {
        "data": data_name,
        "quick": quick,
        "num_classes": n_cls,
        "chance_accuracy": 1.0 / n_cls,
        "splits": {"train": len(train_full), "val": len(splits.val), "test": len(splits.test)},
        "backbone": {
            "arch": arch.to_dict(),
            "params": pre.model.num_params(),
            "pretrain": pcfg.to_dict(),
            "pretrain_chamfer_first_last": [pre.losses[0], pre.losses[-1]],
            "pretrain_data": {
                "meshes": mesh_set,
                "mesh_clouds": len(meshes) if meshes is not None else 0,
                "meshes_skipped": meshes.skipped if meshes is not None else 0,
                "train_clouds": len(train_full),
                "primitives": cfg.pretrain_primitives,
                "total_clouds": len(clouds),
                "seconds": pre.seconds,
            },
            "from_cache": pre.from_cache,
            "cache_file": str(pre.path) if pre.path else None,
        },
        "torch_threads": torch.get_num_threads(),
        "total_seconds": None,
    }
    result = DemoResult(rows, cfg, info)
    info["total_seconds"] = time.perf_counter() - t0
    result.files = _write_outputs(result, out, data_path)
    say("")
    say(_headline(result))
    say(result.table("markdown"))
    say(f"\nresults: {result.files['markdown']}, {result.files['json']}, {result.files['plot']}")
    return result


def _pretrain_meshes(cfg: DemoConfig, progress: bool):
    """``(mesh set name, UnlabelledClouds | None)`` for ``cfg.pretrain_meshes``."""
    from polyprompt.core.errors import InputError
    from polyprompt.pointcloud.data import load_pybullet_meshes, pybullet_data_dir

    if cfg.pretrain_meshes == "none":
        return "none", None
    if cfg.pretrain_meshes == "auto":
        try:
            pybullet_data_dir()
        except InputError:
            return "none", None
    meshes = load_pybullet_meshes(
        cfg.num_points, max_meshes=cfg.pretrain_max_meshes, progress=progress
    )
    return f"pybullet_data:{len(meshes)}", meshes


def _pretrain_config(cfg: DemoConfig, base_clouds: int, extra_clouds: int):
    """The CPU pre-training settings with a fixed step budget.

    The budget is ``pretrain_epochs`` epochs over the train split + primitives (``base_clouds``);
    with ``extra_clouds`` unlabelled meshes added, the number of epochs shrinks so the number of
    optimisation steps (and the time) stays about the same; warm-up stays ~20 % of the steps.
    """
    from polyprompt.pointcloud.pretrain import PointMAEPretrainConfig

    small = PointMAEPretrainConfig.small()
    budget = cfg.pretrain_epochs * math.ceil(base_clouds / small.batch_size)
    per_epoch = math.ceil((base_clouds + extra_clouds) / small.batch_size)
    if extra_clouds == 0:
        warmup = min(2, cfg.pretrain_epochs - 1)
        return small.replace(
            epochs=cfg.pretrain_epochs, warmup_epochs=max(0, warmup), num_points=cfg.num_points
        )
    epochs = math.ceil(budget / per_epoch)
    warmup = min(epochs - 1, max(1, round(0.2 * epochs)))
    return small.replace(
        epochs=epochs, warmup_epochs=max(0, warmup), max_steps=budget, num_points=cfg.num_points
    )


def _run_one(spec, seed, cfg, pre, train, splits, augment, cached, ckpt_dir, FeatureCache):
    from polyprompt.core.freezing import trainable_report
    from polyprompt.core.registry import create
    from polyprompt.core.trainer import Trainer, TrainerConfig

    start = time.perf_counter()
    torch.manual_seed(seed)
    options = dict(spec.options)
    if spec.method == "vpt":
        options["num_tokens"] = cfg.num_tokens
    model = create(spec.method, pre.backbone(), num_classes=train.num_classes, **options)
    trainer = Trainer(
        TrainerConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=float(getattr(cfg, spec.lr)),
            weight_decay=cfg.weight_decay,
            scheduler="cosine",
            warmup_epochs=cfg.warmup_epochs,
            grad_clip=10.0,
            seed=seed,
            progress=False,
            device="cpu",
            drop_last=True,
        ),
        metric="accuracy",
    )
    data = {"train": train, "val": splits.val, "test": splits.test}
    use_cache = cfg.use_cache and augment is None and spec.method in ("idpt", "linear_probe")
    if use_cache:
        key = spec.method
        if key not in cached:  # frozen weights are the same for every seed: compute once
            cache = (
                model.feature_cache(in_memory=True)
                if spec.method == "idpt"
                else FeatureCache(model.backbone, model.cache_point, in_memory=True)
            )
            cached[key] = {
                k: cache.cached_dataset(v.dataset(), batch_size=64) for k, v in data.items()
            }
            cached[key]["start_block"] = cache.start_block
        datasets = cached[key]
        net: nn.Module = FromCachedTokens(model, datasets["start_block"])
    else:
        datasets = {
            "train": train.dataset(augment),
            "val": splits.val.dataset(),
            "test": splits.test.dataset(),
        }
        net = model
    fit = trainer.fit(net, datasets["train"], datasets["val"])
    test = trainer.evaluate(net, datasets["test"])
    seconds = time.perf_counter() - start
    rep = trainable_report(model)
    if ckpt_dir is not None:
        from polyprompt.core.checkpoint import save_prompt

        save_prompt(model, ckpt_dir, extra={"seed": seed, "test_accuracy": test["metric"]})
    return {
        "seed": seed,
        "test_accuracy": float(test["metric"]),
        "best_val_accuracy": fit.best_metric,
        "best_epoch": fit.best_epoch,
        "seconds": seconds,
        "trainable_params": rep.trainable_params,
        "backbone_params": rep.backbone_params,
        "trainable_percent": rep.percent_of_backbone,
        "checkpoint_bytes": rep.checkpoint_bytes,
        "cached": use_cache,
    }


def _headline(result: DemoResult) -> str:
    i, c = result.info, result.config
    return (
        f"{i['data']}: frozen Point-MAE ({i['backbone']['params']:,} params, pre-trained in situ) "
        f"adapted with {i['splits']['train']} training clouds; test accuracy over "
        f"{len(c.seeds)} seed(s) (chance {i['chance_accuracy']:.0%}); augmentation "
        f"{'on' if c.augment else 'off'}; total {i['total_seconds']:.0f} s"
    )


def accuracy_vs_trainable_plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Scatter of test accuracy (± std) against the trainable share (log scale), PNG (atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.io import atomic_write

    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, r in enumerate(rows):
        x = max(float(r["trainable_percent"]), 1e-3)
        y = 100 * float(r["accuracy_mean"])
        e = 100 * float(r.get("accuracy_std") or 0.0)
        ax.errorbar([x], [y], yerr=[e], fmt="o", color=f"C{i}", capsize=4, label=r["title"])
        ax.annotate(r["title"], (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (% of backbone, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _write_outputs(result: DemoResult, out: Path, data_path: str | Path | None) -> dict[str, Path]:
    from polyprompt.core.demo import report

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "plot": out / "accuracy_vs_trainable.png",
    }
    c = result.config
    cmd = "python examples/pointcloud/idpt_classify.py" + (
        " --quick" if result.info["quick"] else ""
    )
    if data_path is not None:
        cmd += f" --data {data_path}"
    elif c.task != "furniture":
        cmd += f" --task {c.task}"
    cmd += f" --seeds {' '.join(map(str, c.seeds))}" + (" --augment" if c.augment else "")
    md = "\n".join(
        [
            f"# IDPT example: {result.info['data']}",
            "",
            _headline(result),
            "",
            result.table("markdown"),
            "",
            "Accuracy: test split, mean ± sample std over seeds; model selection on the val "
            "split. Trainable %: of the backbone's parameters. Checkpoint: prompt-only "
            "safetensors (full fine-tuning: the whole model). Time: wall seconds per seed "
            f"(training + evaluation, {result.info['torch_threads']} torch thread(s)).",
            "",
            f"Reproduce: `{cmd}`",
        ]
    )
    report.write_markdown(files["markdown"], md)
    accuracy_vs_trainable_plot(
        result.rows, files["plot"], f"{result.info['data']}: accuracy vs trainable share"
    )
    report.write_json(files["json"], result.to_dict())
    return files


def build_parser(prog: str = "idpt_classify.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="IDPT vs linear probe / full fine-tuning / VPT on a frozen Point-MAE "
        "(real furniture meshes by default).",
    )
    p.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    p.add_argument(
        "--data", metavar="PATH", help="ModelNet40 (.txt / HDF5) or ScanObjectNN (.h5) folder"
    )
    p.add_argument("--task", choices=("furniture", "digits"), help="built-in real data set")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT), help="results folder")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds (default 0 1 2)")
    p.add_argument("--epochs", type=int, metavar="E", help="epochs per run")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), metavar="M", help="rows to run")
    p.add_argument(
        "--augment", action="store_true", help="scale + translate augmentation (no cache)"
    )
    p.add_argument(
        "--pretrain-meshes",
        choices=PRETRAIN_MESHES,
        help="unlabelled meshes added to the pre-training (default auto: pybullet_data if installed)",
    )
    p.add_argument("--threads", type=int, metavar="T", help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``examples/pointcloud/idpt_classify.py``; returns the exit code."""
    from polyprompt.core.demo.cli import overrides, run_cli

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.threads:
        torch.set_num_threads(args.threads)

    def body() -> None:
        cfg = DemoConfig.quick() if args.quick else DemoConfig()
        changes = overrides(
            args,
            {
                "seeds": "seeds",
                "epochs": "epochs",
                "methods": "methods",
                "task": "task",
                "pretrain_meshes": "pretrain_meshes",
            },
        )
        if args.epochs:
            changes["warmup_epochs"] = min(cfg.warmup_epochs, args.epochs)
        if args.augment:
            changes["augment"] = True
        if changes:
            cfg = cfg.replace(**changes)
        run_demo(
            quick=args.quick,
            out_dir=args.out,
            config=cfg,
            data_path=args.data,
            progress=not args.no_progress,
        )

    return run_cli("idpt_classify", body)


if __name__ == "__main__":
    sys.exit(main())
