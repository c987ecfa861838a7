"""polyprompt.timeseries — POND: multi-source time-series domain adaptation with prompts.

POND (Junxiang Wang, Guangji Bai, Wei Cheng, Zhengzhang Chen, Liang Zhao, Haifeng Chen,
*POND: Multi-Source Time Series Domain Adaptation with Information-Aware Prompt Tuning*,
KDD 2024, arXiv:2312.12276) on a frozen tsai ``TSTPlus`` transformer over patched series.

This module is light: tsai, seglearn and aeon are imported only by the code paths that
need them. Public names are resolved lazily::

    >>> from polyprompt.timeseries import PONDConfig
    >>> PONDConfig(num_classes=7, num_sources=9).num_tokens
    5
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "TSTAdapter": "backbone",
    "TSTConfig": "backbone",
    "load_tsai_state_dict": "backbone",
    "POND": "method",
    "PONDConfig": "method",
    "PONDGenerator": "method",
    "DomainData": "data",
    "load_watch": "data",
    "load_aeon": "data",
    "load_adatime_pt": "data",
    "load_adatime_csv": "data",
    "select_source": "selection",
    "PipelineConfig": "pipeline",
    "run_scenario": "pipeline",
    "run_demo": "demo",
    "main": "demo",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
