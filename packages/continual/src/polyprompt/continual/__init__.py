"""polyprompt.continual — MVP (mask + visual prompts) for online continual learning on Si-Blurry.

Moon et al., "Online Class Incremental Learning on Stochastic Blurry Task Boundary via Mask
and Visual Prompt Tuning", ICCV 2023 (official code: KHU-AGI/Si-Blurry).

Light on import: torch and timm load only when a name below is first used.

Example::

    >>> from polyprompt.continual import SiBlurryConfig, SiBlurryStream   # doctest: +SKIP
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "SiBlurryConfig": "stream",
    "SiBlurryStream": "stream",
    "StreamBatch": "stream",
    "StreamSetting": "stream",
    "build_schedule": "stream",
    "MVP": "method",
    "MVPConfig": "method",
    "DualPrompt": "method",
    "DualPromptConfig": "method",
    "L2P": "method",
    "L2PConfig": "method",
    "MVPOutput": "method",
    "OnlineLearner": "learner",
    "LearnerConfig": "learner",
    "OnlineResult": "learner",
    "ReservoirBuffer": "learner",
    "load_vit_checkpoint": "backbone",
    "digit_backbone": "backbone",
    "load_digit_pool": "data",
    "ImageSet": "data",
    "load_image_folder": "data",
    "load_cifar100_folder": "data",
    "load_tinyimagenet": "data",
    "load_imagenet_r": "data",
    "run_demo": "demo",
    "main": "demo",
}

__all__ = sorted([*_EXPORTS, "__version__"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), ("__version__",))
