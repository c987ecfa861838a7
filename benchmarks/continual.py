"""MVP on a Si-Blurry stream: quality vs baselines + ablations, and update cost vs full fine-tuning.

Side by side in one run, on the same real data (optdigits stream, 1,347 train / 450 test) and
the same backbone (the core's timm ViT pre-trained in-situ on MNIST, cached):

1. quality — every method of :data:`polyprompt.continual.demo.METHODS` (head fine-tuning,
   full fine-tuning, ER, L2P, DualPrompt, MVP and MVP with each component off) over the same
   Si-Blurry streams (5 tasks, N=50 %, M=10 %), A_auc / A_last / F_last mean ± std over the
   stream seeds, training samples per second of the online learner;
2. cost of one online update (batch 16 real digits, forward + loss + backward + Adam step):
   median step time, autograd-saved activation bytes (``saved_tensor_bytes``, parameters
   excluded), trainable parameters and prompt-only checkpoint bytes, for MVP, DualPrompt, L2P,
   head fine-tuning and full fine-tuning.

``--quick``: one stream seed and the main methods (no ablations) — a smoke run.
Run ``python benchmarks/continual.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, peak_rss_bytes, time_fn, write_results


def update_cost(pre, methods: list[str], repeats: int) -> list[dict]:
    """One online update per method on the same real batch."""
    import torch

    from polyprompt.continual.data import load_digit_pool
    from polyprompt.continual.demo import METHODS, build_model
    from polyprompt.continual.learner import LearnerConfig, OnlineLearner
    from polyprompt.core.freezing import trainable_report
    from polyprompt.core.memory import saved_tensor_bytes

    train, _ = load_digit_pool("optdigits")
    x, y = train.images[:16], train.labels[:16]
    rows = []
    for name in methods:
        spec = METHODS[name]
        torch.manual_seed(0)
        model = build_model(spec, pre.backbone(), 10)
        learner = OnlineLearner(model, LearnerConfig(online_iter=1, lr=1e-4))
        learner.seen[:] = True
        q = model.query(x) if learner.prompt_family else None

        def step(model=model, learner=learner, q=q) -> None:
            model.train()
            loss = learner._logits_and_loss(x, y, q)
            learner.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            learner.optimizer.step()

        t = time_fn(step, warmup=2, repeats=repeats)
        model.train()
        # torch.func (GSF's per-sample gradients) refuses saved-tensor hooks: count the graph
        # with GSF off; GSF adds no saved tensor (it runs on detached features), only a
        # transient (B, C, D) per-sample gradient, reported separately
        gsf = bool(getattr(getattr(model, "config", None), "use_gsf", False))
        if gsf:
            model.config.use_gsf = False
        saved = saved_tensor_bytes(
            lambda learner=learner, q=q: learner._logits_and_loss(x, y, q), exclude=model
        )
        if gsf:
            model.config.use_gsf = True
        gsf_bytes = 16 * 10 * int(model.head.in_features) * 4 if gsf else 0
        rep = trainable_report(model)
        rows.append(
            {
                "method": name,
                "step_ms": 1000 * t["median_s"],
                "saved_activation_MB": saved / 2**20,
                "gsf_per_sample_grad_KB": gsf_bytes / 1024,
                "trainable_params": rep.trainable_params,
                "trainable_percent": rep.percent_of_backbone,
                "checkpoint_bytes": rep.checkpoint_bytes,
            }
        )
    return rows


def frozen_probe(pre) -> dict:
    """The ceiling of the frozen-feature methods: an offline linear probe (logistic regression,
    all epochs, no stream) on the frozen backbone's CLS features, optdigits train -> test; and
    the same probe on raw pixels for reference."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from polyprompt.continual.backbone import frozen_probe_accuracy
    from polyprompt.continual.data import load_digit_pool

    train, test = load_digit_pool("optdigits")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(train.images.flatten(1).numpy(), train.labels.numpy())
    raw = float(np.mean(clf.predict(test.images.flatten(1).numpy()) == test.labels.numpy()))
    return {"frozen_cls": frozen_probe_accuracy(pre.backbone(), train, test), "raw_pixels": raw}


