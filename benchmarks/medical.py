"""polyprompt-medical benchmark: DVPT vs its baselines on real Br35H MRI, side by side.

One run measures, for every method on the same frozen in-situ pre-trained timm ViT:

* **quality** on the Br35H test split -- quadratic weighted kappa (the paper's metric),
  accuracy, ROC-AUC -- with 100%, 40% and 10% of the training labels, mean ± std over seeds
  (through :func:`polyprompt.medical.demo.run_demo`, the example's code path);
* **trainable share** and **prompt-only checkpoint bytes** (``trainable_report``);
* **train-step time** (forward + backward + AdamW step, batch 64, median of repeats) and
  **training memory** = autograd-saved activations (``polyprompt.core.memory.saved_tensor_bytes``,
  deterministic) + gradients + AdamW moments of the trainable parameters, next to full
  fine-tuning; plus DVPT with ``first_block=3`` trained from cached block-3 tokens
  (:class:`~polyprompt.core.FeatureCache`, no augmentation), the feature-cache path.

    python benchmarks/medical.py --quick      # 3 seeds, 4 epochs, all label fractions
    python benchmarks/medical.py              # 3 seeds, example's full settings
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import parse_args, time_fn, write_results

MiB = 1024 * 1024


def step_and_memory(pretrained, batch: int = 64) -> list[dict]:
    """Train-step time and training memory of each method, side by side (same batch)."""
    import torch

    from polyprompt.core import FeatureCache, create, trainable_report
    from polyprompt.core.memory import saved_tensor_bytes

    torch.manual_seed(0)
    arch = pretrained.arch
    x = torch.rand(batch, arch.in_chans, arch.img_size, arch.img_size)
    y = torch.randint(0, 2, (batch,))
    configs = [
        ("full_finetune", "full_finetune", {}, False),
        ("linear_probe (cached)", "linear_probe", {}, True),
        ("vpt", "vpt", {"num_tokens": 4, "deep": True}, False),
        ("adaptformer", "adaptformer", {"hidden": 4}, False),
        ("ssf", "ssf", {}, False),
        ("dvpt", "dvpt", {}, False),
        ("dvpt_official", "dvpt", {"variant": "official", "num_prompts": 10}, False),
        ("dvpt first_block=3", "dvpt", {"first_block": 3}, False),
        ("dvpt first_block=3 (cached)", "dvpt", {"first_block": 3}, True),
    ]
    rows = []
    for label, method, opts, cached in configs:
        model = create(method, pretrained.backbone(), num_classes=2, **opts)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        if cached:
            cache = FeatureCache(model.backbone, model.cache_point, in_memory=True)
            inp = cache.tokens(x, batch)

            def forward(inp=inp, model=model, k=model.cache_point):
                return model.forward_from_tokens(inp, k)
        else:

            def forward(model=model):
                return model(x)

        def step(forward=forward, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(forward(), y)
            loss.backward()
            opt.step()

        timing = time_fn(step, warmup=2, repeats=8)
        saved = saved_tensor_bytes(forward, exclude=model)
        n_train = sum(p.numel() for p in params)
        rep = trainable_report(model)
        state = 3 * 4 * n_train  # fp32 grads + AdamW exp_avg + exp_avg_sq
        rows.append(
            {
                "config": label,
                "trainable_params": n_train,
                "trainable_percent": rep.percent_of_backbone,
                "step_s": timing["median_s"],
                "activations_MiB": saved / MiB,
                "train_memory_MiB": (saved + state) / MiB,
            }
        )
        print(
            f"{label:>28}: {timing['median_s'] * 1e3:.0f} ms/step, {(saved + state) / MiB:.1f} MiB",
            flush=True,
        )
    full = rows[0]
    for r in rows:
        r["time_vs_full"] = r["step_s"] / full["step_s"]
        r["memory_vs_full"] = r["train_memory_MiB"] / full["train_memory_MiB"]
    return rows


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    import torch

    torch.set_num_threads(1 if args.quick else torch.get_num_threads())
    from polyprompt.medical.demo import DemoConfig, run_demo, table

    start = time.perf_counter()
    cfg = DemoConfig(epochs=4) if args.quick else DemoConfig()
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(False, tmp, config=cfg, progress=False, verbose=True)
        args.out.mkdir(parents=True, exist_ok=True)
        for key in ("plot_labels", "plot_trainable"):
            src = Path(result["files"][key])
            shutil.copy(src, args.out / f"medical_{src.name}")
    from polyprompt.medical.data import load_br35h, stratified_split
    from polyprompt.medical.pretrain import PretrainConfig, pretrain_backbone

    splits = stratified_split(load_br35h(size=cfg.img_size, progress=False), seed=cfg.split_seed)
    pretrained = pretrain_backbone(
        splits.train.images,
        arch=__import__("polyprompt.medical.demo", fromlist=["_arch"])._arch(
            "br35h", 2, cfg.img_size, 1
        ),
        train=PretrainConfig(epochs=cfg.pretrain_epochs),
        name="br35h-vit",
        progress=False,
        verbose=False,
    )
    speed = step_and_memory(pretrained)
    quality = [
        {
            k: r[k]
            for k in (
                "method",
                "label_fraction",
                "kappa_mean",
                "kappa_std",
                "accuracy_mean",
                "auc_mean",
                "trainable_percent",
                "checkpoint_bytes",
                "seconds_mean",
            )
        }
        for r in result["rows"]
    ]
    notes = "\n".join(
        [
            "## Quality (Br35H test split, mean ± std over seeds " + str(list(cfg.seeds)) + ")",
            "",
            table(result["rows"], "markdown"),
            "",
            "## Step time and training memory (batch 64, side by side in this run)",
            "",
            "train memory = autograd-saved activations + grads + AdamW moments of the trainable "
            "parameters (deterministic accounting, not the allocator).",
            "",
            "The machine was shared with other jobs: absolute times are inflated; the ratios "
            "to full fine-tuning were measured back to back.",
        ]
    )
    write_results(
        "medical",
        args.out,
        {
            "quick": args.quick,
            "quality": quality,
            "backbone": result["backbone"],
            "splits": result["splits"],
            "seconds": time.perf_counter() - start,
        },
        speed,
        title="polyprompt-medical: DVPT vs baselines (Br35H, frozen in-situ pre-trained ViT)",
        notes=notes,
    )


if __name__ == "__main__":
    main()
