import torch

from polyprompt.pointcloud.backbone import PointMAEConfig
from polyprompt.pointcloud.pretrain import (
    PointMAEPretrainConfig,
    PointMAEPretrainer,
    pretrain_point_mae,
)


def test_masking_and_loss():
    from polyprompt.pointcloud.backbone import PointMAEBackbone

    model = PointMAEPretrainer(
        PointMAEBackbone(PointMAEConfig.tiny()),
        PointMAEPretrainConfig(decoder_depth=1, decoder_num_heads=4),
    )
    mask = model.random_mask(3, 32, torch.device("cpu"))
    assert mask.sum(1).tolist() == [19, 19, 19]  # int(0.6 * 32)
    loss = model(torch.rand(2, 128, 3))
    loss.backward()
    assert loss.item() > 0 and model.mask_token.grad is not None


def test_pretraining_learns_and_is_cached():
    from polyprompt.pointcloud.data import primitive_clouds

    clouds = primitive_clouds(24, 128, seed=0)
    cfg = PointMAEPretrainConfig(
        decoder_depth=1,
        decoder_num_heads=4,
        epochs=4,
        batch_size=8,
        warmup_epochs=1,
        num_points=128,
        lr=2e-3,
    )
    first = pretrain_point_mae(clouds, PointMAEConfig.tiny(), cfg, progress=False)
    assert not first.from_cache and first.path is not None and first.path.is_file()
    assert first.losses[-1] < first.losses[0]
    again = pretrain_point_mae(clouds, PointMAEConfig.tiny(), cfg, progress=False)
    assert again.from_cache
    x = clouds[:2]
    assert torch.equal(again.model(x), first.model(x))
