"""Trained DVPT beats its baseline (linear probe on the same frozen backbone) on real data.

A tiny backbone is pre-trained inside the test with the label-free rotation pretext (no
cache is assumed); both methods share it, the trainer, the seed and the data.
"""

from __future__ import annotations

import copy

import pytest
import torch

from polyprompt.core import create
from polyprompt.core.trainer import Trainer, TrainerConfig


def _fit_eval(method, backbone, splits, epochs, lr, **opts):
    torch.manual_seed(0)
    model = create(method, backbone, num_classes=splits.train.num_classes, **opts)
    trainer = Trainer(
        TrainerConfig(
            epochs=epochs,
            batch_size=32,
            lr=lr,
            scheduler="cosine",
            warmup_epochs=1,
            progress=False,
            device="cpu",
            seed=0,
        ),
        metric="accuracy",
    )
    trainer.fit(model, splits.train.dataset(), splits.val.dataset())
    return float(trainer.evaluate(model, splits.test.dataset())["metric"])


def test_dvpt_beats_linear_probe_on_br35h_subset():
    """2-D, fast: 300 real Br35H MRI slices (150 per class), tumour vs no tumour, on a small
    frozen timm ViT (seeded random init: in-situ pre-training of this tiny model in a few
    seconds does not learn the pretext, so it would not change the backbone)."""
    from polyprompt.medical.data import load_br35h, stratified_split
    from polyprompt.medical.pretrain import BackboneConfig

    data = load_br35h(size=32, progress=False, max_per_class=150)
    splits = stratified_split(data, val_fraction=0.2, test_fraction=0.3, seed=0)
    arch = BackboneConfig(embed_dim=32, depth=4, num_heads=4)
    torch.manual_seed(0)
    backbone = arch.build()
    probe = _fit_eval("linear_probe", copy.deepcopy(backbone), splits, 10, 3e-3)
    dvpt = _fit_eval("dvpt", copy.deepcopy(backbone), splits, 10, 3e-3, hidden=4)
    assert dvpt > probe, (dvpt, probe)
    assert dvpt > 0.6, dvpt


@pytest.mark.slow
def test_dvpt_beats_linear_probe_on_br35h():
    """2-D, slow: the example's backbone (pre-trained in situ with the rotation pretext on the
    whole Br35H train split) and the full splits."""
    from polyprompt.medical.data import load_br35h, stratified_split
    from polyprompt.medical.pretrain import BackboneConfig, PretrainConfig, pretrain_backbone

    splits = stratified_split(load_br35h(size=32, progress=False), seed=0)
    pb = pretrain_backbone(
        splits.train.images,
        arch=BackboneConfig(),
        train=PretrainConfig(epochs=4),
        name="br35h-vit",
        progress=False,
        verbose=False,
    )
    probe = _fit_eval("linear_probe", pb.backbone(), splits, 6, 3e-3)
    dvpt = _fit_eval("dvpt", pb.backbone(), splits, 6, 3e-3)
    assert dvpt > probe + 0.03, (dvpt, probe)
