"""Trained IDPT beats its untrained self and chance on real data (MNIST digits as point sets)."""

import torch

from polyprompt.core import Trainer, TrainerConfig, create
from polyprompt.pointcloud.backbone import PointMAEBackbone, PointMAEConfig
from polyprompt.pointcloud.data import load_digit_points
from polyprompt.pointcloud.method import CachedTokens


def test_idpt_learns_real_digit_point_sets():
    data = load_digit_points(128, max_samples=600)
    keep = torch.isin(data.labels, torch.tensor([0, 1, 7]))
    pts, y = data.points[keep], data.labels[keep]
    y = torch.bucketize(y, torch.tensor([0, 1, 7]))  # 0, 1, 7 -> 0, 1, 2
    train, test = slice(0, 120), slice(120, 180)
    torch.manual_seed(0)
    model = create("idpt", PointMAEBackbone(PointMAEConfig.tiny()), num_classes=3, k=8)
    cache = model.feature_cache(in_memory=True)
    tr = torch.utils.data.TensorDataset(cache.tokens(pts[train]), y[train])
    te = torch.utils.data.TensorDataset(cache.tokens(pts[test]), y[test])
    net = CachedTokens(model)
    trainer = Trainer(
        TrainerConfig(
            epochs=12, batch_size=16, lr=2e-3, seed=0, progress=False, device="cpu", drop_last=True
        ),
        metric="accuracy",
    )
    before = trainer.evaluate(net, te)["metric"]
    trainer.fit(net, tr)
    after = trainer.evaluate(net, te)["metric"]
    assert after >= 0.7 and after > before + 0.2, (before, after)
