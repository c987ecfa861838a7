"""Cold import time of ``polyprompt.core`` and which heavy libraries it pulls in.

Each measurement runs in a fresh interpreter (``python -c``), timing the import statement
itself with ``time.perf_counter`` inside that process (interpreter start-up excluded; the
whole subprocess wall time is stored too).  Median of 5 (3 with ``--quick``).  The same
processes report which heavy libraries are in ``sys.modules`` afterwards.  ``python -X
importtime`` gives the slowest modules under ``import polyprompt.core``.

Statements measured: ``import polyprompt.core`` (target <= 1.5 s, must not import any
modality library), ``from polyprompt.core import SoftPrompt`` (imports torch, for context)
and ``import torch`` alone (context).

Run ``python benchmarks/import_time.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, write_results

from polyprompt.core.packaging import HEAVY_MODULES

NAME = "import_time"
TARGET_S = 1.5
# top-level module names that `import polyprompt.core` must not load
FORBIDDEN = tuple(m for m in HEAVY_MODULES if m != "torch")
WATCH = (*FORBIDDEN, "torch", "numpy", "peft", "safetensors", "torchmetrics", "sklearn")
STATEMENTS = {
    "import polyprompt.core": "import polyprompt.core",
    "from polyprompt.core import SoftPrompt": "from polyprompt.core import SoftPrompt",
    "import torch": "import torch",
}

_PROBE = """
import sys, time, json
t0 = time.perf_counter()
{stmt}
dt = time.perf_counter() - t0
watch = {watch!r}
print(json.dumps({{"import_s": dt, "loaded": [m for m in watch if m in sys.modules],
                  "n_modules": len(sys.modules)}}))
"""


def run_once(stmt: str) -> dict[str, Any]:
    code = _PROBE.format(stmt=stmt, watch=WATCH)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def _importtime(stmt: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True, check=True
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = (p.strip() for p in line.split(":", 1)[1].split("|", 2))
        rows.append({"module": name, "self_us": int(self_us), "cumulative_us": int(cum_us)})
    return rows


def importtime_top(stmt: str, k: int = 8) -> list[dict[str, Any]]:
    """Slowest modules (cumulative microseconds) that ``stmt`` imports (``python -X importtime``),
    leaving out what the interpreter imports at start-up."""
    startup = {r["module"] for r in _importtime("pass")}
    rows = [r for r in _importtime(stmt) if r["module"] not in startup]
    rows.sort(key=lambda r: r["cumulative_us"], reverse=True)
    return rows[:k]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    repeats = 3 if args.quick else 5
    run_once("pass")  # warm the file-system cache so every statement starts alike
    results: dict[str, Any] = {}
    rows = []
    for label, stmt in STATEMENTS.items():
        runs = [run_once(stmt) for _ in range(repeats)]
        times = [r["import_s"] for r in runs]
        loaded = sorted(set().union(*(r["loaded"] for r in runs)))
        results[label] = {
            "runs": runs,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "loaded_heavy": loaded,
        }
        rows.append(
            {
                "statement": f"`{label}`",
                "median_s": statistics.median(times),
                "min_s": min(times),
                "median_process_s": statistics.median(r["process_wall_s"] for r in runs),
                "modules": runs[-1]["n_modules"],
                "heavy_loaded": ", ".join(loaded) or "none",
            }
        )
    core = results["import polyprompt.core"]
    forbidden_loaded = [m for m in core["loaded_heavy"] if m in FORBIDDEN]
    torch_loaded = "torch" in core["loaded_heavy"]
    top = importtime_top("import polyprompt.core")
    payload = {
        "repeats": repeats,
        "quick": args.quick,
        "target_s": TARGET_S,
        "core_median_s": core["median_s"],
        "core_ok": core["median_s"] <= TARGET_S,
        "forbidden": list(FORBIDDEN),
        "forbidden_loaded": forbidden_loaded,
        "torch_loaded_by_core": torch_loaded,
        "importtime_top": top,
        "results": results,
    }
    top_txt = ", ".join(f"{r['module']} {r['cumulative_us'] / 1e3:.1f} ms" for r in top[:5])
    notes = f"""
Fresh `python -c` per run, median of {repeats}; `median_s` times the import statement inside
the process (interpreter start-up excluded), `median_process_s` is the whole subprocess.
Target for `import polyprompt.core`: <= {TARGET_S} s -> {core["median_s"]:.3f} s
({"met" if core["median_s"] <= TARGET_S else "MISSED"}). Forbidden modules loaded by it:
{", ".join(forbidden_loaded) or "none"} (checked: {", ".join(FORBIDDEN)}); torch loaded:
{"yes" if torch_loaded else "no (lazy exports; torch loads on first use of a torch-backed name)"}.
Slowest under `python -X importtime -c "import polyprompt.core"` (cumulative): {top_txt}.
"""
    write_results(
        NAME, args.out, payload, rows, title="Import time of polyprompt.core", notes=notes
    )
    if forbidden_loaded:
        raise SystemExit(f"import polyprompt.core loaded forbidden modules: {forbidden_loaded}")


if __name__ == "__main__":
    main()
