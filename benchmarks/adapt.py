"""CoDA (polyprompt-adapt): quality, trainable share, iteration time and memory, side by side.

One run measures, on the same source-pre-trained SegFormer and the same real
digit-on-texture scenes (MNIST source -> optdigits fog / night target):

* quality -- target mIoU overall / easy / hard for source-only, self-training without
  prompts, self-training + SAVPT, full CoDA (the example's ablation, ``--seeds`` seeds);
* cost per training iteration of each variant, plus CoDA with a frozen SegFormer
  (prompt-only: SAVPT + classifier train) -- median wall time of one iteration
  (teacher + student passes + AdamW step), bytes autograd saves for backward in one
  iteration (deterministic activation memory), gradient + AdamW state bytes, peak RSS
  growth of the process, trainable parameters and SAVPT's added parameters.
  ``source_only`` is plain full fine-tuning on the source: the reference the others add to.

``python benchmarks/adapt.py [--quick] [--out DIR]`` -> ``adapt.json`` / ``adapt.md``.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import current_rss_bytes, parse_args, time_fn, write_results


def iteration_costs(quick: bool) -> list[dict]:
    import torch

    from polyprompt.adapt.backbone import MiTConfig, SegFormerBackbone
    from polyprompt.adapt.data.scenes import SceneTaskConfig, build_digit_scenes
    from polyprompt.adapt.method import CoDA, CoDAConfig
    from polyprompt.adapt.selftrain import SelfTrainingConfig, Variant, _UDAData, _UDAModule
    from polyprompt.core.memory import saved_tensor_bytes

    torch.set_num_threads(1)  # as the example (see its --threads)
    task = build_digit_scenes(
        SceneTaskConfig(image_size=64, n_source=16, n_target_train=16, n_target_test=2), cache=True
    )
    torch.manual_seed(0)
    net = SegFormerBackbone(MiTConfig.small(), task.num_classes)
    rows = []
    setups = [(v, True) for v in Variant] + [(Variant.CODA, False)]
    for variant, full in setups:
        model = CoDA(
            copy.deepcopy(net),
            CoDAConfig(
                image_size=64, patch_size=8, use_savpt=variant.uses_savpt, train_backbone=full
            ),
        )
        cfg = SelfTrainingConfig.scaled(100, batch_size=4, mask_block_size=8, mic=False)
        wrapper = _UDAModule(model, cfg, variant)
        hard = model.severity(task.target_train.images)
        data = _UDAData(task.source, task.target_train, hard, 4, 0)
        batch = [torch.stack(t) for t in zip(*[data[i] for i in range(4)])]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step(wrapper=wrapper, batch=batch, opt=opt):
            opt.zero_grad(set_to_none=True)
            wrapper(*batch).backward()
            opt.step()

        before = current_rss_bytes()
        timing = time_fn(step, warmup=1, repeats=3 if quick else 8)
        rss = max(0, current_rss_bytes() - before)
        saved = saved_tensor_bytes(
            lambda wrapper=wrapper, batch=batch: wrapper(*batch), exclude=model
        )
        trainable = sum(p.numel() for p in params)
        total = sum(p.numel() for p in model.backbone.parameters())
        name = variant.value + ("" if full else " (frozen SegFormer, prompt-only)")
        rows.append(
            {
                "variant": name,
                "trainable_params": trainable,
                "trainable_percent_of_segformer": round(100 * trainable / total, 3),
                "savpt_params": model.savpt_parameters(),
                "s_per_iteration": round(timing["median_s"], 4),
                "saved_activation_MB": round(saved / 2**20, 2),
                "grad_adam_MB": round(trainable * 4 * 3 / 2**20, 3),
                "rss_growth_MB": round(rss / 2**20, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv)
    from polyprompt.adapt.demo import run

    costs = iteration_costs(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        quality = run(
            quick=args.quick, out_dir=Path(tmp), seeds=1 if args.quick else 3, progress=False
        )
        Path(args.out).mkdir(parents=True, exist_ok=True)
        for name in ("miou", "qualitative"):
            shutil.copyfile(Path(tmp) / f"{name}.png", Path(args.out) / f"adapt_{name}.png")
    rows = []
    by_variant = {r["variant"]: r for r in quality["rows"]}
    for cost in costs:
        q = by_variant.get(cost["variant"], {})
        row = {"variant": cost["variant"]}
        for key in ("miou", "easy", "hard"):
            m, s = q.get(f"{key}_mean"), q.get(f"{key}_std")
            row[f"mIoU {key} (%)"] = "" if m is None else f"{100 * m:.1f} ± {100 * (s or 0):.1f}"
        row.update({k: v for k, v in cost.items() if k != "variant"})
        rows.append(row)
    notes = (
        f"Quality: target test mIoU over {quality['seeds']} seed(s) "
        f"({quality['n_easy']} easy / {quality['n_hard']} hard images by the dark-pixel rule), "
        f"settings {quality['settings']}. The prompt-only row is timed only (no quality run). "
        "Iteration = teacher forward + student source, ClassMix passes + AdamW step, "
        "batch 4 source + 4 target images of 64x64, MiT small (1 thread, CPU). Self-training "
        "recipe (all variants): DAFormer/MIC official -- EMA teacher predicting with BatchNorm "
        "batch statistics (dropout off), AdamW with head lr x10 and no decay on norms, linear "
        "warm-up + poly decay, colour jitter applied 80% of the time; full settings in "
        "adapt.json (quality.self_training_config). Figures: adapt_miou.png, adapt_qualitative.png."
    )
    write_results(
        "adapt",
        args.out,
        {"quality": quality, "costs": costs, "quick": args.quick},
        rows,
        title="CoDA (polyprompt-adapt): ablation quality and per-iteration cost",
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
