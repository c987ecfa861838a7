"""The baselines APT is compared with, sharing its data, backbone and trainer.

* :func:`text_only` — the same frozen LM and the same interleaved prompts, but no audio: each
  clip slot holds one learned 33-token soft prompt shared by all clips (a *trained* soft
  prompt, so the LM learns the answer format and the label prior; it cannot hear). This is
  APT with ``audio_free=True`` and the closest simpler prompt method (prompt tuning).
* :func:`full_finetune` — APT's aligner *and* the LM trained (``tune_lm=True``): the
  reference upper bound of the paper's "fine-tuned" rows; checkpoints hold the whole LM.
* :func:`linear_probe` — the core ``linear_probe`` method (linear head on the frozen audio
  encoder's pooled features) for the classification tasks, trained on cached encoder
  features (:class:`~polyprompt.core.cache.FeatureCache`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from polyprompt.audio.method import AcousticPromptTuning, APTBackbone, APTConfig

__all__ = ["full_finetune", "linear_probe", "text_only"]


def text_only(backbone: APTBackbone, config: APTConfig | None = None) -> AcousticPromptTuning:
    """Text-only LM baseline: a trained soft prompt in every audio slot, no audio."""
    cfg = dataclasses.replace(config or APTConfig(), audio_free=True, tune_lm=False)
    return AcousticPromptTuning(backbone, cfg)


def full_finetune(backbone: APTBackbone, config: APTConfig | None = None) -> AcousticPromptTuning:
    """Full fine-tuning of aligner + LM (the encoder stays frozen, as in the paper).

    Works on a deep copy of ``backbone`` so the shared frozen LM is never modified.
    """
    import copy

    backbone = copy.deepcopy(backbone)
    cfg = dataclasses.replace(config or APTConfig(), audio_free=False, tune_lm=True)
    return AcousticPromptTuning(backbone, cfg)


def linear_probe(encoder: Any, num_classes: int) -> Any:
    """Core ``linear_probe`` on the frozen :class:`~polyprompt.audio.encoder.AudioViTAdapter`."""
    from polyprompt.core.registry import create

    return create("linear_probe", encoder, num_classes=num_classes)
