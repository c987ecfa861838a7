"""polyprompt.core — one frozen backbone, many small prompts.

Importing this package is cheap: it imports neither torch nor any modality
library. Public names are resolved on first access (PEP 562), so
``from polyprompt.core import SoftPrompt`` imports torch only then, and
``import polyprompt.core`` never pulls timm, transformers, monai,
torch-geometric, tsai or tree-sitter.

Example::

    >>> import timm
    >>> from polyprompt.core import TimmViTAdapter, create, trainable_report
    >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    >>> model = create("vpt", TimmViTAdapter(vit), num_classes=10, num_tokens=8, deep=True)  # doctest: +SKIP
    >>> trainable_report(model).percent_of_backbone < 1  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it (relative to polyprompt.core)
_EXPORTS: dict[str, str] = {
    # packaging checks (PACKAGE.md point 1)
    "FIELD_LIBRARIES": "packaging",
    "assert_isolated": "packaging",
    "dependency_closure": "packaging",
    "modules_imported_by": "packaging",
    # errors
    "PolypromptError": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "ShapeError": "errors",
    "NonFiniteError": "errors",
    "RegistryError": "errors",
    "UnknownMethodError": "errors",
    "DuplicateMethodError": "errors",
    "CheckpointError": "errors",
    "BackboneMismatchError": "errors",
    # config + registry
    "PromptConfig": "config",
    "register_method": "registry",
    "create": "registry",
    "get_method": "registry",
    "available_methods": "registry",
    "installed_packages": "registry",
    "PromptMethod": "methods.base",
    # prompt blocks
    "SoftPrompt": "prompts.soft",
    "PromptInit": "prompts.soft",
    "DeepPrompt": "prompts.deep",
    "PromptPool": "prompts.pool",
    "PromptGenerator": "prompts.generator",
    "FeaturePrompt": "prompts.feature",
    "PixelPrompt": "prompts.pixel",
    "Bottleneck": "prompts.bottleneck",
    "DeepPromptMode": "prompts.deep",
    "PoolOutput": "prompts.pool",
    "MLPPromptGenerator": "prompts.generator",
    "FeaturePromptKind": "prompts.feature",
    "PixelPromptMode": "prompts.pixel",
    "PixelPromptInit": "prompts.pixel",
    "PatchPosition": "prompts.pixel",
    "BottleneckActivation": "prompts.bottleneck",
    # backbones
    "PromptableBackbone": "backbones.protocol",
    "TimmViTAdapter": "backbones.timm_vit",
    "HFTextAdapter": "backbones.hf",
    "remove_prompt_positions": "backbones.hf",
    "SoftPromptLM": "methods.text",
    "SoftPromptLMConfig": "methods.text",
    # training, accounting, checkpoints
    "freeze_backbone": "freezing",
    "trainable_report": "freezing",
    "TrainableReport": "freezing",
    "save_prompt": "checkpoint",
    "load_prompt": "checkpoint",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "Callback": "trainer",
    "seed_everything": "trainer",
    "module_identity": "freezing",
    "FingerprintCache": "freezing",
    "read_prompt_config": "checkpoint",
    "build_metric": "metrics",
    "compute_metric": "metrics",
    "a_auc": "metrics",
    "a_last": "metrics",
    "f_last": "metrics",
    "progress_bar": "progress",
    "TrainerConfig": "trainer",
    "FeatureCache": "cache",
    "FromCachedTokens": "cache",
    "PromptBank": "bank",
    "BankPlan": "bank",
    "cached_dataset": "cache",
    "CacheWarning": "cache",
    "LinearProbe": "methods.classify",
    "FullFineTune": "methods.classify",
    "VPT": "methods.classify",
    "VPTConfig": "methods.classify",
    "VPTInit": "methods.classify",
    "ClassifierConfig": "methods.classify",
    "PromptClassifier": "methods.classify",
    "FrozenBackboneMixin": "methods.classify",
    "check_tensor": "validation",
    "checkpoint_blocks": "memory",
    "lean_frozen_mlps": "memory",
    "limit_heap_fragmentation": "memory",
    "saved_tensor_bytes": "memory",
    "polyprompt_home": "io",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), ("__version__",))


if TYPE_CHECKING:  # pragma: no cover - static type checkers see the real names
    from polyprompt.core.backbones.hf import HFTextAdapter
    from polyprompt.core.backbones.protocol import PromptableBackbone
    from polyprompt.core.backbones.timm_vit import TimmViTAdapter
    from polyprompt.core.bank import PromptBank
    from polyprompt.core.cache import FeatureCache
    from polyprompt.core.checkpoint import load_prompt, save_prompt
    from polyprompt.core.config import PromptConfig
    from polyprompt.core.errors import *
    from polyprompt.core.freezing import (
        FingerprintCache,
        TrainableReport,
        freeze_backbone,
        trainable_report,
    )
    from polyprompt.core.io import polyprompt_home
    from polyprompt.core.methods.base import PromptMethod
    from polyprompt.core.prompts.bottleneck import Bottleneck
    from polyprompt.core.prompts.deep import DeepPrompt
    from polyprompt.core.prompts.feature import FeaturePrompt
    from polyprompt.core.prompts.generator import PromptGenerator
    from polyprompt.core.prompts.pixel import PixelPrompt
    from polyprompt.core.prompts.pool import PromptPool
    from polyprompt.core.prompts.soft import PromptInit, SoftPrompt
    from polyprompt.core.registry import (
        available_methods,
        create,
        get_method,
        installed_packages,
        register_method,
    )
    from polyprompt.core.trainer import Trainer, TrainerConfig
    from polyprompt.core.validation import check_tensor
