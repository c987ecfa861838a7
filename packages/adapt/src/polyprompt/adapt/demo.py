"""CoDA example: real digit-on-texture scenes (source) -> fog / night scenes (target).

``python examples/adapt/coda_segmentation.py [--quick] [--data ROOT] [--out DIR] [--seeds N]``

Runs the four variants of the ablation (source-only, DAFormer-style self-training
without prompts, self-training + SAVPT without the chain, full CoDA) on the same
source-pre-trained SegFormer, over ``--seeds`` seeds, and reports target mIoU overall
and per severity group (easy / hard by the paper's dark-pixel rule), trainable share,
checkpoint bytes and time per iteration. ``--out`` gets ``results.json``,
``results.md``, ``miou.png`` (bars per group) and ``qualitative.png`` (source, target,
pseudo-labels and predictions side by side).

``--data ROOT`` runs the same on the paper's data: ``ROOT/cityscapes`` (source, train ids)
and one target among ``ROOT/acdc``, ``ROOT/dark_zurich``, ``ROOT/foggy_zurich``
(``--target``), resized to ``--size`` (square) for CPU budgets.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VARIANT_LABELS = {
    "source_only": "source-only",
    "self_training": "self-training (no prompts)",
    "savpt": "self-training + SAVPT (no chain)",
    "coda": "CoDA (SAVPT + chain)",
}


@dataclass
class DemoSettings:
    image_size: int = 64
    patch_size: int = 8  # 64 px patches on 512 px crops in the paper: the same 1/8 of the side
    n_source: int = 320
    n_target_train: int = 160
    n_target_test: int = 120
    pretrain_epochs: int = 20
    iterations: int = 80
    batch_size: int = 4
    lr: float = 6e-5  # the paper's AdamW learning rate
    mic: bool = False
    prompt_lr_mult: float = 10.0  # the official config's lr_mult for non-encoder parts

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            n_source=64, n_target_train=48, n_target_test=32, pretrain_epochs=2, iterations=6
        )


def _task(settings: DemoSettings, data: Path | None, target: str, size: int):
    if data is None:
        from polyprompt.adapt.data.scenes import SceneTaskConfig, build_digit_scenes

        task = build_digit_scenes(
            SceneTaskConfig(
                image_size=settings.image_size,
                n_source=settings.n_source,
                n_target_train=settings.n_target_train,
                n_target_test=settings.n_target_test,
            ),
            cache=True,
        )
        return task.source, task.target_train, task.target_test
    from polyprompt.adapt.data import folders

    rs = (size, size)
    source = folders.cityscapes(data / "cityscapes", "train", resize=rs)
    if target == "acdc":
        t_train = folders.acdc(data / "acdc", split="train", labels=False, resize=rs)
        t_test = folders.acdc(data / "acdc", split="val", resize=rs)
    elif target == "dark_zurich":
        t_train = folders.dark_zurich(data / "dark_zurich", "train", labels=False, resize=rs)
        t_test = folders.dark_zurich(data / "dark_zurich", "val", resize=rs)
    else:
        t_train = folders.foggy_zurich(data / "foggy_zurich", "medium", labels=False, resize=rs)
        t_test = folders.foggy_zurich(data / "foggy_zurich", "testv2", resize=rs)
    return source, t_train, t_test


def run(
    *,
    quick: bool = True,
    out_dir: Path | None = None,
    seeds: int = 3,
    data: Path | None = None,
    target: str = "acdc",
    size: int = 128,
    iterations: int | None = None,
    mic: bool | None = None,
    progress: bool = True,
    settings: DemoSettings | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    import torch

    from polyprompt.adapt.backbone import MiTConfig
    from polyprompt.adapt.evaluate import evaluate_segmentation
    from polyprompt.adapt.method import CoDA, CoDAConfig
    from polyprompt.adapt.pretrain import PretrainConfig, pretrain_source
    from polyprompt.adapt.selftrain import SelfTrainingConfig, UDATrainer, Variant
    from polyprompt.core.demo.report import summarize
    from polyprompt.core.freezing import trainable_report

    if threads is not None:
        # the tiny 64 px ops do not scale past one thread, and on a busy machine OpenMP
        # barriers make 2 threads up to 40x slower than 1 (measured)
        torch.set_num_threads(threads)
    st = settings or (DemoSettings.quick() if quick else DemoSettings())
    if iterations is not None:
        st.iterations = iterations
    if mic is not None:
        st.mic = mic
    if data is not None:
        st.image_size = size
        st.patch_size = max(1, size // 8)
    start = time.perf_counter()
    source, t_train, t_test = _task(st, data, target, size)
    print(
        f"data: {len(source)} source, {len(t_train)} target train, {len(t_test)} target test "
        f"images of {source.image_size} ({source.num_classes} classes)",
        flush=True,
    )
    net = pretrain_source(
        source, MiTConfig.small(), PretrainConfig(epochs=st.pretrain_epochs), progress=progress
    )
    rows: list[dict[str, Any]] = []
    per_seed: dict[str, list[dict[str, Any]]] = {v.value: [] for v in Variant}
    keep: dict[str, Any] = {}
    for seed in range(seeds):
        for variant in Variant:
            torch.manual_seed(seed)
            model = CoDA(
                copy.deepcopy(net),
                CoDAConfig(
                    image_size=st.image_size,
                    patch_size=st.patch_size,
                    use_savpt=variant.uses_savpt,
                    prompt_lr_mult=st.prompt_lr_mult,
                ),
            )
            cfg = SelfTrainingConfig.scaled(
                st.iterations,
                iters_per_epoch=st.iterations,
                batch_size=st.batch_size,
                lr=st.lr,
                mic=st.mic,
                mask_block_size=max(1, st.image_size // 8),
                seed=seed,
            )
            print(f"seed {seed}: {VARIANT_LABELS[variant.value]} ...", flush=True)
            res = UDATrainer(cfg, variant, progress=progress).fit(model, source, t_train)
            ev = evaluate_segmentation(model, t_test)
            rep = trainable_report(model)
            per_seed[variant.value].append(
                {
                    "seed": seed,
                    "miou": ev["miou"],
                    "easy": ev["easy"]["miou"],
                    "hard": ev["hard"]["miou"],
                    "s_per_it": res.seconds_per_iteration,
                    "seconds": res.seconds,
                    "trainable": rep.trainable_params,
                    "percent": rep.percent_of_backbone,
                    "bytes": rep.checkpoint_bytes,
                    "savpt_params": model.savpt_parameters(),
                    "phases": res.phase_counts,
                    "n_easy": ev["n_easy"],
                    "n_hard": ev["n_hard"],
                }
            )
            if seed == 0:
                keep[variant.value] = (model, res.teacher)
    for variant in Variant:
        runs = per_seed[variant.value]
        row: dict[str, Any] = {"method": VARIANT_LABELS[variant.value], "variant": variant.value}
        for key in ("miou", "easy", "hard"):
            vals = [r[key] for r in runs if r[key] is not None]
            row[f"{key}_mean"], row[f"{key}_std"] = summarize(vals) if vals else (None, None)
        row["trainable_percent"] = runs[0]["percent"]
        row["trainable_params"] = runs[0]["trainable"]
        row["savpt_params"] = runs[0]["savpt_params"]
        row["checkpoint_bytes"] = runs[0]["bytes"]
        row["s_per_iteration"] = sum(r["s_per_it"] for r in runs) / len(runs)
        row["seconds"] = sum(r["seconds"] for r in runs) / len(runs)
        row["phases"] = runs[0]["phases"]
        rows.append(row)
    result = {
        "package": "polyprompt-adapt",
        "quick": quick,
        "data": str(data) if data else "digit-on-texture scenes (MNIST -> optdigits, fog / night)",
        "seeds": seeds,
        "settings": st.__dict__,
        "self_training_config": cfg.to_dict(),  # the last seed's (only ``seed`` differs)
        "n_easy": per_seed["coda"][0]["n_easy"],
        "n_hard": per_seed["coda"][0]["n_hard"],
        "rows": rows,
        "per_seed": per_seed,
        "seconds": time.perf_counter() - start,
    }
    table = format_results(rows)
    print(table, flush=True)
    if out_dir is not None:
        write_outputs(Path(out_dir), result, table, keep, source, t_test)
    return result


def _columns():
    from polyprompt.core.demo.report import Column, format_bytes

    return [
        Column("method", "method", align="left"),
        Column("mIoU all (%)", "miou_mean", std_key="miou_std", scale=100, fmt="{:.1f}"),
        Column("mIoU easy (%)", "easy_mean", std_key="easy_std", scale=100, fmt="{:.1f}"),
        Column("mIoU hard (%)", "hard_mean", std_key="hard_std", scale=100, fmt="{:.1f}"),
        Column("trainable %", "trainable_percent", fmt="{:.2f}"),
        Column("SAVPT params", "savpt_params", fmt="{:,}"),
        Column("checkpoint", "checkpoint_bytes", fmt=format_bytes),
        Column("time (s)", "seconds", fmt="{:.0f}"),
        Column("s / iteration", "s_per_iteration", fmt="{:.3f}"),
    ]


def format_results(rows: Sequence[dict[str, Any]]) -> str:
    from polyprompt.core.demo.report import format_table

    return format_table(rows, _columns(), style="markdown")


def write_outputs(out: Path, result: dict, table: str, keep: dict, source, t_test) -> None:
    from polyprompt.core.demo.report import write_json, write_markdown

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    write_markdown(
        out / "results.md",
        f"# CoDA ablation ({result['data']})\n\nTarget test mIoU over {result['seeds']} seeds "
        f"({result['n_easy']} easy / {result['n_hard']} hard images by the dark-pixel rule).\n\n"
        + table,
    )
    group_plot(result["rows"], out / "miou.png")
    if "coda" in keep:
        qualitative_figure(keep, source, t_test, out / "qualitative.png")
    print(f"wrote {out}/results.json, results.md, miou.png, qualitative.png", flush=True)


def group_plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: mIoU (all / easy / hard) per method, with std error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.io import atomic_write

    fig = Figure(figsize=(8, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups = ("miou", "easy", "hard")
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [g + (i - (len(rows) - 1) / 2) * width for g in range(len(groups))]
        ms = [100 * (row.get(f"{g}_mean") or 0) for g in groups]
        ss = [100 * (row.get(f"{g}_std") or 0) for g in groups]
        ax.bar(xs, ms, width, yerr=ss, capsize=3, label=row["method"], color=f"C{i}")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["all target", "easy (fog)", "hard (dark)"])
    ax.set_ylabel("mIoU (%)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _colorize(labels, num_classes: int):
    import numpy as np
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    lut = np.array([cmap(i % 10)[:3] for i in range(num_classes)] + [(0, 0, 0)])
    lab = labels.numpy().copy()
    lab[lab >= num_classes] = num_classes
    return lut[lab]


def qualitative_figure(keep: dict, source, t_test, path: Path) -> Path:
    """Rows: one source scene, then easy and hard target scenes; columns: image, ground
    truth, CoDA teacher pseudo-label, source-only prediction, CoDA prediction."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.io import atomic_write

    coda, teacher = keep["coda"]
    base = keep["source_only"][0]
    k = t_test.num_classes
    hard = coda.severity(t_test.images)
    picks = [("source", source.images[0], source.labels[0])]
    for name, flag in (("target easy", False), ("target hard", True)):
        idx = torch.nonzero(hard == flag).flatten()[:2].tolist()
        picks += [(name, t_test.images[i], t_test.labels[i]) for i in idx]
    cols = ["image", "ground truth", "pseudo-label (teacher)", "source-only", "CoDA"]
    fig = Figure(figsize=(2.0 * len(cols), 2.0 * len(picks)), dpi=100)
    FigureCanvasAgg(fig)
    with torch.no_grad():
        for r, (name, img, lab) in enumerate(picks):
            x = img.unsqueeze(0)
            sev = coda.severity(x)
            pseudo = teacher(x, sev).argmax(1)[0] if teacher is not None else lab
            panels = [
                img.permute(1, 2, 0).numpy(),
                _colorize(lab, k),
                _colorize(pseudo, k),
                _colorize(base.predict(x)[0], k),
                _colorize(coda.predict(x)[0], k),
            ]
            for c, panel in enumerate(panels):
                ax = fig.add_subplot(len(picks), len(cols), r * len(cols) + c + 1)
                ax.imshow(panel, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c], fontsize=8)
                if c == 0:
                    ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def run_demo(quick: bool = True, out_dir: Path | None = None) -> dict:
    """Entry point of ``polyprompt demo`` (group ``polyprompt.demos``)."""
    return run(quick=quick, out_dir=out_dir, seeds=1 if quick else 3, progress=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``examples/adapt/coda_segmentation.py``; returns the exit code."""
    from polyprompt.core.demo.cli import run_cli

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="<= 1 minute smoke run")
    parser.add_argument("--data", type=Path, default=None, help="root with cityscapes/ + a target")
    parser.add_argument("--target", choices=("acdc", "dark_zurich", "foggy_zurich"), default="acdc")
    parser.add_argument("--size", type=int, default=128, help="square resize for --data")
    parser.add_argument("--out", type=Path, default=None, help="write JSON, markdown, plots here")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3; 1 with --quick)")
    parser.add_argument("--iterations", type=int, default=None, help="self-training iterations")
    parser.add_argument("--mic", action="store_true", help="add MIC masked-image consistency")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    return run_cli(
        "coda_segmentation",
        lambda: run(
            quick=args.quick,
            out_dir=args.out,
            seeds=seeds,
            data=args.data,
            target=args.target,
            size=args.size,
            iterations=args.iterations,
            mic=True if args.mic else None,
            threads=args.threads,
        ),
    )
