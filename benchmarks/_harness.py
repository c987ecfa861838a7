"""Shared plumbing for the benchmark scripts: timing, peak memory, JSON + markdown output.

Every benchmark measures the things it compares *side by side in one run* and
writes ``<out>/<name>.json`` and ``<out>/<name>.md``.  Package READMEs quote these
files, never hand-typed numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
    return parser.parse_args(argv)


def environment() -> dict[str, Any]:
    """Machine facts stored with every result."""
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def time_fn(
    fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10, sync: bool = False
) -> dict[str, float]:
    """Median / mean / min seconds of ``fn()`` over ``repeats`` calls after ``warmup``."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "repeats": repeats,
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - non-Linux
        return peak_rss_bytes()


def saved_activation_bytes(fn: Callable[[], Any]) -> int:
    """Bytes autograd saves for backward while ``fn()`` runs, parameters not counted.

    (``polyprompt.core.memory.saved_tensor_bytes`` excludes one given module instead; this
    variant excludes every ``nn.Parameter``, for steps that touch several modules.)
    """
    import torch

    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if not isinstance(t, torch.nn.Parameter):
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    out: Path,
    payload: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    notes: str = "",
    command: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` (payload + environment) and ``<out>/<name>.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "environment": environment(), "rows": list(rows), **payload}
    command = command or "python " + " ".join([f"benchmarks/{name}.py", *sys.argv[1:]])
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    env = payload["environment"]
    md = [
        f"# {title}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs, torch {env['torch']}"
        + (f", GPU {env.get('gpu')}" if env.get("cuda") else ", no GPU"),
        "",
        markdown_table(rows),
    ]
    if notes:
        md += ["", notes.strip(), ""]
    md_path.write_text("\n".join(md))
    print(markdown_table(rows))
    print(f"wrote {json_path} and {md_path}")
    return json_path, md_path
