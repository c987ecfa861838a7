"""IDPT on a frozen, in-situ pre-trained Point-MAE: real furniture meshes (or --data ModelNet40 /
ScanObjectNN), against linear probe, full fine-tuning and VPT. Table + JSON + plot in --out.

    python examples/pointcloud/idpt_classify.py --quick
    python examples/pointcloud/idpt_classify.py --out out/pointcloud
    python examples/pointcloud/idpt_classify.py --data /path/to/modelnet40_normal_resampled
"""

import sys

from polyprompt.pointcloud.demo import main

if __name__ == "__main__":
    sys.exit(main())