def main(argv=None) -> int:
    import torch

    from polyprompt.continual.backbone import digit_backbone
    from polyprompt.continual.demo import METHODS, DemoConfig, run_demo

    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    pre = digit_backbone(progress=True)
    main_methods = ("head_ft", "finetune", "er", "l2p", "dualprompt", "mvp")
    cfg = DemoConfig(
        seeds=(1,) if args.quick else (1, 2, 3),
        methods=main_methods
        if args.quick
        else main_methods + tuple(m for m in METHODS if m.startswith("mvp_no_")),
    )
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        quality = run_demo(
            quick=False,
            out_dir=tmp,
            config=cfg,
            backbone_factory=pre.backbone,
            backbone_note=f"timm ViT ({pre.num_params():,} params) pre-trained in-situ on MNIST",
            progress=True,
            verbose=False,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "auc_curve.png", args.out / "continual.png")
    probe = frozen_probe(pre)
    costs = update_cost(
        pre, ["mvp", "dualprompt", "l2p", "head_ft", "finetune"], 5 if args.quick else 10
    )
    cost_by = {r["method"]: r for r in costs}
    rows = []
    for r in quality["rows"]:
        c = cost_by.get(r["method"], {})
        rows.append(
            {
                "method": r["method"],
                "A_auc %": f"{100 * r['a_auc_mean']:.1f} ± {100 * r['a_auc_std']:.1f}",
                "A_last %": f"{100 * r['a_last_mean']:.1f} ± {100 * r['a_last_std']:.1f}",
                "F_last %": f"{100 * r['f_last_mean']:.1f} ± {100 * r['f_last_std']:.1f}",
                "samples/s": round(r["samples_per_second_mean"], 1),
                "step ms": round(c["step_ms"], 1) if c else "",
                "saved act. MB": round(c["saved_activation_MB"], 2) if c else "",
                "trainable %": round(r["trainable_percent"], 2),
                "checkpoint bytes": r["checkpoint_bytes"],
            }
        )
    notes = f"""
{quality["title"]}.

A_auc / A_last / F_last: mean ± sample std over stream seeds {list(cfg.seeds)} (Si-Blurry
definitions, polyprompt.core.metrics). samples/s: online-learner training throughput (3 updates
per incoming batch of 16, evaluation excluded). step ms: median time of one update (forward +
loss + backward + Adam) on 16 real digits; saved act. MB: bytes autograd keeps for backward in
that update (parameters excluded; GSF adds only a transient (16, 10, D) per-sample gradient,
gsf_per_sample_grad_KB in the JSON). trainable %: of the backbone's parameters; checkpoint bytes:
prompt-only safetensors (the whole model for full fine-tuning / ER). CPU, 1 torch thread; the
2 cores were shared with other jobs (load ~4-8), so absolute times are inflated — compare rows
within this run only. Offline linear probe (logistic regression on all 1,347 train
images, no stream) of the frozen backbone's CLS features: {100 * probe["frozen_cls"]:.1f} %
on the 450 test images (raw pixels: {100 * probe["raw_pixels"]:.1f} %) — the ceiling of
head / prompt methods without forgetting. Peak RSS of the whole run: {peak_rss_bytes() / 2**20:.0f} MB. Total
{time.perf_counter() - start:.0f} s.{" --quick: one seed, no ablations." if args.quick else ""}

![accuracy on the seen classes along the stream (A_auc curves)](continual.png)
"""
    write_results(
        "continual",
        args.out,
        {
            "quality": quality["rows"],
            "costs": costs,
            "frozen_linear_probe": probe,
            "config": cfg.to_dict(),
            "curves": quality["curves"],
        },
        rows,
        title="MVP on a Si-Blurry stream of real digits: quality, ablations and update cost",
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
