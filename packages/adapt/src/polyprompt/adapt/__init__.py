"""polyprompt.adapt — CoDA: chain-of-domain adaptation with severity-aware visual prompts.

Gong et al., "CoDA: Instructive Chain-of-Domain Adaptation with Severity-Aware Visual
Prompt Tuning", AAAI 2024 (official code: Cuzyoung/CoDA, on MIC / HRDA / DAFormer).
Unsupervised domain adaptation for semantic segmentation: a labelled source domain
(clear weather) -> an unlabelled target of mixed severity (fog = easy, night = hard).

This module is light: ``import polyprompt.adapt`` imports neither torch nor
transformers; the public names below load on first access.

Example::

    >>> from polyprompt.adapt import MiTConfig, CoDAConfig  # doctest: +SKIP
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "MiTConfig": "backbone",
    "SegFormerBackbone": "backbone",
    "load_official_segformer": "backbone",
    "convert_official_state_dict": "backbone",
    "SeverityRule": "severity",
    "DarkPixelRule": "severity",
    "dark_fraction": "severity",
    "Severity": "severity",
    "SAVPT": "savpt",
    "SpatialAttention": "savpt",
    "SeverityRoutedAdapter": "savpt",
    "ChainOfDomainSchedule": "chain",
    "ChainPhase": "chain",
    "CoDA": "method",
    "CoDAConfig": "method",
    "SelfTrainingConfig": "selftrain",
    "MeanTeacher": "selftrain",
    "UDATrainer": "selftrain",
    "Variant": "selftrain",
    "evaluate_segmentation": "evaluate",
    "SegmentationSet": "data.common",
    "build_digit_scenes": "data.scenes",
    "SceneTaskConfig": "data.scenes",
    "cityscapes": "data.folders",
    "acdc": "data.folders",
    "foggy_zurich": "data.folders",
    "dark_zurich": "data.folders",
    "pretrain_source": "pretrain",
}

__all__ = sorted([*_EXPORTS, "__version__"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), ("__version__",))
