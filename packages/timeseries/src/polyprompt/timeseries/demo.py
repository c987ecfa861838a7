"""POND on real smartwatch data: leave-one-subject-out, every baseline, table + plots.

Data: seglearn ``load_watch()`` (real IMU recordings of 10 subjects, 7 exercises). Each
held-out subject is a target; the 9 others are the sources (:mod:`.pipeline`). With
``--data PATH`` the same run uses the paper's data in the AdaTime layout (a folder of
``train_<domain>.pt`` / ``test_<domain>.pt``) or a long CSV (:mod:`.data`).

Outputs (``--out DIR``): ``results.json`` (every scenario, seed, method, the selection
criteria), ``results.md`` (main table + per-subject table + selection agreement),
``f1_by_subject.png`` (per-subject macro-F1 by method), ``criteria_vs_f1.png`` (selection
score of each source vs the real target F1 of that source's prompt), ``f1_mean.png`` and
POND's prompt-only checkpoint of the first scenario.

Command line::

    python examples/timeseries/pond_watch.py --quick --out out/timeseries-quick
    python examples/timeseries/pond_watch.py --out out/timeseries          # full (<= 10 min)
    python examples/timeseries/pond_watch.py --data ~/AdaTime/data/HHAR --out out/hhar
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METHOD_TITLES", "load_data", "main", "run_demo", "summarize_runs"]

DEFAULT_OUT = Path("out") / "timeseries"

METHOD_TITLES: dict[str, str] = {
    "target_only": "target-only (TSTPlus from scratch)",
    "source_only": "source-only (pooled)",
    "single_source_oracle": "best single source (oracle)",
    "single_source_selected": "single source (criterion-selected)",
    "finetune": "fine-tune (full)",
    "linear_probe": "linear probe",
    "prompt_tuning": "prompt tuning (VPT-shallow)",
    "finetune_replay": "fine-tune (full) + source replay",
    "prompt_tuning_replay": "prompt tuning + source replay",
    "dann": "DANN",
    "pond": "POND",
    "pond_ensemble": "POND + mixture of all source prompts",
    "inceptiontime_target_only": "InceptionTime target-only",
    "inceptiontime_source_only": "InceptionTime source-only (pooled)",
    "inceptiontime_finetune": "InceptionTime fine-tune",
}


def load_data(path: str | Path | None, *, window: int = 128, stride: int = 128):
    """``None`` -> seglearn watch windows; a folder -> AdaTime ``.pt``; a file -> long CSV."""
    from polyprompt.core.errors import InputError
    from polyprompt.timeseries.data import load_adatime_csv, load_adatime_pt, load_watch

    if path is None:
        return load_watch(window=window, stride=stride)
    p = Path(path).expanduser()
    if p.is_dir():
        return load_adatime_pt(p)
    if p.suffix.lower() == ".csv":
        return load_adatime_csv(p, window=window, stride=stride)
    raise InputError(f"--data {p}: expected an AdaTime folder (train_<d>.pt ...) or a .csv file")


def summarize_runs(runs: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the main table: per method, mean over scenarios for each seed, then mean ± std
    over seeds; trainable share / checkpoint of the first run; time per scenario."""
    from polyprompt.core.demo.report import summarize

    seeds = sorted({r["seed"] for r in runs})
    rows = []
    for m in methods:
        per_seed = []
        for s in seeds:
            vals = [r["methods"][m]["f1"] for r in runs if r["seed"] == s and m in r["methods"]]
            if vals:
                per_seed.append(float(np.mean(vals)))
        if not per_seed:
            continue
        first = next(r["methods"][m] for r in runs if m in r["methods"])
        mean, std = summarize(per_seed)
        rows.append(
            {
                "method": m,
                "title": METHOD_TITLES.get(m, m),
                "f1_mean": mean,
                "f1_std": std,
                "trainable_params": first["trainable_params"],
                "trainable_percent": first["trainable_percent"],
                "checkpoint_bytes": first["checkpoint_bytes"],
                "seconds_mean": float(
                    np.mean([r["methods"][m]["seconds"] for r in runs if m in r["methods"]])
                ),
            }
        )
    return rows


