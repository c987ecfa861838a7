"""In-situ pre-training of a tiny causal LM + byte-level BPE tokenizer on real English, cached.

APT freezes a pre-trained LLM (Vicuna-7B). No LM weights ship in any wheel here and nothing
downloads at run time, so the example pre-trains its own small one, so that the language
the aligner talks to is really frozen knowledge:

* **text**: the docstrings of the Python standard library that runs this code (``ast`` over
  ``sysconfig.get_paths()["stdlib"]``, test folders skipped; English prose written by the
  CPython developers), paragraphs of >= 40 characters that are mostly letters, plus the
  caller's ``extra_texts`` (the example passes the *training* split's examples as text:
  ``"Audio: <clip description> <segment> ... Answer: <response>"``, see
  :func:`polyprompt.audio.demo.lm_texts`, so the LM knows the task words, the answer format,
  and that the answer is read from the context);
* **tokenizer**: ``tokenizers.ByteLevelBPETokenizer`` (GPT-2's scheme), specials
  ``<s>`` ``</s>`` ``<pad>``, wrapped as ``transformers.PreTrainedTokenizerFast``;
* **model**: ``transformers.GPT2LMHeadModel`` (:class:`TinyLMConfig`), next-token loss on
  packed blocks, AdamW + linear warm-up / cosine decay.

Cached under ``polyprompt_home()/audio/tiny-lm-<key>/`` in the Hugging Face folder layout
(``config.json``, ``model.safetensors``, ``tokenizer.json``, ...) so
:func:`polyprompt.audio.lm.load_causal_lm` loads it like any hub model; ``key`` hashes the
config and the text. Written to a temporary folder and renamed into place (atomic).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyprompt.core.config import PromptConfig
from polyprompt.core.io import polyprompt_home
from polyprompt.core.schedules import warmup_cosine

__all__ = ["TinyLMConfig", "pretrain_tiny_lm", "stdlib_docstrings"]

_FORMAT = "polyprompt-audio-tiny-lm/1"
SPECIALS = ("<s>", "</s>", "<pad>")


@dataclass
class TinyLMConfig(PromptConfig):
    """Tiny GPT-2 + BPE pre-training settings (CPU: ~1 minute at the defaults)."""

    vocab_size: int = 2000
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 512
    block_size: int = 96
    batch_size: int = 16
    steps: int = 800
    lr: float = 2e-3
    max_chars: int = 600_000
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "max_positions",
            "block_size",
            "batch_size",
            "steps",
            "max_chars",
        ):
            v = getattr(self, name)
            self.require(isinstance(v, int) and v >= 1, name, "must be an int >= 1")
        self.require(
            self.hidden_size % self.num_heads == 0, "hidden_size", "divisible by num_heads"
        )
        self.require(self.vocab_size > 300, "vocab_size", "must be > 300 (256 bytes + specials)")
        self.require(self.lr > 0, "lr", "must be > 0")


def _prose(text: str) -> bool:
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    return len(text) >= 40 and letters / len(text) > 0.85


def stdlib_docstrings(max_chars: int = 1_500_000) -> list[str]:
    """English paragraphs from the docstrings of the installed Python standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in doc.split("\n\n"):
                    para = " ".join(para.split())
                    if _prose(para):
                        out.append(para)
                        total += len(para)
                        if total >= max_chars:
                            return out
    return out


def _cache_key(cfg: TinyLMConfig, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(_FORMAT.encode())
    h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """Byte-level BPE (GPT-2 scheme) as a ``PreTrainedTokenizerFast``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts), vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIALS)
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def pretrain_tiny_lm(
    extra_texts: Sequence[str] = (),
    config: TinyLMConfig | None = None,
    *,
    progress: bool = True,
    cache: bool = True,
) -> tuple[Any, Any, dict[str, Any]]:
    """Pre-train (or load from cache) the tiny LM; returns ``(model, tokenizer, info)``.

    ``info``: ``from_cache``, ``seconds``, ``final_loss``, ``num_texts``, ``chars``, ``path``.
    The model is returned in eval mode with gradients off.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from polyprompt.core.progress import progress_bar

    cfg = config or TinyLMConfig()
    texts = stdlib_docstrings(cfg.max_chars) + [" ".join(t.split()) for t in extra_texts if t]
    key = _cache_key(cfg, texts)
    folder = polyprompt_home() / "audio" / f"tiny-lm-{key}"
    info: dict[str, Any] = {"path": str(folder), "num_texts": len(texts)}
    info["chars"] = sum(len(t) for t in texts)
    if cache and (folder / "pretrain.json").exists():
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        meta = json.loads((folder / "pretrain.json").read_text())
        model.eval().requires_grad_(False)
        return model, tok, {**info, **meta, "from_cache": True}
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    tok = train_tokenizer(texts, cfg.vocab_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(texts), generator=gen).tolist()
    encoded = tok([" " + texts[i] for i in order], add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for row in encoded:
        ids.append(tok.bos_token_id)
        ids.extend(row)
        ids.append(tok.eos_token_id)
    block = cfg.block_size
    n_blocks = len(ids) // block
    data = torch.tensor(ids[: n_blocks * block]).view(n_blocks, block)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_positions=cfg.max_positions,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, cfg.steps // 20)

    def factor(step: int) -> float:
        return warmup_cosine(step, warm, cfg.steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    bar = progress_bar(range(cfg.steps), desc="pre-train tiny LM", enabled=progress, unit="step")
    ema = None
    for _ in bar:
        idx = torch.randint(0, n_blocks, (cfg.batch_size,), generator=gen)
        batch = data[idx]
        # the model's position table (max_positions) is longer than the training blocks:
        # random offsets train every position that interleaved prompts will use
        offset = int(torch.randint(0, cfg.max_positions - block + 1, (1,), generator=gen))
        pos = torch.arange(offset, offset + block).expand(cfg.batch_size, -1)
        loss = model(input_ids=batch, position_ids=pos, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval().requires_grad_(False)
    meta = {"final_loss": ema, "seconds": time.time() - t0, "format": _FORMAT, "tokens": len(ids)}
    if cache:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "pretrain.json").write_text(json.dumps(meta, indent=2))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return model, tok, {**info, **meta, "from_cache": False}
