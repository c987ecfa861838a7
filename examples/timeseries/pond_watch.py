"""POND (KDD 2024) on real smartwatch IMU data: each held-out subject is a target domain.

    python examples/timeseries/pond_watch.py --quick                 # smoke run (<= 1 min)
    python examples/timeseries/pond_watch.py --out out/timeseries    # 10 subjects x 3 seeds
    python examples/timeseries/pond_watch.py --data PATH/TO/AdaTime/HHAR --out out/hhar

See polyprompt.timeseries.demo for what runs and what is written.
"""

import sys

from polyprompt.timeseries.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
