"""MVP (mask + visual prompts) vs baselines on a Si-Blurry stream of real digits.

    python examples/continual/mvp_si_blurry.py --quick            # < 1 min smoke run
    python examples/continual/mvp_si_blurry.py --out out/continual  # 3 seeds, every method
    python examples/continual/mvp_si_blurry.py --data PATH --data-format cifar100 \
        --checkpoint vit_b16.safetensors                            # the paper's setting

Prints the results table (A_auc, A_last, F_last mean ± std, trainable %, checkpoint bytes,
samples/s, time) and writes results.json, results.md and auc_curve.png to --out.
"""

from __future__ import annotations

import sys

from polyprompt.continual.demo import main

if __name__ == "__main__":
    sys.exit(main())
