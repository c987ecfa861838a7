"""RELIEF on real molecules: few-shot scaffold split, frozen in-situ pre-trained GIN.

python examples/graph/relief_molecules.py --quick --out out/graph-quick
python examples/graph/relief_molecules.py --out out/graph
python examples/graph/relief_molecules.py --data BBBP.csv --task p_np --out out/bbbp
"""

import sys

from polyprompt.graph.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