def table_columns() -> list:
    from polyprompt.core.demo.report import Column, format_bytes

    return [
        Column("method", "title", align="left"),
        Column("macro-F1 (%)", "f1_mean", std_key="f1_std", scale=100, fmt="{:.1f}"),
        Column("trainable params", "trainable_params", fmt="{:,}"),
        Column("trainable % of backbone", "trainable_percent", fmt="{:.2f}"),
        Column("checkpoint", "checkpoint_bytes", fmt=format_bytes),
        Column("time / scenario (s)", "seconds_mean", fmt="{:.1f}"),
    ]


def _per_subject_table(runs: list[dict[str, Any]], methods: Sequence[str]) -> str:
    targets = list(dict.fromkeys(r["target"] for r in runs))
    head = "| method | " + " | ".join(targets) + " |"
    lines = [head, "|" + "---|" * (len(targets) + 1)]
    for m in methods:
        cells = []
        for t in targets:
            v = [r["methods"][m]["f1"] for r in runs if r["target"] == t and m in r["methods"]]
            cells.append(f"{100 * np.mean(v):.1f}" if v else "-")
        lines.append(f"| {METHOD_TITLES.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _selection_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    sel = [r for r in runs if "selection" in r]
    if not sel:
        return {}
    agree = float(np.mean([r["selection"]["agrees_with_oracle"] for r in sel]))
    chance = float(np.mean([1.0 / len(r["single_source_f1"]) for r in sel]))
    # Spearman correlation of the selection score with each source's real target F1
    rhos = []
    for r in sel:
        score, f1 = np.asarray(r["selection"]["score"]), np.asarray(r["single_source_f1"])
        if score.std() > 0 and f1.std() > 0:
            rs = np.argsort(np.argsort(score)).astype(float)
            rf = np.argsort(np.argsort(f1)).astype(float)
            rhos.append(float(np.corrcoef(rs, rf)[0, 1]))
    regret = float(
        np.mean(
            [
                max(r["single_source_f1"]) - r["single_source_f1"][r["selection"]["chosen"]]
                for r in sel
            ]
        )
    )
    return {
        "agreement_with_oracle": agree,
        "chance": chance,
        "spearman_score_vs_f1_mean": float(np.mean(rhos)) if rhos else None,
        "mean_f1_regret_of_choice": regret,
        "scenarios": len(sel),
    }


def _method_color(j: int, n: int) -> Any:
    """Distinct colours for up to 20 methods (``C0..C9`` repeat after 10)."""
    if n <= 10:
        return f"C{j}"
    from matplotlib import colormaps

    return colormaps["tab20"](j % 20)


def _plots(
    runs: list[dict[str, Any]], rows: list[dict[str, Any]], methods: Sequence[str], out: Path
) -> dict[str, Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.demo.report import bar_plot
    from polyprompt.core.io import atomic_write

    files: dict[str, Path] = {}
    targets = list(dict.fromkeys(r["target"] for r in runs))
    fig = Figure(figsize=(max(6.0, 1.1 * len(targets) + 3), 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = [
            100
            * float(
                np.mean(
                    [r["methods"][m]["f1"] for r in runs if r["target"] == t and m in r["methods"]]
                    or [np.nan]
                )
            )
            for t in targets
        ]
        ax.bar(
            np.arange(len(targets)) + j * width,
            vals,
            width,
            label=METHOD_TITLES.get(m, m),
            color=_method_color(j, len(methods)),
        )
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2)
    ax.set_xticklabels([f"subj {t}" for t in targets], rotation=30)
    ax.set_ylabel("target macro-F1 (%)")
    ax.set_title("held-out target subject: macro-F1 by method")
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    files["f1_by_subject"] = atomic_write(
        out / "f1_by_subject.png", lambda p: fig.savefig(p, format="png")
    )

    sel = [r for r in runs if "selection" in r]
    if sel:
        fig = Figure(figsize=(5.2, 4.2), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for i, r in enumerate(sel):
            score, f1 = r["selection"]["score"], r["single_source_f1"]
            c = f"C{i % 10}"
            ax.scatter(score, [100 * v for v in f1], s=12, color=c, alpha=0.6)
            ch = r["selection"]["chosen"]
            ax.scatter([score[ch]], [100 * f1[ch]], s=60, marker="*", color=c, edgecolor="black")
        ax.set_xlabel("selection score z(similarity) + z(fidelity)")
        ax.set_ylabel("real target macro-F1 of source prompt (%)")
        ax.set_title("POND source selection (star = chosen)")
        fig.tight_layout()
        files["criteria_vs_f1"] = atomic_write(
            out / "criteria_vs_f1.png", lambda p: fig.savefig(p, format="png")
        )
    files["f1_mean"] = bar_plot(
        rows, out / "f1_mean.png", label_key="method", mean_key="f1_mean", std_key="f1_std",
        scale=100, ylabel="macro-F1 (%)", title="mean over held-out subjects",
    )  # fmt: skip
    return files


def _run_and_store(
    data: Any, t: int, s: int, cfg: Any, out: Path, key: str, *, save_checkpoint: bool
) -> tuple[dict[str, Any], str | None]:
    """Run scenario (target ``t``, seed ``s``), write ``out/runs/<target>-seed<s>.json``
    atomically (a kill never leaves half a file) and, if asked, POND's prompt checkpoint."""
    from polyprompt.core.checkpoint import save_prompt
    from polyprompt.core.demo.report import write_json
    from polyprompt.timeseries.pipeline import run_scenario

    name = data.domain_names[t]
    res = run_scenario(data, t, cfg, s, verbose=False)
    model = res.pop("pond_model", None)
    write_json(out / "runs" / f"{name}-seed{s}.json", {"key": key, "run": res})
    ckpt = None
    if model is not None and save_checkpoint:
        model.set_phase("all")  # the whole prompt side: common, slots, heads
        ckpt = str(
            save_prompt(model, out / "checkpoints" / "pond", extra={"target": name, "seed": s})
        )
    return res, ckpt


def _scenario_job(
    job: dict[str, Any], target: str, seed: int, save_checkpoint: bool
) -> tuple[dict[str, Any], str | None]:
    """Worker-process body of ``run_demo(jobs > 1)``: rebuild data and config from plain
    values (JSON config, file paths), run one scenario, return its JSON-able result."""
    import torch

    from polyprompt.timeseries.pipeline import PipelineConfig

    torch.set_num_threads(job["threads"])
    data = load_data(job["data_path"], window=job["window"], stride=job["stride"])
    cfg = PipelineConfig.from_json(job["config"])
    t = list(data.domain_names).index(target)
    return _run_and_store(
        data, t, seed, cfg, Path(job["out"]), job["key"], save_checkpoint=save_checkpoint
    )


def run_demo(
    quick: bool = True,
    out_dir: str | Path | None = None,
    *,
    data_path: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    targets: Sequence[str] | None = None,
    shots: int | None = None,
    window: int = 128,
    stride: int = 128,
    threads: int | None = 1,
    jobs: int = 1,
    config: Any = None,
    resume: bool = True,
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Leave-one-domain-out POND vs baselines; returns ``{"rows", "runs", "selection", ...}``.

    Args:
        quick: smoke size (one target, one seed, :meth:`PipelineConfig.quick`).
        out_dir: where results and plots go (default ``out/timeseries``).
        data_path: AdaTime folder / CSV instead of the watch data.
        seeds: seeds (default 0, 1, 2; quick: 0).
        targets: target domain names (default: all; quick: the first).
        shots: labelled target windows per class (default the config's, 5).
        window, stride: windowing of the recordings (watch / CSV).
        threads: ``torch.set_num_threads`` (1 is fastest for these small models on shared CPUs).
        config: a :class:`~polyprompt.timeseries.pipeline.PipelineConfig`.
        jobs: scenarios run at once, each in its own process with ``threads`` torch threads
            (the example uses 2 on a 2-core machine; results do not depend on it: every
            scenario is seeded and its backbone cache is keyed by its sources).
        resume: reuse ``out_dir/runs/<target>-seed<s>.json`` written by an earlier (possibly
            interrupted) run with the same data and settings; each is written atomically.
    """
    import torch

    from polyprompt.core.config import is_int
    from polyprompt.core.demo.report import format_table, write_json, write_markdown
    from polyprompt.core.errors import InputError
    from polyprompt.core.progress import progress_bar
    from polyprompt.timeseries.pipeline import PipelineConfig

    start = time.perf_counter()
    if not is_int(jobs) or jobs < 1:
        raise InputError(f"run_demo: jobs must be an int >= 1, got {jobs!r}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(data_path, window=window, stride=stride)
    cfg = config if config is not None else (PipelineConfig.quick() if quick else PipelineConfig())
    if shots is not None:
        cfg = cfg.replace(shots=shots)
    if data_path is not None and Path(data_path).is_dir() and cfg.split_by == "recording":
        cfg = cfg.replace(split_by="split")  # AdaTime: shots from train_<d>.pt, test = test_<d>.pt
    seeds = tuple(seeds) if seeds is not None else ((0,) if quick else (0, 1, 2))
    names = list(data.domain_names)
    if targets is None:
        targets = names[:1] if quick else names
    unknown = [t for t in targets if str(t) not in names]
    if unknown:
        raise InputError(f"run_demo: unknown target domain(s) {unknown}; domains: {names}")
    tids = [names.index(str(t)) for t in targets]
    if verbose:
        print(
            f"data {data.name!r}: {len(data)} windows {data.X.shape[1:]} (C, T), {data.num_classes} classes, "
            f"{data.num_domains} domains; targets {list(targets)}; seeds {list(seeds)}; "
            f"{cfg.shots} labelled target windows per class",
            flush=True,
        )
    key = hashlib.sha256(f"{data.fingerprint()}|{cfg.to_json()}".encode()).hexdigest()[:16]
    runs: list[dict[str, Any]] = []
    bar = progress_bar(total=len(tids) * len(seeds), desc="scenarios", enabled=progress, unit="run")
    ckpt = None
    todo: list[tuple[int, int]] = []
    by_key: dict[tuple[int, int], dict[str, Any]] = {}
    for t in tids:
        for s in seeds:
            done = out / "runs" / f"{names[t]}-seed{s}.json"
            if resume and done.is_file():
                saved = json.loads(done.read_text())
                if saved.get("key") == key:  # same data and settings: reuse (resume)
                    by_key[(t, s)] = saved["run"]
                    bar.update(1)
                    continue
            todo.append((t, s))

    def finished(t: int, s: int, res: dict[str, Any]) -> None:
        by_key[(t, s)] = res
        if verbose:
            f = {m: round(100 * v["f1"], 1) for m, v in res["methods"].items()}
            sel = res.get("selection", {})
            print(
                f"  target {names[t]} seed {s}: {f} chosen {sel.get('chosen_domain')} oracle {sel.get('oracle_domain')}",
                flush=True,
            )
        bar.set_postfix(target=names[t], seed=s)
        bar.update(1)

    job = {"out": str(out), "key": key, "config": cfg.to_json(), "data_path": data_path,
           "window": window, "stride": stride, "threads": int(threads or 1)}  # fmt: skip
    try:
        if jobs > 1 and len(todo) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # seed-major order: the seeds of one target share its cached step-1 backbone, so
            # they should not start at the same time (each worker would pre-train it)
            order = sorted(todo, key=lambda ts: (seeds.index(ts[1]), tids.index(ts[0])))
            ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
            with ProcessPoolExecutor(max_workers=min(jobs, len(order)), mp_context=ctx) as pool:
                futures = {
                    pool.submit(_scenario_job, job, names[t], s, i == 0 and ckpt is None): (t, s)
                    for i, (t, s) in enumerate(order)
                }
                for fut in as_completed(futures):
                    res, saved_ckpt = fut.result()
                    ckpt = ckpt or saved_ckpt
                    finished(*futures[fut], res)
        else:
            for t, s in todo:
                res, saved_ckpt = _run_and_store(
                    data, t, s, cfg, out, key, save_checkpoint=ckpt is None
                )
                ckpt = ckpt or saved_ckpt
                finished(t, s, res)
    finally:
        bar.close()
    runs = [by_key[(t, s)] for t in tids for s in seeds if (t, s) in by_key]
    methods = [m for m in cfg.methods if any(m in r["methods"] for r in runs)]
    rows = summarize_runs(runs, methods)
    selection = _selection_summary(runs)
    files = _plots(runs, rows, methods, out)
    table = format_table(rows, table_columns())
    md = [
        "# POND on held-out subjects" + (" (quick)" if quick else ""),
        "",
        f"data `{data.name}`: {data.num_domains} domains, targets {list(targets)}, seeds {list(seeds)}, "
        f"{cfg.shots} labelled target windows per class; macro-F1 on the target test windows, "
        "mean over targets per seed, then mean ± std over seeds.",
        "",
        table,
        "",
        "## Per target (macro-F1 %, mean over seeds)",
        "",
        _per_subject_table(runs, methods),
        "",
        "## Source selection",
        "",
        f"chosen source = oracle-best source in {selection.get('agreement_with_oracle', float('nan')):.0%} of "
        f"scenarios (chance {selection.get('chance', float('nan')):.0%}); mean Spearman(score, real F1) "
        f"{selection.get('spearman_score_vs_f1_mean')}; mean F1 lost by the choice vs the oracle "
        f"{selection.get('mean_f1_regret_of_choice', float('nan')):.3f}.",
    ]
    result = {
        "package": "polyprompt-timeseries",
        "quick": quick,
        "rows": rows,
        "runs": runs,
        "selection": selection,
        "config": cfg.to_dict(),
        "seconds": time.perf_counter() - start,
    }
    files["json"] = write_json(out / "results.json", result)
    files["markdown"] = write_markdown(out / "results.md", "\n".join(md) + "\n")
    if ckpt is not None:
        files["checkpoint"] = Path(ckpt)
    result["files"] = {k: str(v) for k, v in files.items()}
    if verbose:
        print("\n" + table + "\n\n" + md[-1])
        print(f"wrote {out} in {result['seconds']:.0f} s", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``examples/timeseries/pond_watch.py``; returns the exit code."""
    from polyprompt.core.demo.cli import run_cli

    p = argparse.ArgumentParser(
        description="POND multi-source time-series domain adaptation (leave-one-subject-out)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run (<= 1 min): one target, one seed"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="AdaTime folder (train_<d>.pt/test_<d>.pt) or long CSV",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--targets", nargs="+", default=None, help="target domain names (default: all)")
    p.add_argument(
        "--shots",
        type=int,
        default=None,
        help="labelled target windows per class (0: unsupervised)",
    )
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads per scenario process")
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="scenarios run at once, one process each (default 2 = the 2-core target machine)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--no-resume", action="store_true", help="recompute scenarios already in OUT/runs"
    )
    args = p.parse_args(argv)
    return run_cli(
        "pond_watch",
        lambda: run_demo(
            quick=args.quick, out_dir=args.out, data_path=args.data, seeds=args.seeds,
            targets=args.targets, shots=args.shots, window=args.window, stride=args.stride,
            threads=args.threads, jobs=args.jobs, progress=not args.no_progress,
            resume=not args.no_resume,
        ),
    )  # fmt: skip
