"""Node-level RELIEF: few-shot node classification on k-hop subgraphs (karate club or an
official Planetoid folder). See ``polyprompt.graph.node_demo``.

    python examples/graph/relief_nodes.py --quick
    python examples/graph/relief_nodes.py --data path/to/planetoid/raw --name cora --hops 2
"""

import sys

from polyprompt.graph.node_demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
