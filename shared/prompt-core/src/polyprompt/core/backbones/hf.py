"""Adapter that feeds a soft prompt into a Hugging Face transformer through ``inputs_embeds``.

Works on real ``transformers`` classes (decoder-only causal LMs such as GPT-2 and
Llama, and encoders such as BERT / RoBERTa); encoder-decoder models are refused.
``transformers`` is imported only inside the functions that need it.

Where the prompt goes. The ``n`` prompt vectors are placed immediately before the
first real token (``attention_mask == 1``) of every row:

* left padding  ``[pad pad | P1..Pn | t1 t2 t3]``
* right padding ``[P1..Pn | t1 t2 t3 | pad pad]``

The prompt positions get ``attention_mask = 1`` and ``labels = -100``; padding gets
``labels = -100``; ``position_ids = cumsum(mask) - 1`` (0 on padding) so that every
row of a padded batch sees exactly the positions it would see alone. This is what
makes batched, left-padded generation with a soft prompt give the same tokens as
generating each row on its own (HF PEFT prepends the prompt *before* the padding,
so a left-padded row there reads ``[P1..Pn | pad pad | t1 ..]`` with shifted positions).

Example::

    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16,
    ...                                 n_layer=1, n_head=2)).eval()
    >>> adapter = HFTextAdapter(lm)
    >>> ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])         # (B=2, T=4), left padded
    >>> mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    >>> prompt = torch.zeros(3, 16)                               # (n=3, D)
    >>> parts = adapter.insert_prompt(ids, mask, prompt)
    >>> parts["inputs_embeds"].shape                              # (B, n + T, D)
    torch.Size([2, 7, 16])
    >>> parts["attention_mask"].tolist()
    [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]
    >>> parts["position_ids"].tolist()
    [[0, 0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6]]
    >>> adapter(ids, mask, prompt=prompt).logits.shape            # prompt positions removed
    torch.Size([2, 4, 50])
    >>> adapter.generate(ids, mask, prompt, max_new_tokens=2).shape   # new tokens only
    torch.Size([2, 2])
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from polyprompt.core.errors import ConfigError, InputError, ShapeError
from polyprompt.core.validation import check_tensor

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

__all__ = ["HFTextAdapter", "remove_prompt_positions"]

IGNORE_INDEX = -100
_KINDS = ("causal", "encoder")


def _first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the first ``1`` of every row of ``(B, T)`` ``attention_mask`` (``T`` if none)."""
    t = attention_mask.shape[1]
    real = attention_mask != 0
    pos = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(real, pos, torch.full_like(pos, t)).amin(dim=1)  # (B,)


