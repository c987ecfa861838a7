"""Acoustic Prompt Tuning (APT; Liang et al. 2023, arXiv 2312.00249) as a PromptMethod.

Pipeline (paper Fig. 2 / Sec. 3)::

    clip -> log-mel (frontend) -> frozen AudioMAE-style ViT -> audio tokens (B, 1+N, Da)
         -> Q-Former(32 queries, instruction text) -> Linear -> [indicator, 32 tokens] (33, D_lm)
    LM input = [BOS, audio_1 (33), text_1, audio_2 (33), text_2, ..., response, EOS]
    loss     = causal-LM cross-entropy on the response tokens only; the LM is frozen.

Only the aligner (Q-Former, queries, projection, audio LayerNorm) and the indicator train.
Options for the baselines (:mod:`polyprompt.audio.baselines`): ``audio_free=True`` replaces
every clip's 33 tokens by one learned soft prompt (no audio reaches the LM: the text-only
LM with a trained soft prompt); ``tune_lm=True`` also trains the LM (full fine-tuning of
aligner + LM).

Example::

    >>> method = AcousticPromptTuning(backbone, APTConfig())          # doctest: +SKIP
    >>> loss = method(examples)                                       # doctest: +SKIP
    >>> method.generate(examples, max_new_tokens=8)                   # doctest: +SKIP
    ['a woman with a scottish accent says river', ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from polyprompt.audio.aligner import AlignerConfig, AudioAligner
from polyprompt.audio.lm import InterleavedLM, Piece
from polyprompt.audio.tasks import AudioTextExample, Clip
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import ConfigError, InputError
from polyprompt.core.methods.base import PromptMethod
from polyprompt.core.registry import register_method

__all__ = ["APTBackbone", "APTConfig", "AcousticPromptTuning"]


class APTBackbone(nn.Module):
    """The two frozen parts APT prompts: the audio encoder and the causal LM (+ front end).

    Args:
        encoder: an :class:`~polyprompt.audio.encoder.AudioViTAdapter`.
        lm: an :class:`~polyprompt.audio.lm.InterleavedLM` (with tokenizer).
        logmel: the :class:`~polyprompt.audio.frontend.LogMelConfig`; its ``n_mels`` and
            ``target_frames`` must match the encoder.
    """

    def __init__(self, encoder: nn.Module, lm: InterleavedLM, logmel: Any = None) -> None:
        super().__init__()
        from polyprompt.audio.frontend import LogMelConfig

        ac = encoder.audio_config
        self.logmel = logmel or LogMelConfig(n_mels=ac.n_mels, target_frames=ac.target_frames)
        if (self.logmel.n_mels, self.logmel.target_frames) != (ac.n_mels, ac.target_frames):
            raise ConfigError(
                f"APTBackbone: front end gives {self.logmel.n_mels} mels x "
                f"{self.logmel.target_frames} frames but the encoder expects {ac.n_mels} x "
                f"{ac.target_frames}"
            )
        if lm.tokenizer is None:
            raise ConfigError("APTBackbone: the InterleavedLM needs a tokenizer")
        self.encoder = encoder
        self.lm = lm

    def spectrograms(self, clips: Sequence[Clip]) -> torch.Tensor:
        """Clips -> ``(n, 1, n_mels, target_frames)`` log-mel.

        Every clip goes through :func:`~polyprompt.audio.frontend.prepare_waveform` first
        (mono, resampled with a warning, NaN/inf, silent/constant and too-short clips refused
        with an error naming the clip).
        """
        from polyprompt.audio.frontend import log_mel, prepare_waveform

        waves = []
        for i, clip in enumerate(clips):
            if not isinstance(clip, Clip):
                raise InputError(
                    f"APTBackbone.spectrograms: item {i} is {type(clip).__name__}, not a Clip"
                )
            name = clip.meta.get("name") or clip.meta.get("path") or ""
            where = f"clip {i}" + (f" ({name})" if name else "")
            waves.append(
                prepare_waveform(
                    clip.waveform,
                    clip.sample_rate,
                    where=where,
                    target_rate=self.logmel.sample_rate,
                )
            )
        return log_mel(waves, self.logmel)

    def identity(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.identity(),
            "lm": self.lm.identity(),
            "logmel": self.logmel.to_dict(),
        }


@dataclass
class APTConfig(PromptConfig):
    """APT settings: the aligner (:class:`AlignerConfig`, paper sizes by default) and options.

    ``response_prefix`` is appended after the last segment (the instruction template's answer
    cue, as LAVIS/InstructBLIP's ``"Question: {} Answer:"``; ``""`` for none): the response
    follows it. ``audio_free`` (text-only baseline) and ``tune_lm`` (full fine-tuning
    baseline) are off for APT itself. ``max_new_tokens`` bounds generation.
    """

    aligner: AlignerConfig = field(default_factory=AlignerConfig)
    response_prefix: str = "Answer:"
    audio_free: bool = False
    tune_lm: bool = False
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.aligner, dict):
            self.aligner = AlignerConfig.from_dict(self.aligner)
        super().__post_init__()
        self.require(isinstance(self.aligner, AlignerConfig), "aligner", "must be an AlignerConfig")
        self.require(isinstance(self.response_prefix, str), "response_prefix", "must be a string")
        for name in ("audio_free", "tune_lm"):
            self.require(isinstance(getattr(self, name), bool), name, "must be True or False")
        self.require(
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
            "max_new_tokens",
            "must be an int >= 1",
        )

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if not isinstance(d.get("aligner"), dict):
            d["aligner"] = self.aligner.to_dict()
        return d


@register_method("acoustic_prompt_tuning")
class AcousticPromptTuning(PromptMethod):
    """APT: frozen audio encoder + frozen causal LM; trains the aligner and indicator.

    ``forward(examples)`` returns the response-only LM loss of a batch of
    :class:`~polyprompt.audio.tasks.AudioTextExample`; ``generate(examples)`` returns
    strings. The frozen encoder's features are cached per :class:`Clip` object (the encoder
    never trains, and the front end has no augmentation), so each clip is encoded once.
    """

    config_class = APTConfig
    method_name = "acoustic_prompt_tuning"

    def __init__(self, backbone: APTBackbone, config: APTConfig | None = None) -> None:
        config = config or APTConfig()
        super().__init__(backbone, config)
        if not isinstance(backbone, APTBackbone):
            raise ConfigError(
                f"AcousticPromptTuning: backbone must be an APTBackbone, got {type(backbone).__name__}"
            )
        for p in backbone.parameters():
            p.requires_grad_(False)
        backbone.eval()
        lm = backbone.lm
        self.num_audio_tokens = config.aligner.num_audio_tokens
        if config.audio_free:
            self.aligner = None
            self.soft_prompt = nn.Parameter(torch.randn(self.num_audio_tokens, lm.embed_dim) * 0.02)
        else:
            self.aligner = AudioAligner(
                config.aligner,
                audio_dim=backbone.encoder.embed_dim,
                lm_dim=lm.embed_dim,
                vocab_size=lm.adapter.vocab_size,
                output_scale=float(
                    lm.model.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt()
                ),
            )
            self.soft_prompt = None
        if config.tune_lm:
            for p in lm.model.parameters():
                p.requires_grad_(True)
        self._feature_cache: dict[Clip, torch.Tensor] = {}

    def train(self, mode: bool = True) -> AcousticPromptTuning:
        super().train(mode)
        self.backbone.encoder.eval()
        if not self.config.tune_lm:
            self.backbone.lm.eval()
        return self

    # -- audio -------------------------------------------------------------------
    @torch.no_grad()
    def encode_clips(self, clips: Sequence[Clip]) -> torch.Tensor:
        """Clips -> frozen encoder tokens ``(n, 1 + N, Da)`` (cached per clip object)."""
        todo = [c for c in dict.fromkeys(clips) if c not in self._feature_cache]
        if todo:
            enc = self.backbone.encoder
            device = next(enc.parameters()).device
            spec = self.backbone.spectrograms(todo).to(device)
            feats = enc.audio_features(spec)
            for c, f in zip(todo, feats, strict=True):
                self._feature_cache[c] = f
        return torch.stack([self._feature_cache[c] for c in clips])

    def clear_cache(self) -> None:
        self._feature_cache.clear()

    @staticmethod
    def instruction(example: AudioTextExample) -> str:
        """The text the Q-Former reads with its queries: the example's text segments joined."""
        return " ".join(s.strip() for s in example.segments if isinstance(s, str))

    def audio_tokens(self, examples: Sequence[AudioTextExample]) -> list[torch.Tensor]:
        """Per example, the soft tokens of its clips ``(n_clips, 33, D_lm)``."""
        lm = self.backbone.lm
        clips_per = [ex.clips() for ex in examples]
        if self.aligner is None:
            return [self.soft_prompt.unsqueeze(0).expand(len(c), -1, -1) for c in clips_per]
        flat = [c for cs in clips_per for c in cs]
        feats = self.encode_clips(flat)
        device = feats.device
        instr = []
        for ex, cs in zip(examples, clips_per, strict=True):
            ids = lm.encode(self.instruction(ex))[: self.config.aligner.max_instruction_tokens]
            instr.extend([ids or [lm.pad_token_id or 0]] * len(cs))
        width = max(len(i) for i in instr)
        ids = torch.zeros(len(instr), width, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(instr):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        tokens = self.aligner(feats, ids, mask)
        out, start = [], 0
        for cs in clips_per:
            out.append(tokens[start : start + len(cs)])
            start += len(cs)
        return out

    # -- interleaved rows ----------------------------------------------------------
    def _check_examples(self, examples: Any, where: str) -> list[AudioTextExample]:
        if isinstance(examples, AudioTextExample):
            examples = [examples]
        if not isinstance(examples, (list, tuple)) or not examples:
            raise InputError(f"{where}: expected a non-empty list of AudioTextExample")
        for i, ex in enumerate(examples):
            if not isinstance(ex, AudioTextExample):
                raise InputError(
                    f"{where}: item {i} must be an AudioTextExample, got {type(ex).__name__}"
                )
        return list(examples)

    def rows(
        self, examples: Sequence[AudioTextExample], *, with_response: bool
    ) -> list[list[Piece]]:
        """``[BOS, audio_1, text_1, ..., response_prefix, (response, EOS)]`` pieces per example."""
        lm = self.backbone.lm
        audio = self.audio_tokens(examples)
        rows = []
        for ex, toks in zip(examples, audio, strict=True):
            row = [Piece.ids([lm.bos_token_id])] if lm.bos_token_id is not None else []
            k = 0
            for seg in ex.segments:
                if isinstance(seg, Clip):
                    row.append(Piece.embeds(toks[k]))
                    k += 1
                else:
                    row.append(Piece.ids(lm.encode(" " + seg.strip())))
            if self.config.response_prefix.strip():
                row.append(Piece.ids(lm.encode(" " + self.config.response_prefix.strip())))
            if with_response:
                resp = lm.encode(" " + ex.response.strip())
                if lm.eos_token_id is not None:
                    resp = [*resp, lm.eos_token_id]
                row.append(Piece.ids(resp, target=True))
            rows.append(row)
        return rows

    def forward(self, examples: Sequence[AudioTextExample]) -> torch.Tensor:
        """Response-only LM loss of a batch (scalar)."""
        examples = self._check_examples(examples, "AcousticPromptTuning.forward")
        return self.backbone.lm.loss(self.rows(examples, with_response=True))

    @torch.no_grad()
    def generate(
        self, examples: Sequence[AudioTextExample], *, max_new_tokens: int | None = None
    ) -> list[str]:
        """Greedy answers (strings) for a batch; batched left-padded == one by one."""
        examples = self._check_examples(examples, "AcousticPromptTuning.generate")
        was = self.training
        self.eval()
        try:
            lm = self.backbone.lm
            ids = lm.generate(
                self.rows(examples, with_response=False),
                max_new_tokens=max_new_tokens or self.config.max_new_tokens,
            )
        finally:
            self.train(was)
        return [lm.decode(r).strip() for r in ids]
