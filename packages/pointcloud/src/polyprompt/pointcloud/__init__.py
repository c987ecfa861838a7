"""polyprompt.pointcloud — IDPT: instance-aware dynamic prompts for pre-trained point cloud models.

Zha, Wang, Dai, Chen, Li, Xia: *Instance-aware Dynamic Prompt Tuning for Pre-trained Point
Cloud Models*, ICCV 2023 (official code ``zyh16143998882/ICCV23-IDPT``), on a Point-MAE encoder
(Pang et al., ECCV 2022) built from timm's ViT blocks.

Importing this package is cheap: names resolve on first access (torch, timm, trimesh and h5py
load only when a module that needs them is used).

Example::

    >>> from polyprompt.pointcloud import PointMAEBackbone, PointMAEConfig   # doctest: +SKIP
    >>> from polyprompt.core import create                                     # doctest: +SKIP
    >>> model = create("idpt", PointMAEBackbone(PointMAEConfig.tiny()), num_classes=5)  # doctest: +SKIP
"""

from __future__ import annotations

from polyprompt.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # backbone
    "PointMAEBackbone": "backbone",
    "PointMAEConfig": "backbone",
    "PatchEncoder": "backbone",
    "PoolMode": "backbone",
    "load_point_mae_checkpoint": "checkpoint",
    "convert_official_state_dict": "checkpoint",
    # ops
    "farthest_point_sample": "ops",
    "knn_indices": "ops",
    "group_points": "ops",
    "chamfer_l2": "ops",
    "prepare_points": "ops",
    # method
    "IDPT": "method",
    "IDPTConfig": "method",
    "HeadFeatures": "method",
    "DGCNNPromptGenerator": "generator",
    # pre-training
    "PointMAEPretrainConfig": "pretrain",
    "PointMAEPretrainer": "pretrain",
    "pretrain_point_mae": "pretrain",
    # data
    "PointCloudData": "data",
    "PointAugment": "data",
    "load_furniture": "data",
    "load_digit_points": "data",
    "load_modelnet40": "data",
    "load_scanobjectnn": "data",
    "load_point_dataset": "data",
    "primitive_clouds": "data",
    "UnlabelledClouds": "data",
    "load_mesh_folder": "data",
    "load_pybullet_meshes": "data",
    "pybullet_data_dir": "data",
    # demo
    "run_demo": "demo",
}

__all__ = sorted([*_EXPORTS, "__version__"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), ("__version__",))
