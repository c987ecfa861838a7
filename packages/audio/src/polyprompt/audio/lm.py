"""Frozen causal LM with interleaved audio tokens: assembly, masks, padding, loss, generate.

APT (Liang et al. 2023, Sec. 3.2) feeds the frozen LM one interleaved sequence per
example::

    [BOS, audio_1 (33 soft tokens), text_1, audio_2 (33), text_2, ..., response, EOS]

This module builds that sequence from *pieces* — token ids (text) or embedding blocks
(audio tokens) — for a whole batch, through the core
:class:`~polyprompt.core.backbones.hf.HFTextAdapter` (any ``transformers`` causal LM:
GPT-2, Llama, Qwen, ... selected by name or path with :func:`load_causal_lm`):

* rows are LEFT padded, ``attention_mask`` is 0 on padding, ``position_ids =
  cumsum(mask) - 1`` (0 on padding), so a padded row sees exactly the positions it sees
  alone — batched left-padded ``generate()`` then equals per-row generation (the same
  scheme as the core's soft-prompt adapter);
* ``labels`` are ``-100`` everywhere except on response tokens (loss on the response only);
* sequences longer than the LM's position table are refused with :class:`InputError`.

Example::

    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> lm = InterleavedLM(GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=32, n_embd=16,
    ...                    n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2)))
    >>> rows = [[Piece.ids([1]), Piece.embeds(torch.zeros(3, 16)), Piece.ids([5, 6]),
    ...          Piece.ids([7, 2], target=True)],
    ...         [Piece.ids([1]), Piece.embeds(torch.zeros(3, 16)), Piece.ids([9])]]
    >>> batch = lm.assemble(rows)
    >>> batch["inputs_embeds"].shape, batch["attention_mask"][1].tolist()
    (torch.Size([2, 8, 16]), [0, 0, 0, 1, 1, 1, 1, 1])
    >>> batch["labels"][0].tolist()
    [-100, -100, -100, -100, -100, -100, 7, 2]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polyprompt.core.errors import ConfigError, InputError, ShapeError

__all__ = ["IGNORE_INDEX", "InterleavedLM", "Piece", "load_causal_lm"]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Piece:
    """One piece of an interleaved row: token ids (``kind='ids'``) or embeddings (``'embeds'``).

    ``target=True`` marks response tokens: they get labels (loss); all else ``-100``.
    """

    kind: str
    value: Any
    target: bool = False

    @classmethod
    def ids(cls, ids: Sequence[int] | torch.Tensor, *, target: bool = False) -> Piece:
        t = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        return cls("ids", t, target)

    @classmethod
    def embeds(cls, x: torch.Tensor) -> Piece:
        return cls("embeds", x, False)

    def __len__(self) -> int:
        return int(self.value.shape[0])


def load_causal_lm(name_or_path: str, **kwargs: Any) -> tuple[nn.Module, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a hub name or a local folder.

    Local files only unless ``local_files_only=False`` is passed (nothing downloads at run
    time). Any causal LM family works (GPT-2, Llama, Qwen, ...).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs.setdefault("local_files_only", True)
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"load_causal_lm: cannot load {name_or_path!r} (local files only): {exc}"
        ) from exc
    return model, tokenizer


class InterleavedLM(nn.Module):
    """A frozen ``transformers`` causal LM fed interleaved text ids and audio embeddings.

    Args:
        model: a causal LM ``PreTrainedModel`` (wrapped in the core ``HFTextAdapter``).
        tokenizer: its tokenizer (``encode(text, add_special_tokens=False)``); optional for
            callers that pass ids.

    Attributes: ``adapter`` (core HFTextAdapter), ``embed_dim``, ``max_positions``,
    ``bos_token_id``, ``eos_token_id``, ``pad_token_id``.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        from polyprompt.core.backbones.hf import HFTextAdapter

        self.adapter = HFTextAdapter(model, tokenizer=tokenizer)
        if self.adapter.kind != "causal":
            raise ConfigError(
                f"InterleavedLM: {type(model).__name__} is not a causal LM (APT needs one to generate)"
            )
        self.tokenizer = tokenizer
        cfg = model.config
        gen = getattr(model, "generation_config", None)

        def first(*values: Any) -> int | None:
            for v in values:
                if isinstance(v, (list, tuple)):
                    v = v[0] if v else None
                if isinstance(v, int):
                    return v
            return None

        tok = tokenizer
        self.bos_token_id = first(
            getattr(tok, "bos_token_id", None), getattr(cfg, "bos_token_id", None)
        )
        self.eos_token_id = first(
            getattr(tok, "eos_token_id", None),
            getattr(gen, "eos_token_id", None),
            getattr(cfg, "eos_token_id", None),
        )
        self.pad_token_id = first(
            getattr(tok, "pad_token_id", None),
            getattr(cfg, "pad_token_id", None),
            self.eos_token_id,
        )

    @property
    def model(self) -> nn.Module:
        return self.adapter.model

    @property
    def embed_dim(self) -> int:
        return self.adapter.embed_dim

    @property
    def max_positions(self) -> int | None:
        return self.adapter.max_positions

    def identity(self) -> dict[str, Any]:
        return self.adapter.identity()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        if self.tokenizer is None:
            raise ConfigError("InterleavedLM.encode: no tokenizer was given")
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        if self.tokenizer is None:
            raise ConfigError("InterleavedLM.decode: no tokenizer was given")
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- assembly -------------------------------------------------------------------
    def assemble(
        self, rows: Sequence[Sequence[Piece]], *, extra_positions: int = 0
    ) -> dict[str, torch.Tensor]:
        """Rows of pieces -> left-padded ``inputs_embeds (B, L, D)``, ``attention_mask``,
        ``position_ids`` and ``labels`` (``-100`` except on ``target`` pieces).

        Raises:
            InputError: an empty row, ids outside the vocabulary, or a row (plus
                ``extra_positions`` generated tokens) longer than the LM's position table.
            ShapeError: an embedding piece that is not ``(n, embed_dim)``.
        """
        where = "InterleavedLM.assemble"
        if not rows:
            raise InputError(f"{where}: empty batch")
        emb_layer = self.model.get_input_embeddings()
        device, dtype = emb_layer.weight.device, emb_layer.weight.dtype
        seqs, labs = [], []
        for r, row in enumerate(rows):
            parts, lab = [], []
            for p, piece in enumerate(row):
                if piece.kind == "ids":
                    ids = piece.value.to(device)
                    if ids.numel() == 0:
                        continue
                    if int(ids.min()) < 0 or int(ids.max()) >= self.adapter.vocab_size:
                        raise InputError(
                            f"{where}: row {r} piece {p}: token ids must lie in "
                            f"[0, {self.adapter.vocab_size})"
                        )
                    parts.append(emb_layer(ids))
                    lab.append(ids if piece.target else torch.full_like(ids, IGNORE_INDEX))
                elif piece.kind == "embeds":
                    x = piece.value
                    if (
                        not isinstance(x, torch.Tensor)
                        or x.dim() != 2
                        or x.shape[1] != self.embed_dim
                    ):
                        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                        raise ShapeError(
                            f"{where}: row {r} piece {p}: audio tokens must be (n, {self.embed_dim}), "
                            f"got {shape}"
                        )
                    parts.append(x.to(device=device, dtype=dtype))
                    lab.append(
                        torch.full((x.shape[0],), IGNORE_INDEX, dtype=torch.long, device=device)
                    )
                else:
                    raise InputError(f"{where}: row {r} piece {p}: unknown kind {piece.kind!r}")
            if not parts:
                raise InputError(f"{where}: row {r} is empty")
            seqs.append(torch.cat(parts))
            labs.append(torch.cat(lab))
        lengths = [s.shape[0] for s in seqs]
        limit = self.max_positions
        if limit is not None:
            for r, n in enumerate(lengths):
                if n + extra_positions > limit:
                    extra = f" + {extra_positions} new tokens" if extra_positions else ""
                    raise InputError(
                        f"{where}: row {r} has {n} tokens (text + 33 audio tokens per clip){extra}, "
                        f"more than the LM's {limit} positions; use fewer/shorter segments or an "
                        "LM with a longer context"
                    )
        length = max(lengths)
        b = len(seqs)
        embeds = seqs[0].new_zeros(b, length, self.embed_dim)
        mask = torch.zeros(b, length, dtype=torch.long, device=device)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long, device=device)
        for r, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
            n = s.shape[0]
            embeds[r, length - n :] = s
            mask[r, length - n :] = 1
            labels[r, length - n :] = lab
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        return {
            "inputs_embeds": embeds,
            "attention_mask": mask,
            "position_ids": position_ids,
            "labels": labels,
        }

    def _model_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"inputs_embeds": batch["inputs_embeds"], "attention_mask": batch["attention_mask"]}
        if self.adapter.accepts_position_ids:
            out["position_ids"] = batch["position_ids"]
        return out

    def loss(self, rows: Sequence[Sequence[Piece]]) -> torch.Tensor:
        """Mean cross-entropy over the response (``target``) tokens of the batch."""
        batch = self.assemble(rows)
        if not bool((batch["labels"] != IGNORE_INDEX).any()):
            raise InputError("InterleavedLM.loss: no response tokens in the batch")
        out = self.model(**self._model_kwargs(batch), labels=batch["labels"])
        return out.loss

    @torch.no_grad()
    def generate(
        self, rows: Sequence[Sequence[Piece]], *, max_new_tokens: int = 16, **kwargs: Any
    ) -> list[list[int]]:
        """Greedy (by default) generation after each row; returns new token ids per row,
        cut at the first EOS. Rows are left padded (see module docstring)."""
        batch = self.assemble(rows, extra_positions=max_new_tokens)
        kwargs.setdefault("do_sample", False)
        if self.pad_token_id is not None:
            kwargs.setdefault("pad_token_id", self.pad_token_id)
        if self.eos_token_id is not None:
            kwargs.setdefault("eos_token_id", self.eos_token_id)
        out = self.model.generate(
            **self._model_kwargs(batch), max_new_tokens=max_new_tokens, **kwargs
        )
        result = []
        for row in out.tolist():
            if self.eos_token_id is not None and self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            result.append(row)
        return result
