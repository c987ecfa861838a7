"""APT's audio aligner: an InstructBLIP Q-Former (``transformers``) -> linear -> + indicator.

Liang et al. 2023, Sec. 3.1 ("audio aligner"): ``num_query_tokens`` (32) learnable queries
cross-attend to the frozen audio encoder's tokens inside a Q-Former; as in InstructBLIP
(Dai et al. 2023) the instruction text is fed into the Q-Former together with the queries
(queries and instruction share self-attention; only queries cross-attend to audio). The
query outputs are projected by one linear layer to the LM's hidden size and one learnable
audio-indicator embedding is put in front, giving ``num_query_tokens + 1`` = 33 soft tokens
per clip. The Q-Former is ``transformers.InstructBlipQFormerModel`` (the real class, built
from an ``InstructBlipQFormerConfig``); a LayerNorm on the audio features plays the role
of InstructBLIP's ``ln_vision``.

Example::

    >>> import torch
    >>> aligner = AudioAligner(AlignerConfig(qformer_hidden_size=32, qformer_layers=1,
    ...     qformer_heads=2, qformer_intermediate_size=64), audio_dim=24, lm_dim=16, vocab_size=50)
    >>> feats = torch.randn(3, 9, 24)                   # (clips, audio tokens, audio dim)
    >>> ids = torch.randint(0, 50, (3, 5)); mask = torch.ones(3, 5, dtype=torch.long)
    >>> tuple(aligner(feats, ids, mask).shape)          # 32 queries + 1 indicator
    (3, 33, 16)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from polyprompt.core.config import PromptConfig
from polyprompt.core.validation import check_tensor

__all__ = ["AlignerConfig", "AudioAligner"]


@dataclass
class AlignerConfig(PromptConfig):
    """Q-Former aligner sizes. Paper: BERT-base Q-Former (768 wide, 12 layers, 12 heads,
    cross-attention every 2nd layer as BLIP-2), 32 queries, instruction in the Q-Former,
    one indicator token.

    ``output_norm`` (not in the paper, off by default): a LayerNorm (no affine) on the
    projected tokens times a learnable scalar gain initialised to the LM's word-embedding RMS
    (``output_scale``, passed by the method), so the soft tokens start in the range of the
    LM's own input embeddings instead of the raw ``Linear`` output's (~9x larger with the
    example's tiny LM)."""

    num_query_tokens: int = 32
    qformer_hidden_size: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    max_instruction_tokens: int = 64
    use_instruction: bool = True
    use_indicator: bool = True
    dropout: float = 0.1
    output_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        self.require_ints(
            "num_query_tokens",
            "qformer_hidden_size",
            "qformer_layers",
            "qformer_heads",
            "qformer_intermediate_size",
            "cross_attention_frequency",
            "max_instruction_tokens",
        )
        r(
            self.qformer_hidden_size % self.qformer_heads == 0,
            "qformer_hidden_size",
            "must be divisible by qformer_heads",
        )
        r(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        for name in ("use_instruction", "use_indicator", "output_norm"):
            r(isinstance(getattr(self, name), bool), name, "must be True or False")

    @property
    def num_audio_tokens(self) -> int:
        """Soft tokens per clip in the LM input (33 in the paper)."""
        return self.num_query_tokens + int(self.use_indicator)


class AudioAligner(nn.Module):
    """Audio tokens ``(B, N, audio_dim)`` (+ instruction ids) -> LM soft tokens ``(B, 33, lm_dim)``.

    Every parameter here trains in APT (Q-Former incl. its word embeddings, queries, audio
    LayerNorm, projection, indicator); the encoder and the LM stay frozen.
    """

    def __init__(
        self,
        config: AlignerConfig,
        *,
        audio_dim: int,
        lm_dim: int,
        vocab_size: int,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

        c = config
        self.config = c
        self.audio_dim, self.lm_dim = int(audio_dim), int(lm_dim)
        qcfg = InstructBlipQFormerConfig(
            vocab_size=int(vocab_size),
            hidden_size=c.qformer_hidden_size,
            num_hidden_layers=c.qformer_layers,
            num_attention_heads=c.qformer_heads,
            intermediate_size=c.qformer_intermediate_size,
            hidden_dropout_prob=c.dropout,
            attention_probs_dropout_prob=c.dropout,
            max_position_embeddings=max(512, c.max_instruction_tokens),
            cross_attention_frequency=c.cross_attention_frequency,
            encoder_hidden_size=self.audio_dim,
            pad_token_id=0,
        )
        self.ln_audio = nn.LayerNorm(self.audio_dim)
        self.qformer = InstructBlipQFormerModel(qcfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, c.num_query_tokens, c.qformer_hidden_size))
        nn.init.normal_(self.query_tokens, std=0.02)  # InstructBLIP's initializer_range
        self.proj = nn.Linear(c.qformer_hidden_size, self.lm_dim)
        self.indicator = (
            nn.Parameter(torch.randn(1, 1, self.lm_dim) * 0.02) if c.use_indicator else None
        )
        self.out_gain = nn.Parameter(torch.tensor(float(output_scale))) if c.output_norm else None

    def forward(
        self,
        audio: torch.Tensor,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        where = "AudioAligner"
        check_tensor(audio, "audio", rank=3, dims={-1: self.audio_dim}, where=where)
        b = audio.shape[0]
        queries = self.query_tokens.expand(b, -1, -1)
        audio = self.ln_audio(audio)
        enc_mask = torch.ones(audio.shape[:2], dtype=torch.long, device=audio.device)
        q_mask = torch.ones(queries.shape[:2], dtype=torch.long, device=audio.device)
        if self.config.use_instruction and instruction_ids is not None:
            check_tensor(instruction_ids, "instruction_ids", rank=2, dims={0: b}, where=where)
            ids = instruction_ids[:, : self.config.max_instruction_tokens]
            mask = (
                torch.ones_like(ids)
                if instruction_mask is None
                else instruction_mask[:, : self.config.max_instruction_tokens]
            )
            out = self.qformer(
                input_ids=ids,
                attention_mask=torch.cat([q_mask, mask.to(q_mask.dtype)], dim=1),
                query_embeds=queries,
                encoder_hidden_states=audio,
                encoder_attention_mask=enc_mask,
            )
        else:
            out = self.qformer(
                input_ids=None,
                attention_mask=q_mask,
                query_embeds=queries,
                encoder_hidden_states=audio,
                encoder_attention_mask=enc_mask,
            )
        tokens = self.proj(out.last_hidden_state[:, : queries.shape[1]])
        if self.out_gain is not None:
            tokens = nn.functional.layer_norm(tokens, tokens.shape[-1:]) * self.out_gain
        if self.indicator is not None:
            tokens = torch.cat([self.indicator.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens
