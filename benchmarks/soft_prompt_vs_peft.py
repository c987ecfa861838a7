"""polyprompt's prompt tuning vs HF PEFT prompt tuning: same model, same init, same data.

Both sides train a 20-token soft prompt on one frozen tiny GPT-2 (built from a ``GPT2Config``,
random weights, built once and deep-copied), with PEFT's random prompt init copied into ours,
the same Adam optimizer and the same fixed batch of real text (the Zen of Python from the
standard library, one id per byte: no tokenizer, no download).  The batch is unpadded (PEFT
puts its prompt before the padding, ours before the first real token; unpadded, both read
``[P1..Pn, tokens]`` with positions ``0..n+T-1``).

Measured: the loss curves (max abs difference, expected <= 1e-5) and the time per training
step (forward + backward + Adam step), steps interleaved ours / PEFT with alternating order,
median over the steps after warm-up.

Run ``python benchmarks/soft_prompt_vs_peft.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import ast
import codecs
import copy
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, write_results

NAME = "soft_prompt_vs_peft"
NUM_TOKENS = 20
LR = 1e-2
THREADS = 2
LOSS_TOL = 1e-5
MODEL_CFG = dict(
    vocab_size=256, n_positions=128, n_embd=128, n_layer=4, n_head=4,
    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    bos_token_id=None, eos_token_id=None, pad_token_id=0,
)  # fmt: skip


def text_batch(batch: int, length: int):
    """``(batch, length)`` byte ids of consecutive slices of the Zen of Python."""
    import torch

    # the module ``this`` holds the Zen ROT13-encoded in ``s``; read it without importing
    # (importing prints it)
    source = Path(importlib.util.find_spec("this").origin).read_text()
    tree = ast.parse(source)
    rot13 = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "s"
    )
    text = codecs.decode(rot13, "rot13").encode()
    need = batch * length
    text = (text * (need // len(text) + 1))[:need]
    return torch.tensor(list(text), dtype=torch.long).view(batch, length)


def build(seed: int = 0):
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from polyprompt.core import create

    torch.manual_seed(seed)
    base = GPT2LMHeadModel(GPT2Config(**MODEL_CFG))
    peft_cfg = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=NUM_TOKENS,
        prompt_tuning_init=PromptTuningInit.RANDOM,
    )
    theirs = get_peft_model(copy.deepcopy(base), peft_cfg)
    ours = create("prompt_tuning", copy.deepcopy(base), num_tokens=NUM_TOKENS)
    peft_prompt = theirs.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        ours.prompt.weight.copy_(peft_prompt)
    theirs.train()
    ours.train()
    return ours, theirs, peft_prompt


def trainable(model) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    import torch

    torch.set_num_threads(THREADS)
    steps, warmup = (12, 2) if args.quick else (100, 5)
    batch, length = 8, 64
    ours, theirs, peft_prompt = build()
    ours_params, peft_params = trainable(ours), trainable(theirs)
    assert len(ours_params) == 1 and ours_params[0] is ours.prompt.weight, ours_params
    assert len(peft_params) == 1 and peft_params[0] is peft_prompt, peft_params
    ids = text_batch(batch, length)
    mask = torch.ones_like(ids)
    opt_ours = torch.optim.Adam(ours_params, lr=LR)
    opt_peft = torch.optim.Adam(peft_params, lr=LR)

    def step_ours() -> float:
        opt_ours.zero_grad(set_to_none=True)
        loss = ours(ids, mask, labels=ids).loss
        loss.backward()
        opt_ours.step()
        return float(loss.detach())

    def step_peft() -> float:
        opt_peft.zero_grad(set_to_none=True)
        loss = theirs(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        opt_peft.step()
        return float(loss.detach())

    def timed(fn) -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = fn()
        return loss, time.perf_counter() - t0

    losses_ours, losses_peft, t_ours, t_peft = [], [], [], []
    for i in range(steps):
        # alternate who goes first, so neither always runs on a warmer cache
        if i % 2 == 0:
            lo, to = timed(step_ours)
            lp, tp = timed(step_peft)
        else:
            lp, tp = timed(step_peft)
            lo, to = timed(step_ours)
        losses_ours.append(lo)
        losses_peft.append(lp)
        t_ours.append(to)
        t_peft.append(tp)
    diffs = [abs(a - b) for a, b in zip(losses_ours, losses_peft, strict=True)]
    prompt_diff = float((ours.prompt.weight - peft_prompt).detach().abs().max())
    med_ours = statistics.median(t_ours[warmup:])
    med_peft = statistics.median(t_peft[warmup:])
    # paired ratios (same iteration, back to back) are robust to load drifting over the run
    paired = statistics.median(a / b for a, b in zip(t_ours[warmup:], t_peft[warmup:], strict=True))
    max_diff = max(diffs)
    rows = [
        {
            "side": "polyprompt prompt_tuning",
            "step_ms": med_ours * 1e3,
            "first_loss": losses_ours[0],
            "last_loss": losses_ours[-1],
        },
        {
            "side": "HF PEFT PROMPT_TUNING",
            "step_ms": med_peft * 1e3,
            "first_loss": losses_peft[0],
            "last_loss": losses_peft[-1],
        },
        {
            "side": "ours / PEFT",
            "step_ms": med_ours / med_peft,
            "first_loss": "max abs loss diff:",
            "last_loss": max_diff,
        },
    ]
    payload = {
        "model": {"class": "GPT2LMHeadModel", **MODEL_CFG},
        "num_virtual_tokens": NUM_TOKENS,
        "optimizer": f"Adam(lr={LR})",
        "batch": [batch, length],
        "steps": steps,
        "warmup_steps_excluded_from_timing": warmup,
        "threads": THREADS,
        "quick": args.quick,
        "max_abs_loss_diff": max_diff,
        "loss_tolerance": LOSS_TOL,
        "losses_match": max_diff <= LOSS_TOL,
        "final_prompt_max_abs_diff": prompt_diff,
        "losses_ours": losses_ours,
        "losses_peft": losses_peft,
        "step_s_ours": t_ours,
        "step_s_peft": t_peft,
        "median_step_s_ours": med_ours,
        "median_step_s_peft": med_peft,
        "time_ratio_ours_over_peft": med_ours / med_peft,
        "time_ratio_paired_median": paired,
        "time_target": 1.0,
        "time_ok": med_ours / med_peft <= 1.0,
    }
    notes = f"""
Tiny GPT-2 (`GPT2Config` {MODEL_CFG["n_layer"]} layers, width {MODEL_CFG["n_embd"]}, vocab
{MODEL_CFG["vocab_size"]} = bytes, random weights, dropout 0), {NUM_TOKENS} virtual tokens,
PEFT's RANDOM prompt init copied into ours, Adam(lr={LR}), one fixed unpadded batch of
{batch} x {length} bytes of real text, {steps} steps. Loss curves: max |ours - PEFT| =
{max_diff:.2e} (tolerance {LOSS_TOL:g}); final prompts differ by at most {prompt_diff:.2e}.
Time per step: median of steps {warmup}..{steps - 1}, the two sides interleaved with
alternating order; `ours / PEFT` = {med_ours / med_peft:.3f} (median of per-step paired
ratios: {paired:.3f}; target <= 1.0).
"""
    write_results(
        NAME, args.out, payload, rows, title="Soft prompt: polyprompt vs HF PEFT", notes=notes
    )


if __name__ == "__main__":
    main()
