"""Acoustic Prompt Tuning: audio as 33 soft tokens per clip for a frozen causal LM.

    python examples/audio/acoustic_prompt_tuning.py --quick             # ~1 minute smoke run
    python examples/audio/acoustic_prompt_tuning.py --out results/audio  # full run (JSON + MD + PNG)
    python examples/audio/acoustic_prompt_tuning.py --data DIR           # Clotho / AudioCaps layout

Needs the Debian packages espeak-ng and sox for the offline speech corpus
(`apt-get install espeak-ng sox`); see polyprompt.audio.demo for what it does.
"""

import sys

from polyprompt.audio.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
