"""CoDA on real digit-on-texture scenes: clear source -> fog (easy) / night (hard) target.

    python examples/adapt/coda_segmentation.py --quick            # <= 1 minute smoke run
    python examples/adapt/coda_segmentation.py --out runs/adapt   # 3 seeds, table + figures
    python examples/adapt/coda_segmentation.py --data /data --target acdc   # the paper's data

Prints mIoU (all / easy / hard target images) for source-only, self-training without
prompts, self-training + SAVPT and full CoDA; see ``polyprompt.adapt.demo``.
"""

import sys

from polyprompt.adapt.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