def _source_index(attention_mask: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, T + n)`` gather index into ``cat([sequence (T), prompt (n)])`` (see module doc)."""
    b, t = attention_mask.shape
    first = _first_token_index(attention_mask).unsqueeze(1)  # (B, 1)
    k = torch.arange(t + n, device=attention_mask.device).expand(b, -1)
    return torch.where(k < first, k, torch.where(k < first + n, t + (k - first), k - n))


def remove_prompt_positions(
    values: torch.Tensor, attention_mask: torch.Tensor, num_prompt_tokens: int
) -> torch.Tensor:
    """Drop the prompt positions that :meth:`HFTextAdapter.insert_prompt` put in.

    ``values`` ``(B, T + n, ...)`` (logits, hidden states) -> ``(B, T, ...)`` aligned
    with the original ``input_ids`` / ``attention_mask`` ``(B, T)``.

    Example::

        >>> mask = torch.tensor([[0, 1, 1]])
        >>> v = torch.tensor([[10, 90, 91, 11, 12]])      # [pad, P1, P2, t1, t2]
        >>> remove_prompt_positions(v, mask, 2).tolist()
        [[10, 11, 12]]
    """
    where = "remove_prompt_positions"
    check_tensor(attention_mask, "attention_mask", rank=2, where=where)
    check_tensor(values, "values", finite=False, where=where)
    b, t = attention_mask.shape
    n = int(num_prompt_tokens)
    if values.dim() < 2 or values.shape[0] != b or values.shape[1] != t + n:
        raise ShapeError(
            f"{where}: `values` must be (B={b}, T+n={t + n}, ...), got shape {tuple(values.shape)}"
        )
    if bool(attention_mask[:, 0].all()):  # no left padding: the prompt is a prefix
        return values[:, n:]
    first = _first_token_index(attention_mask).unsqueeze(1)
    j = torch.arange(t, device=values.device).expand(b, -1)
    index = j + n * (j >= first.to(values.device))
    index = index.view(b, t, *([1] * (values.dim() - 2))).expand(b, t, *values.shape[2:])
    return values.gather(1, index)


class HFTextAdapter(nn.Module):
    """A Hugging Face ``PreTrainedModel`` driven through ``inputs_embeds`` with a soft prompt.

    Args:
        model: a ``transformers.PreTrainedModel`` — a causal LM (``GPT2LMHeadModel``,
            ``LlamaForCausalLM``, ...) or an encoder (``BertModel``, ``RobertaForMaskedLM``, ...).
        kind: ``"causal"`` or ``"encoder"``; detected when ``None`` (a model that can
            ``generate()``, has ``config.is_decoder``, or whose architecture name says
            ``CausalLM`` / ``LMHeadModel`` is causal).
        tokenizer: optional tokenizer kept alongside (not used by the adapter itself);
            methods such as ``prompt_tuning`` with ``init="text"`` read it from here, so
            ``create("prompt_tuning", HFTextAdapter(lm, tokenizer=tok), init="text", ...)`` works.

    Attributes:
        model, config, kind, tokenizer, embed_dim (``config.hidden_size``), vocab_size,
        num_layers, max_positions (``max_position_embeddings`` / ``n_positions``, or ``None``),
        is_encoder_decoder (always ``False``).

    Raises:
        ConfigError: not a ``PreTrainedModel``, or an encoder-decoder model.
    """

    is_encoder_decoder = False

    def __init__(
        self, model: PreTrainedModel, kind: str | None = None, *, tokenizer: Any = None
    ) -> None:
        super().__init__()
        from transformers import PreTrainedModel

        where = "HFTextAdapter"
        if not isinstance(model, PreTrainedModel):
            raise ConfigError(
                f"{where}: `model` must be a transformers PreTrainedModel, got {type(model).__name__}"
            )
        config = model.config
        if getattr(config, "is_encoder_decoder", False):
            raise ConfigError(
                f"{where}: encoder-decoder models ({type(model).__name__}) are not supported; "
                "use a decoder-only causal LM or an encoder"
            )
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.kind = self._detect_kind(model) if kind is None else kind
        if self.kind not in _KINDS:
            raise ConfigError(f"{where}: kind must be one of {_KINDS}, got {kind!r}")
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, nn.Embedding):
            raise ConfigError(
                f"{where}: model.get_input_embeddings() must be an nn.Embedding, "
                f"got {type(embeddings).__name__}"
            )
        self.embed_dim = int(getattr(config, "hidden_size", embeddings.embedding_dim))
        if self.embed_dim != embeddings.embedding_dim:
            raise ConfigError(
                f"{where}: config.hidden_size={self.embed_dim} but the input embeddings have "
                f"width {embeddings.embedding_dim} (projected embeddings are not supported)"
            )
        self.vocab_size = int(embeddings.num_embeddings)
        self.num_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        self.max_positions = self._context_length(config, model)
        params = inspect.signature(model.forward).parameters
        self.accepts_position_ids = "position_ids" in params
        """Whether the model's ``forward`` takes ``position_ids`` (left-padded batches need them)."""
        self._fp_key: tuple[Any, ...] | None = None
        self._fp_value: str | None = None

    @staticmethod
    def _detect_kind(model: PreTrainedModel) -> str:
        can_generate = getattr(model, "can_generate", None)
        if callable(can_generate) and can_generate():
            return "causal"
        if getattr(model.config, "is_decoder", False):
            return "causal"
        arch = " ".join(getattr(model.config, "architectures", None) or [type(model).__name__])
        if "CausalLM" in arch or "LMHeadModel" in arch:
            return "causal"
        # a base model (e.g. GPT2Model): decoder-only if its type has a causal LM but no masked LM
        try:
            from transformers.models.auto.modeling_auto import (
                MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                MODEL_FOR_MASKED_LM_MAPPING_NAMES,
            )
        except ImportError:  # pragma: no cover - layout of other transformers versions
            return "encoder"
        model_type = getattr(model.config, "model_type", "")
        if (
            model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        ):
            return "causal"
        return "encoder"

    @staticmethod
    def _context_length(config: Any, model: nn.Module) -> int | None:
        """Usable positions. RoBERTa-style position tables (an ``nn.Embedding`` named
        ``position_embeddings`` with a ``padding_idx``) start counting at ``padding_idx + 1``
        (``create_position_ids_from_input_ids`` in transformers), so RoBERTa / CodeBERT with
        ``max_position_embeddings=514`` hold 512 tokens."""
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                for module_name, module in model.named_modules():
                    if (
                        module_name.endswith("position_embeddings")
                        and isinstance(module, nn.Embedding)
                        and module.padding_idx is not None
                    ):
                        return value - module.padding_idx - 1
                return value
        return None

    @property
    def embeddings(self) -> nn.Embedding:
        """The model's word-embedding table (``model.get_input_embeddings()``)."""
        return self.model.get_input_embeddings()

    # -- inputs -----------------------------------------------------------------
    def _check_ids(self, input_ids: Any, where: str) -> torch.Tensor:
        check_tensor(input_ids, "input_ids", rank=2, where=where)
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise InputError(
                f"{where}: `input_ids` must be an integer tensor, got {input_ids.dtype}"
            )
        if input_ids.numel() and (
            int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size
        ):
            raise InputError(
                f"{where}: token ids must lie in [0, {self.vocab_size}), got min "
                f"{int(input_ids.min())} max {int(input_ids.max())}"
            )
        return input_ids

    def _check_mask(self, attention_mask: Any, input_ids: torch.Tensor, where: str) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones_like(input_ids)
        check_tensor(attention_mask, "attention_mask", rank=2, where=where)
        if attention_mask.shape != input_ids.shape:
            raise ShapeError(
                f"{where}: `attention_mask` shape {tuple(attention_mask.shape)} != `input_ids` "
                f"shape {tuple(input_ids.shape)}"
            )
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise InputError(f"{where}: `attention_mask` must hold only 0 and 1")
        return attention_mask

    def _check_prompt(self, prompt: Any, batch: int, where: str) -> torch.Tensor:
        check_tensor(prompt, "prompt", rank=(2, 3), dims={-1: self.embed_dim}, where=where)
        if not prompt.is_floating_point():
            raise InputError(f"{where}: `prompt` must be a floating tensor, got {prompt.dtype}")
        if prompt.dim() == 2:
            prompt = prompt.unsqueeze(0)
        if prompt.shape[0] not in (1, batch):
            raise ShapeError(
                f"{where}: `prompt` batch size must be 1 or {batch}, got shape {tuple(prompt.shape)}"
            )
        return prompt.expand(batch, -1, -1)

    def _check_length(self, total: int, n: int, t: int, where: str, extra: str = "") -> None:
        if self.max_positions is not None and total > self.max_positions:
            raise InputError(
                f"{where}: prompt length {n} + sequence length {t}{extra} = {total} exceeds the "
                f"model context of {self.max_positions} positions"
            )

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` -> word embeddings ``(B, T, D)`` (``get_input_embeddings()``)."""
        self._check_ids(input_ids, "HFTextAdapter.embed_tokens")
        return self.embeddings(input_ids)

    def insert_prompt(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt: torch.Tensor,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Embed ``input_ids`` and put ``prompt`` right before each row's first real token.

        Args:
            input_ids: ``(B, T)`` token ids, left or right padded.
            attention_mask: ``(B, T)`` of 0/1, or ``None`` (no padding).
            prompt: ``(n, D)`` shared by the batch, or ``(B | 1, n, D)``.
            labels: ``(B, T)`` token labels (extended with ``-100``; padding set to
                ``-100``) or any other shape (e.g. ``(B,)`` class labels, passed through).
            token_type_ids: optional ``(B, T)``; the prompt gets type 0.

        Returns:
            ``{"inputs_embeds": (B, T + n, D), "attention_mask": (B, T + n),
            "labels": (B, T + n) | passed through | None, "position_ids": (B, T + n)}``
            (plus ``"token_type_ids"`` when given).

        Raises:
            ShapeError / InputError / NonFiniteError on bad inputs; InputError when
            ``n + T`` exceeds the model context.
        """
        where = "HFTextAdapter.insert_prompt"
        self._check_ids(input_ids, where)
        mask = self._check_mask(attention_mask, input_ids, where)
        b, t = input_ids.shape
        prompt = self._check_prompt(prompt, b, where)
        n = prompt.shape[1]
        self._check_length(t + n, n, t, where)
        embeds = self.embeddings(input_ids)
        prompt = prompt.to(device=embeds.device, dtype=embeds.dtype)
        plain_prefix = bool(mask[:, 0].all())
        if plain_prefix:
            # No row starts with padding: the prompt is a plain prefix (the layout the
            # gather below builds too), so concatenate without an index.
            index = torch.cat(
                [torch.arange(t, t + n, device=mask.device), torch.arange(t, device=mask.device)]
            ).expand(b, -1)
            inputs_embeds = torch.cat([prompt.expand(b, -1, -1), embeds], dim=1)
            new_mask = torch.cat([mask.new_ones(b, n), mask], dim=1)
        else:
            index = _source_index(mask, n)  # (B, T + n)
            source = torch.cat([embeds, prompt.expand(b, -1, -1)], dim=1)
            inputs_embeds = source.gather(1, index.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
            new_mask = torch.cat([mask, mask.new_ones(b, n)], dim=1).gather(1, index)
        position_ids = (new_mask.long().cumsum(-1) - 1).masked_fill(new_mask == 0, 0)
        out: dict[str, torch.Tensor | None] = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": new_mask,
            "labels": labels,
            "position_ids": position_ids,
        }
        if labels is not None:
            check_tensor(labels, "labels", where=where)
            if labels.shape == input_ids.shape:
                fill = labels.new_full((b, n), IGNORE_INDEX)
                if plain_prefix:
                    new_labels = torch.cat([fill, labels], dim=1)
                else:
                    new_labels = torch.cat([labels, fill], dim=1).gather(1, index.to(labels.device))
                out["labels"] = new_labels.masked_fill(
                    new_mask.to(labels.device) == 0, IGNORE_INDEX
                )
        if token_type_ids is not None:
            check_tensor(token_type_ids, "token_type_ids", rank=2, dims={0: b, 1: t}, where=where)
            zeros = token_type_ids.new_zeros(b, n)
            out["token_type_ids"] = torch.cat([token_type_ids, zeros], dim=1).gather(1, index)
        return out

    # -- forward / generate -----------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        keep_prompt_positions: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run the model with ``prompt`` inserted (see :meth:`insert_prompt`).

        Returns the model's output (``loss`` computed by the model on the prompted
        sequence when ``labels`` are given). Per-token ``logits`` ``(B, T + n, V)`` are
        realigned to ``(B, T, V)`` — the prompt positions removed, so ``logits[:, j]``
        belongs to ``input_ids[:, j]`` — unless ``keep_prompt_positions=True``.
        ``hidden_states`` / ``last_hidden_state`` / ``attentions`` keep all ``T + n``
        positions (use :func:`remove_prompt_positions`). Note: a causal LM's logit at the
        last prompt position, which predicts the first token, is in the loss but is
        dropped from the realigned logits.

        ``position_ids`` are passed for causal models (so padded rows match unpadded
        ones); encoders keep their own position scheme (e.g. RoBERTa's offset).
        """
        where = "HFTextAdapter.forward"
        for key in ("inputs_embeds", "position_ids"):
            if key in kwargs and prompt is not None:
                raise InputError(f"{where}: `{key}` is built from the prompt; do not pass it")
        if prompt is None:
            self._check_ids(input_ids, where)
            mask = self._check_mask(attention_mask, input_ids, where)
            self._check_length(input_ids.shape[1], 0, input_ids.shape[1], where)
            if labels is not None:
                kwargs["labels"] = labels
            return self.model(input_ids=input_ids, attention_mask=mask, **kwargs)
        parts = self.insert_prompt(
            input_ids, attention_mask, prompt, labels, kwargs.pop("token_type_ids", None)
        )
        if self.kind != "causal" or not self.accepts_position_ids:
            parts.pop("position_ids")
        if parts["labels"] is None:
            parts.pop("labels")
        output = self.model(**parts, **kwargs)
        logits = getattr(output, "logits", None)
        n = parts["inputs_embeds"].shape[1] - input_ids.shape[1]
        if (
            not keep_prompt_positions
            and isinstance(logits, torch.Tensor)
            and logits.dim() >= 3
            and logits.shape[1] == input_ids.shape[1] + n
        ):
            mask = self._check_mask(attention_mask, input_ids, where)
            output["logits"] = remove_prompt_positions(logits, mask.to(logits.device), n)
        return output

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> Any:
        """Generate with a soft prompt; returns the NEW token ids only, ``(B, new)``.

        Batches must be LEFT padded (``tokenizer.padding_side = "left"``): every row
        then reads ``[pad.., P1..Pn, tokens..]`` and ends at the same column, which is
        where generation continues. ``model.generate(inputs_embeds=..., attention_mask=...,
        position_ids=...)`` is called with ``position_ids = cumsum(mask) - 1`` (HF extends
        them by one per step), so each row generates exactly what it would alone.

        ``generate_kwargs`` go to ``model.generate`` (``max_new_tokens``, ``do_sample``, ...);
        ``pad_token_id`` defaults to the config's pad or EOS id. With
        ``return_dict_in_generate=True`` HF's output object is returned (its
        ``sequences`` hold the new tokens only).

        Raises:
            ConfigError: the model is an encoder. InputError: a right-padded row, or
            ``n + T + max_new_tokens`` beyond the model context.
        """
        where = "HFTextAdapter.generate"
        if self.kind != "causal":
            raise ConfigError(f"{where}: a {self.kind} model cannot generate; use a causal LM")
        for key in ("inputs_embeds", "input_ids", "position_ids"):
            if key in generate_kwargs:
                raise InputError(f"{where}: `{key}` is built by the adapter; do not pass it")
        self._check_ids(input_ids, where)
        mask = self._check_mask(attention_mask, input_ids, where)
        b, t = input_ids.shape
        if t > 1:
            right_padded = (mask[:, 1:] < mask[:, :-1]).any(dim=1)
            if bool(right_padded.any()):
                rows = right_padded.nonzero().flatten().tolist()
                raise InputError(
                    f"{where}: rows {rows[:8]} have padding after a real token; batched "
                    "generation needs LEFT padding (tokenizer.padding_side = 'left'), so that "
                    "every row ends at the last column"
                )
        if prompt is None:
            prompt = self.embeddings.weight.new_zeros(b, 0, self.embed_dim)
        parts = self.insert_prompt(input_ids, mask, prompt)
        n = parts["inputs_embeds"].shape[1] - t
        gen_config = getattr(self.model, "generation_config", None)
        max_new = generate_kwargs.get("max_new_tokens", getattr(gen_config, "max_new_tokens", None))
        if isinstance(max_new, int):
            self._check_length(t + n + max_new, n, t, where, f" + max_new_tokens {max_new}")
        if generate_kwargs.get("pad_token_id") is None:
            pad = getattr(gen_config, "pad_token_id", None)
            if pad is None:
                pad = getattr(self.config, "pad_token_id", None)
            if pad is None:
                eos = getattr(gen_config, "eos_token_id", None) or getattr(
                    self.config, "eos_token_id", None
                )
                pad = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
            if pad is not None:
                generate_kwargs["pad_token_id"] = pad
        kwargs: dict[str, Any] = {
            "inputs_embeds": parts["inputs_embeds"],
            "attention_mask": parts["attention_mask"],
        }
        if self.accepts_position_ids:
            kwargs["position_ids"] = parts["position_ids"]
        return self.model.generate(**kwargs, **generate_kwargs)

    # -- identity ------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """JSON-able description stored with prompt checkpoints.

        ``fingerprint`` (short sha256 over the weights, as
        :func:`polyprompt.core.freezing.module_identity`) is computed once and
        recomputed only when a parameter or buffer was modified in place.
        """
        from polyprompt.core.freezing import module_identity

        tensors = list(self.model.parameters()) + list(self.model.buffers())
        key = tuple((id(x), x._version, x.data_ptr()) for x in tensors)
        if key != self._fp_key:
            self._fp_value = module_identity(self.model)["fingerprint"]
            self._fp_key = key
        return {
            "library": "transformers",
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "model_type": getattr(self.config, "model_type", ""),
            "kind": self.kind,
            "hidden_size": self.embed_dim,
            "num_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "fingerprint": self._fp_value,
        }
