"""Quick demo hook called by `polyprompt demo` (entry point group `polyprompt.demos`)."""

from __future__ import annotations

from pathlib import Path


def run_demo(quick: bool = True, out_dir: Path | None = None) -> dict:
    """Run this package's example on real data; return its results table as a dict."""
    return {"package": "polyprompt-__NAME__", "quick": quick, "rows": []}
