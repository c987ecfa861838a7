"""The frozen backbone: a ``transformers`` RoBERTa masked LM (CodeBERT's architecture).

Zecoler runs on CodeBERT (``microsoft/codebert-base``, a 12-layer RoBERTa) through its
masked-LM head. :func:`load_codebert` reads a folder in the official Hugging Face layout:

* ``config.json`` — a ``RobertaConfig`` (``model_type: roberta``);
* ``model.safetensors`` or ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``)
  with the ``RobertaForMaskedLM`` keys ``roberta.embeddings.*``, ``roberta.encoder.layer.N.*``,
  ``lm_head.dense.*``, ``lm_head.layer_norm.*``, ``lm_head.bias`` (``lm_head.decoder.weight``
  is tied to the word embeddings). A bare ``RobertaModel`` layout (``embeddings.*``,
  ``encoder.*``, ``pooler.*`` — how ``microsoft/codebert-base`` itself is published) is
  accepted too: the keys get the ``roberta.`` prefix and the pooler is dropped; such a
  checkpoint has no MLM head, so it is refused unless ``allow_missing_lm_head=True``
  (the head is then freshly initialised — Zecoler needs a trained head);
* ``vocab.json`` + ``merges.txt`` — the byte-level BPE tokenizer (``RobertaTokenizerFast``).

The in-situ pre-trained backbone (:mod:`polyprompt.code.pretrain`) is cached in exactly this
layout, so every cached run goes through the same loader.

Example::

    >>> from polyprompt.code.backbone import CodeMLMConfig
    >>> cfg = CodeMLMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    >>> model = cfg.build(vocab_size=100)
    >>> type(model).__name__, model.config.max_position_embeddings
    ('RobertaForMaskedLM', 130)
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyprompt.core.checkpoint import check_state_dict
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase, RobertaForMaskedLM

    from polyprompt.core.backbones.hf import HFTextAdapter

__all__ = [
    "CodeBackbone",
    "CodeMLMConfig",
    "load_codebert",
    "mlm_head",
    "save_codebert",
    "special_ids",
]

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def mlm_head(model: Any) -> Any:
    """The masked-LM head of a ``transformers`` masked LM, or ``None``.

    RoBERTa / CodeBERT (``RobertaForMaskedLM``) call it ``lm_head``; BERT / MiniLM
    (``BertForMaskedLM``) call it ``cls`` (``BertOnlyMLMHead``). Both map the encoder's
    hidden states ``(..., D)`` to vocabulary logits ``(..., V)``.
    """
    head = getattr(model, "lm_head", None)
    if head is None:
        head = getattr(model, "cls", None)
    return head if callable(head) else None


def special_ids(tokenizer: Any) -> tuple[int | None, int | None]:
    """``(start, end)`` ids of a sequence: RoBERTa's ``<s>`` / ``</s>`` (bos / eos) or BERT's
    ``[CLS]`` / ``[SEP]`` (a BERT tokenizer has no bos / eos)."""
    start = getattr(tokenizer, "bos_token_id", None)
    end = getattr(tokenizer, "eos_token_id", None)
    if start is None:
        start = getattr(tokenizer, "cls_token_id", None)
    if end is None:
        end = getattr(tokenizer, "sep_token_id", None)
    return start, end


@dataclass
class CodeMLMConfig(PromptConfig):
    """Architecture of the small in-situ RoBERTa MLM (CodeBERT's layout, scaled down).

    Defaults (~0.9 M parameters with a 4k vocabulary) pre-train on 2 CPU cores in a few
    minutes; dropout is off (a briefly trained small model underfits, and CPU dropout
    masks cost more than the matmuls). ``max_length`` is the token context; RoBERTa reserves two more positions
    (``max_position_embeddings = max_length + 2``, padding offset).
    """

    vocab_size: int = 4000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    max_length: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_ints(
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_length",
        )
        self.require(self.hidden_size % self.num_heads == 0, "num_heads", "must divide hidden_size")
        self.require(self.max_length >= 32, "max_length", "must be >= 32")
        self.require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")

    def roberta_config(self, vocab_size: int | None = None) -> Any:
        from transformers import RobertaConfig

        return RobertaConfig(
            vocab_size=vocab_size or self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_length + 2,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            tie_word_embeddings=True,
        )

    def build(self, vocab_size: int | None = None) -> RobertaForMaskedLM:
        """A freshly initialised ``transformers.RobertaForMaskedLM``."""
        from transformers import RobertaForMaskedLM

        return RobertaForMaskedLM(self.roberta_config(vocab_size))


@dataclass
class CodeBackbone:
    """A masked LM and its tokenizer.

    Attributes:
        model: ``RobertaForMaskedLM`` (CodeBERT layout, in-situ mini-CodeBERT) or
            ``BertForMaskedLM`` (MiniLM, :mod:`polyprompt.code.minilm`), eval mode.
            Shared: :meth:`adapter` copies it.
        tokenizer: ``RobertaTokenizerFast`` / ``BertTokenizerFast``.
        path: folder it was loaded from (``None`` if built in memory).
        info: free-form facts (pre-training loss, steps, cache key ...).
        context: template length the methods use by default (``None``: the model's whole
            context); :func:`polyprompt.code.train.build_method` passes it as ``max_length``.
    """

    model: RobertaForMaskedLM
    tokenizer: PreTrainedTokenizerBase
    path: Path | None = None
    info: dict[str, Any] | None = None
    context: int | None = None

    @property
    def max_length(self) -> int:
        """Token context (``max_position_embeddings - 2`` for RoBERTa's padding offset,
        ``max_position_embeddings`` for BERT; the rule of ``HFTextAdapter``)."""
        from polyprompt.core.backbones.hf import HFTextAdapter

        ctx = HFTextAdapter._context_length(self.model.config, self.model)
        return int(ctx if ctx is not None else 512)

    @property
    def kind(self) -> str:
        """``model_type`` of the config (``roberta`` / ``bert``)."""
        return str(self.model.config.model_type)

    def adapter(self, copy_weights: bool = True) -> HFTextAdapter:
        """An :class:`~polyprompt.core.backbones.hf.HFTextAdapter` over (a copy of) the MLM."""
        from polyprompt.core.backbones.hf import HFTextAdapter

        model = copy.deepcopy(self.model) if copy_weights else self.model
        return HFTextAdapter(model.eval(), "encoder", tokenizer=self.tokenizer)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def read_hf_config(directory: Path, model_type: str, name: str) -> dict[str, Any]:
    """``directory/config.json`` of a Hugging Face checkpoint, checked to be ``model_type``.

    Raises:
        CheckpointError: no config.json, not JSON, or another model type (names ``name``).
    """
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: no config.json (official {name} layout)")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not JSON ({exc.msg})") from None
    if raw.get("model_type") != model_type:
        raise CheckpointError(
            f"{cfg_path}: model_type {raw.get('model_type')!r}; {name} is a {model_type!r} model"
        )
    return raw


def _read_state(directory: Path) -> dict[str, torch.Tensor]:
    st = directory / "model.safetensors"
    pt = directory / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as exc:  # safetensors raises its own types
            raise CheckpointError(f"{st}: unreadable safetensors file ({exc})") from None
    if pt.is_file():
        from polyprompt.core.checkpoint import load_torch_state

        state = load_torch_state(pt)
        if not isinstance(state, dict):
            raise CheckpointError(f"{pt}: expected a state dict, got {type(state).__name__}")
        return state
    raise CheckpointError(
        f"{directory}: no model.safetensors or pytorch_model.bin (official CodeBERT layout)"
    )


def masked_lm_keys(
    state: dict[str, torch.Tensor], directory: Path, base: str, head: str, family: str
) -> tuple[dict[str, torch.Tensor], bool]:
    """Map a ``<family>Model`` / ``<family>ForMaskedLM`` state dict to ``ForMaskedLM`` keys.

    ``base`` is the encoder prefix (``roberta`` / ``bert``), ``head`` the MLM-head prefix
    (``lm_head.`` / ``cls.predictions.``). Returns the mapped state and whether it has a head.
    Raises :class:`CheckpointError` naming the first key of another layout.
    """
    out: dict[str, torch.Tensor] = {}
    has_head = False
    for key, value in state.items():
        if key.startswith(("pooler.", f"{base}.pooler.")) or key.endswith(
            "embeddings.position_ids"
        ):
            continue  # ForMaskedLM has no pooler; position_ids is a non-persistent buffer
        if key.startswith(("embeddings.", "encoder.")):
            key = f"{base}." + key
        has_head = has_head or key.startswith(head)
        if not key.startswith((f"{base}.", head)):
            raise CheckpointError(
                f"{directory}: unexpected key {key!r}: not a {family}Model / {family}ForMaskedLM "
                f"checkpoint (keys must start with {base}., embeddings., encoder. or {head})"
            )
        out[key] = value
    return out, has_head


def load_codebert(
    directory: str | Path, *, allow_missing_lm_head: bool = False, load_tokenizer: bool = True
) -> CodeBackbone:
    """Load a CodeBERT-layout folder (see module doc) into a ``RobertaForMaskedLM``.

    Raises:
        CheckpointError: missing files, not a RoBERTa config, unknown / missing keys,
        shape mismatches (the message names the keys), no MLM head (unless allowed).
    """
    from transformers import RobertaConfig, RobertaForMaskedLM

    directory = Path(directory)
    config = RobertaConfig.from_dict(read_hf_config(directory, "roberta", "CodeBERT"))
    state, has_head = masked_lm_keys(
        _read_state(directory), directory, "roberta", "lm_head.", "Roberta"
    )
    if not has_head and not allow_missing_lm_head:
        raise CheckpointError(
            f"{directory}: checkpoint has no masked-LM head (lm_head.*); Zecoler scores the "
            "verbalizer with it. Pass allow_missing_lm_head=True to initialise a fresh head"
        )
    model = RobertaForMaskedLM(config)
    expected = model.state_dict()
    if (
        "lm_head.decoder.weight" not in state
        and "roberta.embeddings.word_embeddings.weight" in state
    ):
        state["lm_head.decoder.weight"] = state["roberta.embeddings.word_embeddings.weight"]
    if "lm_head.decoder.bias" in expected and "lm_head.bias" in state:
        state.setdefault("lm_head.decoder.bias", state["lm_head.bias"])
    check_state_dict(
        state,
        expected,
        str(directory),
        may_miss=lambda k: not has_head and k.startswith("lm_head."),
    )
    model.load_state_dict(state, strict=False)
    if not has_head:
        warnings.warn(
            f"{directory}: no lm_head in the checkpoint; the MLM head is randomly initialised",
            stacklevel=2,
        )
    tokenizer = None
    if load_tokenizer:
        tokenizer = load_tokenizer_files(directory, config.max_position_embeddings - 2)
        if len(tokenizer) > config.vocab_size:
            raise CheckpointError(
                f"{directory}: tokenizer has {len(tokenizer)} tokens but the model only "
                f"{config.vocab_size} embeddings"
            )
    return CodeBackbone(model.eval(), tokenizer, directory, {"has_lm_head": has_head})


def load_tokenizer_files(directory: str | Path, max_length: int = 512) -> Any:
    """``RobertaTokenizerFast`` from ``vocab.json`` + ``merges.txt`` (CodeBERT's tokenizer files)."""
    from transformers import RobertaTokenizerFast

    directory = Path(directory)
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if not vocab.is_file() or not merges.is_file():
        raise CheckpointError(f"{directory}: tokenizer needs vocab.json and merges.txt")
    try:
        tok = RobertaTokenizerFast.from_pretrained(
            str(directory), model_max_length=max_length, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: cannot load the tokenizer ({exc})") from None
    n_vocab = len(json.loads(vocab.read_text(encoding="utf-8")))
    if len(tok) < n_vocab:
        raise CheckpointError(
            f"{directory}: tokenizer loaded {len(tok)} tokens but vocab.json has {n_vocab}"
        )
    return tok


def save_codebert(
    backbone: CodeBackbone | Any,
    directory: str | Path,
    tokenizer: Any = None,
    *,
    bare: bool = False,
    fmt: str = "safetensors",
) -> Path:
    """Write a ``RobertaForMaskedLM`` in the official layout (files written atomically).

    ``bare=True`` writes the ``RobertaModel`` key layout (no ``roberta.`` prefix, no
    ``lm_head``) as ``microsoft/codebert-base`` does; ``fmt="bin"`` writes
    ``pytorch_model.bin`` (a plain tensor dict, ``torch.save``) instead of safetensors.
    """
    import torch

    from polyprompt.core.io import atomic_write, atomic_write_text

    if fmt not in ("safetensors", "bin"):
        raise ConfigError(f"save_codebert: fmt must be 'safetensors' or 'bin', got {fmt!r}")
    model = backbone.model if isinstance(backbone, CodeBackbone) else backbone
    tokenizer = tokenizer if tokenizer is not None else getattr(backbone, "tokenizer", None)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k != "lm_head.decoder.weight" and k != "lm_head.decoder.bias"
    }
    if bare:
        state = {k[len("roberta.") :]: v for k, v in state.items() if k.startswith("roberta.")}
    cfg = model.config.to_dict()
    cfg["architectures"] = ["RobertaModel" if bare else "RobertaForMaskedLM"]
    atomic_write_text(directory / "config.json", json.dumps(cfg, indent=2, default=str))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        atomic_write(directory / "model.safetensors", lambda p: save_file(state, str(p)))
    else:
        atomic_write(directory / "pytorch_model.bin", lambda p: torch.save(state, str(p)))
    if tokenizer is not None:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            tokenizer.backend_tokenizer.model.save(tmp)  # vocab.json + merges.txt
            for name in ("vocab.json", "merges.txt"):
                data = (Path(tmp) / name).read_bytes()
                atomic_write(directory / name, lambda p, data=data: p.write_bytes(data))
    return directory
