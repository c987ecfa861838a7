"""polyprompt.medical -- DVPT, dynamic visual prompt tuning for medical images.

He et al., "DVPT: Dynamic Visual Prompt Tuning of Large Pre-trained Models for Medical
Image Analysis", arXiv 2307.09787 (Neural Networks 185, 2025); official code NKUhealong/DVPT.

Light on import: torch, timm and MONAI load only when a name below is first used::

    >>> import polyprompt.medical as med
    >>> med.DVPTConfig(num_classes=2).variant.value
    'paper'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # method + baselines
    "DVPT": "dvpt",
    "DVPTConfig": "dvpt",
    "DVPTVariant": "dvpt",
    "DynamicPromptModule": "dvpt",
    "AdaptFormer": "peft",
    "AdaptFormerConfig": "peft",
    "SSF": "peft",
    "SSFConfig": "peft",
    # backbones
    "MedicalViTAdapter": "backbones",
    "MonaiViTAdapter": "backbones",
    "block_forward": "backbones",
    "prepare_image": "backbones",
    "load_official_vit": "checkpoints",
    "clip_visual_to_timm": "checkpoints",
    # data
    "ImageSet": "data",
    "Splits": "data",
    "load_br35h": "data",
    "load_colin27_patches": "data",
    "load_medmnist_npz": "data",
    "load_aptos": "data",
    "load_nifti_folder": "data",
    "load_dicom": "data",
    "load_dataset": "data",
    "stratified_split": "data",
    "label_fraction": "data",
    # pre-training + demo
    "pretrain_backbone": "pretrain",
    "run_demo": "demo",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), ("__version__",))

if TYPE_CHECKING:  # pragma: no cover
    from polyprompt.medical.backbones import (
        MedicalViTAdapter,
        MonaiViTAdapter,
        block_forward,
        prepare_image,
    )
    from polyprompt.medical.checkpoints import clip_visual_to_timm, load_official_vit
    from polyprompt.medical.data import (
        ImageSet,
        Splits,
        label_fraction,
        load_aptos,
        load_br35h,
        load_colin27_patches,
        load_dataset,
        load_dicom,
        load_medmnist_npz,
        load_nifti_folder,
        stratified_split,
    )
    from polyprompt.medical.demo import run_demo
    from polyprompt.medical.dvpt import DVPT, DVPTConfig, DVPTVariant, DynamicPromptModule
    from polyprompt.medical.peft import SSF, AdaptFormer, AdaptFormerConfig, SSFConfig
    from polyprompt.medical.pretrain import pretrain_backbone
