"""In-situ pre-training of a small RoBERTa masked LM on real code, cached.

No CodeBERT weights ship in any wheel and nothing downloads at run time, so the example
pre-trains its own CodeBERT-like backbone:

1. code from the ``pretrain`` half of every offline corpus (:mod:`polyprompt.code.corpus`:
   Python stdlib, Go, OpenJDK, JavaScript — the ``task`` half is never seen), as
   ``docstring + code tokens`` texts (CodeBERT's bimodal NL-PL input);
2. a byte-level BPE tokenizer trained on those texts with ``tokenizers``
   (``ByteLevelBPETokenizer``, RoBERTa's special tokens; the verbalizer's label words are
   added to the training texts so that, as in RoBERTa's vocabulary, they are single tokens);
3. a ``transformers.RobertaForMaskedLM`` (:class:`~polyprompt.code.backbone.CodeMLMConfig`)
   trained with RoBERTa's MLM objective (15 % of tokens; 80 % ``<mask>`` / 10 % random /
   10 % kept — ``DataCollatorForLanguageModeling``) on packed 128-token blocks
   (RoBERTa's FULL-SENTENCES packing), AdamW with linear warm-up and decay.

The result is cached under ``polyprompt_home()/code/mini-codebert-<key>/`` in the official
CodeBERT folder layout (``config.json``, ``model.safetensors``, ``vocab.json``,
``merges.txt``) plus ``pretrain.json``; ``key`` hashes the architecture, the training
settings and the corpus fingerprints. The folder is written to a temporary name and
renamed into place, so an interrupted run leaves nothing half-written.

Example::

    >>> from polyprompt.code.pretrain import pretrain_code_mlm
    >>> backbone = pretrain_code_mlm(quick=True)          # doctest: +SKIP
    >>> backbone.model.config.model_type, backbone.info["from_cache"]   # doctest: +SKIP
    ('roberta', False)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyprompt.code.backbone import (
    SPECIAL_TOKENS,
    CodeBackbone,
    CodeMLMConfig,
    load_codebert,
    save_codebert,
)
from polyprompt.core.config import PromptConfig
from polyprompt.core.errors import CheckpointError
from polyprompt.core.io import polyprompt_home

__all__ = ["PretrainConfig", "cache_dir", "pretrain_code_mlm", "pretrain_texts"]

_FORMAT = "polyprompt-code-mini-codebert/1"
LABEL_WORDS = ("Yes", "No", "yes", "no", "true", "false")


@dataclass
class PretrainConfig(PromptConfig):
    """How the mini-CodeBERT is pre-trained (part of the cache key)."""

    languages: tuple[str, ...] = ("python", "java", "go", "javascript")
    functions_per_language: int = 2500
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_fraction: float = 0.06
    weight_decay: float = 0.01
    mlm_probability: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        r = self.require
        r(isinstance(self.languages, tuple) and len(self.languages) >= 1, "languages", "non-empty")
        self.require_ints("functions_per_language", "steps", "batch_size")
        r(self.lr > 0, "lr", "must be > 0")
        r(0 <= self.warmup_fraction < 1, "warmup_fraction", "must be in [0, 1)")
        r(0 < self.mlm_probability < 1, "mlm_probability", "must be in (0, 1)")

    @classmethod
    def quick(cls) -> PretrainConfig:
        """Smoke-test settings (well under a minute on 2 cores)."""
        return cls(functions_per_language=400, steps=60, batch_size=16)


def pretrain_texts(corpora: list[Any]) -> list[str]:
    """``docstring + code`` texts of every function (CodeBERT's bimodal input)."""
    texts = []
    for corpus in corpora:
        for fn in corpus.functions:
            doc = fn.query
            texts.append(f"{doc} {fn.code}" if doc else fn.code)
    return texts


def cache_dir(key: str) -> Path:
    """``polyprompt_home()/code/mini-codebert-<key>``."""
    return polyprompt_home() / "code" / f"mini-codebert-{key}"


def _cache_key(arch: CodeMLMConfig, cfg: PretrainConfig, fingerprints: list[str]) -> str:
    payload = json.dumps(
        {"format": _FORMAT, "arch": arch.to_dict(), "train": cfg.to_dict(), "data": fingerprints},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int) -> Any:
    """Byte-level BPE (``tokenizers``) -> ``RobertaTokenizerFast`` with RoBERTa's specials."""
    from tokenizers import ByteLevelBPETokenizer

    from polyprompt.code.backbone import load_tokenizer_files

    bpe = ByteLevelBPETokenizer()
    seed_text = [" ".join(LABEL_WORDS)] * 200  # label words become single tokens
    bpe.train_from_iterator(
        [*texts, *seed_text],
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        return load_tokenizer_files(tmp, max_length)


def _pack(texts: list[str], tokenizer: Any, block: int) -> Any:
    """Concatenate tokenised texts (``</s>`` between) into ``<s> ... </s>`` blocks
    (``[SEP]`` / ``[CLS] ... [SEP]`` with a BERT tokenizer)."""
    import torch

    from polyprompt.code.backbone import special_ids

    ids: list[int] = []
    bos, eos = special_ids(tokenizer)
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    inner = block - 2
    n = len(ids) // inner
    rows = [[bos, *ids[i * inner : (i + 1) * inner], eos] for i in range(n)]
    return torch.tensor(rows, dtype=torch.long)


def pretrain_code_mlm(
    *,
    quick: bool = False,
    cache: bool = True,
    arch: CodeMLMConfig | None = None,
    config: PretrainConfig | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> CodeBackbone:
    """Pre-train (or load from cache) the mini-CodeBERT on real code (see module doc).

    Returns a :class:`~polyprompt.code.backbone.CodeBackbone`; ``info`` holds the final
    MLM loss / accuracy on held-out blocks, the number of steps, the seconds and
    ``from_cache``.
    """
    import torch
    from transformers import DataCollatorForLanguageModeling

    from polyprompt.code.corpus import available_languages, load_corpus
    from polyprompt.core.progress import progress_bar

    arch = arch or CodeMLMConfig()
    cfg = config or (PretrainConfig.quick() if quick else PretrainConfig())
    start = time.perf_counter()
    present = set(available_languages())
    langs = [lang for lang in cfg.languages if lang in present]
    corpora = [
        load_corpus(lang, split="pretrain", max_functions=cfg.functions_per_language, seed=cfg.seed)
        for lang in langs
    ]
    key = _cache_key(arch, cfg, [f"{c.language}:{c.fingerprint()}" for c in corpora])
    final = cache_dir(key)
    if cache and (final / "pretrain.json").is_file():
        try:
            backbone = load_codebert(final)
            info = json.loads((final / "pretrain.json").read_text())
        except (CheckpointError, json.JSONDecodeError) as exc:
            if verbose:
                print(f"code backbone: cache {final} unusable ({exc}); pre-training again")
        else:
            info.update(from_cache=True, seconds=time.perf_counter() - start)
            backbone.info = info
            if verbose:
                print(
                    f"code backbone: loaded {final} (held-out MLM accuracy "
                    f"{info.get('mlm_accuracy', float('nan')):.1%})",
                    flush=True,
                )
            return backbone

    texts = pretrain_texts(corpora)
    if verbose:
        print(
            f"code backbone: pre-training a RoBERTa MLM (hidden {arch.hidden_size}, "
            f"{arch.num_layers} layers) on {len(texts)} real functions "
            f"({', '.join(langs)}) for {cfg.steps} steps (cached afterwards)",
            flush=True,
        )
    torch.manual_seed(cfg.seed)
    tokenizer = train_tokenizer(texts, arch.vocab_size, arch.max_length)
    blocks = _pack(texts, tokenizer, arch.max_length)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(blocks), generator=g)
    n_val = max(4, len(blocks) // 20)
    val, train = blocks[perm[:n_val]], blocks[perm[n_val:]]
    model = arch.build(vocab_size=len(tokenizer))
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=cfg.mlm_probability, return_tensors="pt"
    )
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
    )
    warm = max(1, int(cfg.steps * cfg.warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.train()
    bar = progress_bar(total=cfg.steps, desc="pre-train mini-CodeBERT (MLM)", enabled=progress)
    history = []
    order = torch.randperm(len(train), generator=g)
    pos = 0
    for step in range(cfg.steps):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(train), generator=g), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        batch = collator([{"input_ids": row} for row in train[idx]])
        loss, _ = _mlm_loss(model, batch["input_ids"], batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        history.append(float(loss))
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(history[-10:]) / len(history[-10:]):.3f}")
    bar.close()
    model.eval()
    val_loss, val_acc = _evaluate_mlm(model, collator, val, cfg.seed)
    took = time.perf_counter() - start
    info = {
        "format": _FORMAT,
        "key": key,
        "arch": arch.to_dict(),
        "pretrain": cfg.to_dict(),
        "languages": langs,
        "functions": len(texts),
        "blocks": len(blocks),
        "train_loss_first": history[0],
        "train_loss_last": sum(history[-20:]) / len(history[-20:]),
        "mlm_loss": val_loss,
        "mlm_accuracy": val_acc,
        "mlm_perplexity": math.exp(min(val_loss, 50.0)),
        "train_seconds": took,
    }
    backbone = CodeBackbone(model, tokenizer, None, {**info, "from_cache": False, "seconds": took})
    if cache:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            save_codebert(backbone, tmp)
            (tmp / "pretrain.json").write_text(json.dumps(info, indent=2, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        backbone.path = final
    if verbose:
        print(
            f"code backbone: held-out MLM accuracy {val_acc:.1%} (loss {val_loss:.2f}) after "
            f"{took:.0f} s" + (f", cached at {final}" if cache else ""),
            flush=True,
        )
    return backbone


def _evaluate_mlm(model: Any, collator: Any, blocks: Any, seed: int) -> tuple[float, float]:
    """Masked-token loss and accuracy on held-out blocks (fixed masking seed)."""
    import torch

    state = torch.get_rng_state()
    torch.manual_seed(seed + 1)
    try:
        batch = collator([{"input_ids": row} for row in blocks])
    finally:
        torch.set_rng_state(state)
    with torch.no_grad():
        loss, acc = _mlm_loss(model, batch["input_ids"], batch["labels"])
    return float(loss), float(acc)


def _mlm_loss(model: Any, input_ids: Any, labels: Any) -> tuple[Any, float]:
    """MLM cross-entropy computed at the masked positions only (the head over the full
    vocabulary at every position costs more than the encoder for a small model)."""
    import torch.nn.functional as F

    hidden = model.roberta(input_ids=input_ids).last_hidden_state
    sel = labels != -100
    logits = model.lm_head(hidden[sel])
    target = labels[sel]
    acc = float((logits.argmax(-1) == target).float().mean()) if target.numel() else 0.0
    return F.cross_entropy(logits, target), acc
