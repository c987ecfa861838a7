"""The main demo: adapt a frozen MNIST-pre-trained ViT to optdigits with a few prompts.

Source domain: 3,500 real MNIST digits pre-train a small timm ViT (:mod:`.pretrain`, cached).
Target domain: optdigits (UCI, ``sklearn.datasets.load_digits``) — other writers, another
scanner, 8 x 8 block counts upsampled to 32 x 32 (:mod:`.data`). With a few labels per class
the frozen backbone is adapted four ways, all through :func:`polyprompt.core.create`, the
:class:`~polyprompt.core.backbones.timm_vit.TimmViTAdapter` and the one
:class:`~polyprompt.core.trainer.Trainer`:

===============  ==============================================================
linear_probe     frozen backbone, new linear head (trained on cached features)
full_finetune    every weight trains (the upper baseline; its "checkpoint" is the model)
vpt_shallow      VPT (Jia et al., ECCV 2022): ``num_tokens`` prompts before block 0 + head
vpt_deep         VPT-deep: a new set of prompts before every block + head
===============  ==============================================================

Protocol: one fixed stratified optdigits split (train / val / test); each seed draws its own
``labels_per_class`` training images and initialises and shuffles with its own seed; the
epoch with the best *val* accuracy is kept (never the test split); the test accuracy is
reported as mean ± std over the seeds, with the trainable share of the backbone, the size of
the prompt-only checkpoint and the wall time per seed.

Example::

    >>> from polyprompt.core.demo.digits import run_demo
    >>> result = run_demo(quick=True, out_dir="out/demo-quick")   # doctest: +SKIP
    >>> print(result.table())                                     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from polyprompt.core.config import PromptConfig, is_int

if TYPE_CHECKING:
    from polyprompt.core.demo.data import DigitData, DigitSplits
    from polyprompt.core.demo.pretrain import PretrainConfig, PretrainedDigitViT

__all__ = ["METHODS", "DemoConfig", "DemoResult", "MethodSpec", "main", "run_demo"]

DEFAULT_OUT = Path("out") / "demo"


@dataclass(frozen=True)
class MethodSpec:
    """One row of the demo: a registered method with its options and learning rate.

    ``lr`` names a :class:`DemoConfig` field (``"lr_head"``, ``"lr_prompt"``, ``"lr_full"``).
    """

    name: str
    method: str
    title: str
    lr: str
    options: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec("linear_probe", "linear_probe", "linear probe", "lr_head"),
        MethodSpec("full_finetune", "full_finetune", "full fine-tuning", "lr_full"),
        MethodSpec("vpt_shallow", "vpt", "VPT-shallow", "lr_prompt", {"deep": False}),
        MethodSpec("vpt_deep", "vpt", "VPT-deep", "lr_prompt", {"deep": True}),
    )
}


@dataclass
class DemoConfig(PromptConfig):
    """Settings of :func:`run_demo` (validated; saved with the results).

    Args:
        seeds: one run per method and seed (>= 3 for a mean ± std worth reading).
        labels_per_class: target training labels per class (``None``: the whole train split).
        epochs: epochs per run (the best val epoch is kept).
        batch_size: training batch size.
        lr_head / lr_prompt / lr_full: AdamW learning rates of the linear probe, VPT and
            full fine-tuning; each picked from a 3-value grid by the best *val* accuracy,
            never by the test split (lr_head from 3e-3/1e-2/3e-2/1e-1 and lr_full from
            2e-4/5e-4/1e-3 on seed 0; lr_prompt from 1e-2/3e-2/1e-1 on seeds 0-1).
        weight_decay: AdamW weight decay.
        num_tokens: VPT prompt tokens (per block for VPT-deep).
        methods: rows to run, names of :data:`METHODS`.
        val_fraction / test_fraction: shares of the target set in the val / test splits.
        split_seed: seed of the train / val / test split (fixed across seeds).
        save_checkpoints: save each method's prompt-only checkpoint of the first seed.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    labels_per_class: int | None = 20
    epochs: int = 25
    batch_size: int = 32
    lr_head: float = 1e-1
    lr_prompt: float = 1e-2
    lr_full: float = 5e-4
    weight_decay: float = 1e-4
    num_tokens: int = 10
    methods: tuple[str, ...] = tuple(METHODS)
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    split_seed: int = 0
    save_checkpoints: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seeds = tuple(self.seeds)
        self.methods = tuple(self.methods)
        r = self.require
        r(
            len(self.seeds) >= 1 and all(is_int(s) and s >= 0 for s in self.seeds),
            "seeds",
            "must be one or more ints >= 0",
        )
        r(len(set(self.seeds)) == len(self.seeds), "seeds", "must not repeat")
        r(
            self.labels_per_class is None
            or (is_int(self.labels_per_class) and self.labels_per_class >= 1),
            "labels_per_class",
            "must be None or an int >= 1",
        )
        r(is_int(self.epochs) and self.epochs >= 1, "epochs", "must be an int >= 1")
        r(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an int >= 1")
        for name in ("lr_head", "lr_prompt", "lr_full"):
            v = getattr(self, name)
            r(isinstance(v, (int, float)) and v > 0, name, "must be > 0")
        r(
            isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0,
            "weight_decay",
            "must be >= 0",
        )
        r(is_int(self.num_tokens) and self.num_tokens >= 1, "num_tokens", "must be an int >= 1")
        unknown = [m for m in self.methods if m not in METHODS]
        r(
            bool(self.methods) and not unknown,
            "methods",
            f"must be names of {sorted(METHODS)}; unknown: {unknown}",
        )
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            r(isinstance(v, float) and 0 < v < 1, name, "must be a float in (0, 1)")
        r(
            self.val_fraction + self.test_fraction < 1,
            "test_fraction",
            "val_fraction + test_fraction must be < 1",
        )
        r(is_int(self.split_seed) and self.split_seed >= 0, "split_seed", "must be an int >= 0")

    @classmethod
    def quick(cls) -> DemoConfig:
        """Smoke-test size: one seed, 10 labels per class, 8 epochs of batch 16."""
        return cls(seeds=(0,), labels_per_class=10, epochs=8, batch_size=16)


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: one row per method, the settings, and the files written."""

    rows: list[dict[str, Any]]
    config: DemoConfig
    info: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def row(self, name: str) -> dict[str, Any]:
        for r in self.rows:
            if r["method"] == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r['method'] for r in self.rows]}")

    def table(self, style: str = "markdown") -> str:
        """The results table (``"markdown"`` or ``"plain"``)."""
        from polyprompt.core.demo.report import format_table

        return format_table(self.rows, table_columns(), style=style)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "info": self.info,
            "rows": self.rows,
            "files": {k: str(v) for k, v in self.files.items()},
        }


def table_columns() -> list:
    """Columns of the demo table (method, accuracy mean ± std, trainable %, checkpoint, time)."""
    from polyprompt.core.demo.report import Column, format_bytes

    return [
        Column("method", "title", align="left"),
        Column(
            "test accuracy (%)", "accuracy_mean", std_key="accuracy_std", scale=100, fmt="{:.1f}"
        ),
        Column("trainable params", "trainable_params", fmt="{:,}"),
        Column("trainable % of backbone", "trainable_percent", fmt="{:.2f}"),
        Column("checkpoint", "checkpoint_bytes", fmt=format_bytes),
        Column("time / seed (s)", "seconds_mean", fmt="{:.1f}"),
    ]


# ----------------------------------------------------------------------------- runs
def _run_one(
    spec: MethodSpec,
    seed: int,
    cfg: DemoConfig,
    vit: PretrainedDigitViT,
    train: DigitData,
    splits: DigitSplits,
    epoch_progress: bool,
    checkpoint_dir: Path | None,
) -> dict[str, Any]:
    from polyprompt.core.cache import FeatureCache, FromCachedTokens
    from polyprompt.core.freezing import trainable_report
    from polyprompt.core.registry import create
    from polyprompt.core.trainer import Trainer, TrainerConfig

    start = time.perf_counter()
    torch.manual_seed(seed)
    options = dict(spec.options)
    if spec.method == "vpt":
        options.setdefault("num_tokens", cfg.num_tokens)
    model = create(spec.method, vit.backbone(), num_classes=train.num_classes, **options)
    trainer = Trainer(
        TrainerConfig(
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=float(getattr(cfg, spec.lr)),
            weight_decay=cfg.weight_decay,
            scheduler="cosine",
            grad_clip=1.0,
            seed=seed,
            progress=epoch_progress,
            device="cpu",
        ),
        metric="accuracy",
    )
    data = {"train": train, "val": splits.val, "test": splits.test}
    if spec.method == "linear_probe":
        # nothing below the head trains: compute the frozen tokens once, train on them
        cache = FeatureCache(model.backbone, model.cache_point, in_memory=True)
        datasets = {k: cache.cached_dataset(v.dataset(), batch_size=256) for k, v in data.items()}
        net = FromCachedTokens(model, cache.start_block)
    else:
        datasets = {k: v.dataset() for k, v in data.items()}
        net = model
    fit = trainer.fit(net, datasets["train"], datasets["val"])
    test = trainer.evaluate(net, datasets["test"])
    seconds = time.perf_counter() - start
    report = trainable_report(model)
    if checkpoint_dir is not None:
        from polyprompt.core.checkpoint import save_prompt

        save_prompt(
            model,
            checkpoint_dir / spec.name,
            extra={"demo": "mnist->optdigits", "seed": seed, "test_accuracy": test["metric"]},
        )
    return {
        "seed": seed,
        "test_accuracy": float(test["metric"]),
        "best_val_accuracy": fit.best_metric,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "seconds": seconds,
        "trainable_params": report.trainable_params,
        "backbone_params": report.backbone_params,
        "trainable_percent": report.percent_of_backbone,
        "checkpoint_bytes": report.checkpoint_bytes,
    }


def run_demo(
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    labels_per_class: int | str | None = "default",
    *,
    config: DemoConfig | None = None,
    target: DigitData | None = None,
    pretrain_config: PretrainConfig | None = None,
    progress: bool = True,
    epoch_progress: bool = False,
    verbose: bool = True,
) -> DemoResult:
    """Adapt the MNIST-pre-trained ViT to optdigits (or ``target``); table, JSON, markdown, plot.

    Args:
        quick: smoke-test size (:meth:`DemoConfig.quick`, quick pre-training; ~30 s).
        seeds: override the config's seeds.
        out_dir: where ``results.json``, ``results.md``, ``accuracy.png`` and the prompt
            checkpoints go (default ``./out/demo``; the folder is created).
        labels_per_class: override the config's target labels per class (``None``: all).
        config: full settings (default :class:`DemoConfig` or its ``quick()``).
        pretrain_config: how the backbone is pre-trained (default: :class:`PretrainConfig`
            or its ``quick()``); cached per setting.
        target: another target domain (e.g. :func:`~polyprompt.core.demo.data.load_image_folder`);
            default optdigits.
        progress: a progress bar over the runs; ``epoch_progress`` adds the Trainer's bars.
        verbose: print the steps and the final table.

    Returns:
        :class:`DemoResult` with one row per method: ``accuracy_mean`` / ``accuracy_std``
        (test split, fractions), ``trainable_percent``, ``checkpoint_bytes``, ``seconds_mean``,
        and the per-seed ``runs``.
    """
    from polyprompt.core.demo import report
    from polyprompt.core.demo.data import few_shot, load_optdigits, split_digits
    from polyprompt.core.demo.pretrain import pretrain_digit_vit
    from polyprompt.core.errors import InputError
    from polyprompt.core.progress import progress_bar

    total_start = time.perf_counter()
    cfg = config if config is not None else (DemoConfig.quick() if quick else DemoConfig())
    changes: dict[str, Any] = {}
    if seeds is not None:
        changes["seeds"] = tuple(seeds)
    if labels_per_class != "default":
        changes["labels_per_class"] = labels_per_class
    if changes:
        cfg = cfg.replace(**changes)
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    vit = pretrain_digit_vit(
        quick=quick, pretrain_config=pretrain_config, progress=progress, verbose=verbose
    )
    data = target if target is not None else load_optdigits()
    splits = split_digits(
        data, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.split_seed
    )
    try:
        trains = {
            seed: (
                few_shot(splits.train, labels_per_class=cfg.labels_per_class, seed=seed)
                if cfg.labels_per_class is not None
                else splits.train
            )
            for seed in cfg.seeds
        }
    except InputError as exc:
        raise InputError(
            f"run_demo: {exc}; ask for fewer labels per class (--labels-per-class N, "
            "0 = the whole train split)"
        ) from None
    n_train = len(next(iter(trains.values())))
    say(
        f"target {data.name!r}: {data.num_classes} classes, train {n_train} "
        f"({cfg.labels_per_class or 'all'} per class, drawn per seed from {len(splits.train)}), "
        f"val {len(splits.val)}, test {len(splits.test)}; seeds {list(cfg.seeds)}"
    )
    specs = [METHODS[m] for m in cfg.methods]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in specs}
    bar = progress_bar(
        total=len(specs) * len(cfg.seeds), desc="adapting", enabled=progress, unit="run"
    )
    try:
        for seed in cfg.seeds:
            for spec in specs:
                bar.set_postfix(method=spec.name, seed=seed)
                ckpt = (
                    out / "checkpoints" if cfg.save_checkpoints and seed == cfg.seeds[0] else None
                )
                res = _run_one(spec, seed, cfg, vit, trains[seed], splits, epoch_progress, ckpt)
                runs[spec.name].append(res)
                line = (
                    f"  {spec.title:<17} seed {seed}: test acc {res['test_accuracy']:.2%} "
                    f"(best val {res['best_val_accuracy']:.2%} @ epoch {res['best_epoch']}), "
                    f"{res['seconds']:.1f} s"
                )
                if verbose and progress:
                    bar.write(line)
                elif verbose:
                    print(line, flush=True)
                bar.update(1)
    finally:
        bar.close()

    rows = [
        report.method_row(spec, runs[spec.name])
        | {
            "options": dict(spec.options)
            | ({"num_tokens": cfg.num_tokens} if spec.method == "vpt" else {})
        }
        for spec in specs
    ]
    info = {
        "demo": f"mnist -> {data.name}",
        "quick": quick,
        "chance_accuracy": 1.0 / data.num_classes,
        "backbone": {
            "arch": vit.vit_config.to_dict(),
            "pretrain": vit.pretrain_config.to_dict(),
            "params": vit.num_params(),
            "mnist_test_accuracy": vit.mnist_test_accuracy,
            "from_cache": vit.from_cache,
            "seconds": vit.seconds,
            "cache_file": str(vit.path) if vit.path else None,
        },
        "target": {
            "name": data.name,
            "num_classes": data.num_classes,
            "splits": splits.sizes(),
            "train_per_seed": n_train,
        },
        "total_seconds": None,
    }
    result = DemoResult(rows, cfg, info)
    info["total_seconds"] = time.perf_counter() - total_start
    result.files = _write_outputs(result, out)
    info["total_seconds"] = time.perf_counter() - total_start
    report.write_json(result.files["json"], result.to_dict())
    say("")
    say(_headline(result))
    say(result.table("markdown"))
    say(f"\nresults: {result.files['markdown']}, {result.files['json']}, {result.files['plot']}")
    return result


def _headline(result: DemoResult) -> str:
    info = result.info
    bb = info["backbone"]
    cfg = result.config
    return (
        f"{info['demo']}: timm ViT ({bb['params']:,} params, MNIST test accuracy "
        f"{bb['mnist_test_accuracy']:.1%}) adapted with {cfg.labels_per_class or 'all'} labels per "
        f"class; test accuracy over {len(cfg.seeds)} seed(s) (chance "
        f"{info['chance_accuracy']:.0%}); total {info['total_seconds']:.0f} s"
    )


def _write_outputs(result: DemoResult, out: Path) -> dict[str, Path]:
    from polyprompt.core.demo import report

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "results.json",
        "markdown": out / "results.md",
        "plot": out / "accuracy.png",
    }
    cfg = result.config
    md = "\n".join(
        [
            f"# polyprompt demo: {result.info['demo']}",
            "",
            _headline(result),
            "",
            result.table("markdown"),
            "",
            f"Accuracy: {result.info['target']['name']} test split, mean ± sample std over seeds "
            f"{list(cfg.seeds)}; model selection on the val split only. "
            "Checkpoint: size of the prompt-only safetensors file (full fine-tuning: the whole "
            "model). Time: wall seconds per seed (training + evaluation).",
            "",
            "Reproduce: `polyprompt run digits"
            + (" --quick" if result.info["quick"] else "")
            + f" --seeds {' '.join(map(str, cfg.seeds))}`",
        ]
    )
    report.write_markdown(files["markdown"], md)
    report.bar_plot(
        result.rows,
        files["plot"],
        label_key="title",
        mean_key="accuracy_mean",
        std_key="accuracy_std",
        scale=100,
        ylabel="test accuracy (%)",
        title=f"{result.info['demo']}, {cfg.labels_per_class or 'all'} labels/class, "
        f"{len(cfg.seeds)} seed(s)",
        reference=result.info["chance_accuracy"],
        reference_label="chance",
    )
    report.write_json(files["json"], result.to_dict())
    return files


# ----------------------------------------------------------------------------- CLI
def build_parser(prog: str = "polyprompt run digits") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Adapt a frozen MNIST-pre-trained ViT to optdigits (or your own images): "
        "linear probe, full fine-tuning, VPT-shallow, VPT-deep.",
    )
    p.add_argument("--quick", action="store_true", help="smoke-test size (about 30 s)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds (default 0 1 2)")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT), help="results folder")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="target images in class folders PATH/<class>/*.png instead of optdigits",
    )
    p.add_argument(
        "--labels-per-class",
        type=int,
        metavar="N",
        help="target training labels per class (default 20; quick: 10; 0 = all)",
    )
    p.add_argument("--epochs", type=int, metavar="E", help="epochs per run")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), metavar="M", help="rows to run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``polyprompt run digits`` / ``examples/vision/digits_transfer.py``; returns the exit code."""
    from polyprompt.core.demo.cli import overrides, run_cli

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def body() -> None:
        cfg = DemoConfig.quick() if args.quick else DemoConfig()
        changes = overrides(args, {"seeds": "seeds", "epochs": "epochs", "methods": "methods"})
        if args.labels_per_class is not None:
            changes["labels_per_class"] = args.labels_per_class or None
        if changes:
            cfg = cfg.replace(**changes)
        target = None
        if args.data:
            from polyprompt.core.demo.data import load_image_folder

            target = load_image_folder(args.data)
        run_demo(
            quick=args.quick,
            out_dir=args.out,
            config=cfg,
            target=target,
            progress=not args.no_progress,
        )

    return run_cli("digits", body)


if __name__ == "__main__":
    sys.exit(main())
