import copy

import pytest
import torch
from torch import nn

from polyprompt.adapt.backbone import SegFormerBackbone
from polyprompt.adapt.data.common import SegmentationSet
from polyprompt.adapt.method import CoDA, CoDAConfig
from polyprompt.adapt.selftrain import (
    MeanTeacher,
    SelfTrainingConfig,
    UDATrainer,
    Variant,
    block_mask,
    classmix_masks,
    weighted_ce,
)
from polyprompt.core.errors import ConfigError, InputError


def test_mean_teacher_ema_rule():
    student = nn.Linear(2, 2)
    teacher = MeanTeacher(student)
    before = teacher.tensors()["weight"].clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    a = teacher.update(iteration=1, alpha=0.99)  # min(1 - 1/2, 0.99) = 0.5
    assert a == 0.5
    assert torch.allclose(teacher.tensors()["weight"], 0.5 * before + 0.5 * student.weight)
    assert teacher.update(iteration=10_000, alpha=0.99) == 0.99
    assert all(n.startswith("ema__") for n, _ in teacher.named_buffers())
    assert list(teacher.parameters()) == []


def test_classmix_takes_half_of_the_source_classes_and_mic_masks_blocks():
    gen = torch.Generator().manual_seed(0)
    lab = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 255]]).view(1, 2, 4).repeat(2, 1, 1)
    m = classmix_masks(lab, 255, gen)
    for i in range(2):
        chosen = lab[i][m[i]].unique()
        assert len(chosen) == 2 and 255 not in chosen.tolist()
    mask = block_mask((4, 64, 64), 0.7, 8, gen, "cpu")
    assert mask.shape == (4, 1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 0.15 < float(mask.mean()) < 0.45  # about 30% of the blocks stay visible
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    w = torch.full((2, 4, 4), 0.25)
    assert torch.allclose(
        weighted_ce(logits, labels, w, 255), 0.25 * weighted_ce(logits, labels, None, 255)
    )


def _student(tiny_mit, savpt: bool) -> CoDA:
    torch.manual_seed(0)
    return CoDA(
        SegFormerBackbone(tiny_mit, num_classes=7),
        CoDAConfig(image_size=32, patch_size=4, use_savpt=savpt),
    )


def _cfg(iterations: int, **kw) -> SelfTrainingConfig:
    base = dict(
        iterations=iterations,
        iters_per_epoch=2,
        batch_size=2,
        lr=1e-3,
        mask_block_size=8,
        cycle_until=4,
        chain_period=2,
        pseudo_threshold=0.5,
    )
    base.update(kw)
    return SelfTrainingConfig(**base)


def test_coda_iteration_follows_the_chain_and_trains(tiny_task, tiny_mit):
    student = _student(tiny_mit, savpt=True)
    before = copy.deepcopy(student.state_dict())
    res = UDATrainer(_cfg(6), Variant.CODA, progress=False).fit(
        student, tiny_task.source, tiny_task.target_train
    )
    assert res.iterations == 6
    assert res.phase_counts == {"easy": 2, "hard": 2, "all": 2}
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("savpt.") for k in changed) and any(
        k.startswith("backbone.") for k in changed
    )
    t = res.teacher.tensors()
    assert not torch.equal(t["savpt.hard_prompt.patches"], student.savpt.hard_prompt.patches)


def test_variants_need_matching_models_and_data(tiny_task, tiny_mit):
    plain = _student(tiny_mit, savpt=False)
    with pytest.raises(ConfigError, match="use_savpt=True"):
        UDATrainer(_cfg(2), "coda", progress=False).fit(
            plain, tiny_task.source, tiny_task.target_train
        )
    with pytest.raises(ConfigError, match="unknown variant"):
        UDATrainer(_cfg(2), "dacs")
    trainer = UDATrainer(_cfg(2), "self_training", progress=False)
    with pytest.raises(InputError, match="empty"):
        trainer.fit(plain, tiny_task.source, [])
    unlabelled = SegmentationSet(tiny_task.target_train.images, None, 7)
    with pytest.raises(InputError, match="labelled"):
        trainer.fit(plain, unlabelled, tiny_task.target_train)
    small = SegmentationSet(torch.rand(2, 3, 64, 64), None, 7)
    with pytest.raises(InputError, match="one size"):
        trainer.fit(plain, tiny_task.source, small)


def test_self_training_resumes_exactly(tiny_task, tiny_mit, tmp_path, monkeypatch):
    from polyprompt.adapt.selftrain import _UDAModule

    cfg4 = _cfg(4, mic=True, warmup_iters=1)
    full = _student(tiny_mit, savpt=True)
    UDATrainer(cfg4, Variant.CODA, progress=False).fit(
        full, tiny_task.source, tiny_task.target_train
    )

    # the same run, killed after its first checkpoint (epoch of 2 iterations): the poly
    # schedule spans all 4 iterations, so a shorter config would not be the same run
    part = _student(tiny_mit, savpt=True)
    ck = str(tmp_path / "ck")
    forward = _UDAModule.forward

    def crash_at_2(self, *args):
        if int(self.iteration) == 2:
            raise RuntimeError("killed")
        return forward(self, *args)

    with monkeypatch.context() as m:
        m.setattr(_UDAModule, "forward", crash_at_2)
        with pytest.raises(RuntimeError, match="killed"):
            UDATrainer(cfg4, Variant.CODA, progress=False, checkpoint_dir=ck).fit(
                part, tiny_task.source, tiny_task.target_train
            )
    resumed = _student(tiny_mit, savpt=True)  # a fresh process: weights come from the checkpoint
    seen = []

    def count(self, *args):
        seen.append(int(self.iteration))
        return forward(self, *args)

    with monkeypatch.context() as m:
        m.setattr(_UDAModule, "forward", count)
        res = UDATrainer(cfg4, Variant.CODA, progress=False, checkpoint_dir=ck).fit(
            resumed, tiny_task.source, tiny_task.target_train
        )
    assert seen == [2, 3]  # it went on from the checkpoint, not from scratch
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    assert res.teacher is not None


class _BNNet(nn.Module):
    """Conv + BatchNorm + dropout: what the SegFormer decode head has (linear_fuse, BN, dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)))


def test_teacher_normalises_with_the_target_batch_statistics_like_dafromer():
    # DAFormer dacs.py / MIC teacher_module.py: the EMA model predicts in train mode with only
    # dropout off -> BatchNorm uses the statistics of the (dark) target batch, not the running
    # statistics gathered on source / mixed batches (the bug that collapsed self-training)
    torch.manual_seed(0)
    student = _BNNet()
    with torch.no_grad():  # running stats of bright source images
        student.bn.running_mean.fill_(5.0)
        student.bn.running_var.fill_(0.01)
    teacher = MeanTeacher(student)
    assert teacher.batch_stats
    dark = 0.05 * torch.rand(4, 3, 8, 8)
    buffers = {k: v.clone() for k, v in teacher.tensors().items()}
    out = teacher(dark)
    with torch.no_grad():
        h = student.conv(dark)
        expected = torch.nn.functional.batch_norm(
            h, None, None, student.bn.weight, student.bn.bias, training=True
        )
    assert torch.allclose(out, expected, atol=1e-5)  # batch statistics, and no dropout
    assert torch.equal(teacher(dark), out)  # deterministic: dropout is off
    for k, v in teacher.tensors().items():  # the EMA buffers are not touched by the forward
        assert torch.equal(v, buffers[k]), k
    assert student.training and student.drop.training  # the student's modes are restored
    student.eval()
    teacher(dark)
    assert not student.training and not student.drop.training
    # eval-mode option: the running statistics (far from the dark batch's)
    legacy = MeanTeacher(student, batch_stats=False)
    assert not torch.allclose(legacy(dark), out, atol=1e-2)
    assert torch.allclose(legacy(dark), student(dark))


def test_self_training_builds_a_batch_stats_teacher_by_default(tiny_mit):
    from polyprompt.adapt.selftrain import _UDAModule

    student = _student(tiny_mit, savpt=False)
    assert _UDAModule(student, _cfg(2), Variant.SELF_TRAINING).teacher.batch_stats
    off = _UDAModule(student, _cfg(2, teacher_batch_stats=False), Variant.SELF_TRAINING)
    assert not off.teacher.batch_stats


def test_strong_augmentation_follows_dacs_transforms():
    from polyprompt.adapt.selftrain import color_jitter, gaussian_blur, hue_shift

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    # official: `if color_jitter > p` with color_jitter ~ U(0, 1): applied ~80% of the time at p=0.2
    applied = sum(not torch.equal(color_jitter(x, 0.2, 0.2, gen), x) for _ in range(200))
    assert 140 <= applied <= 180, applied
    assert torch.equal(color_jitter(x, 1.0, 0.2, gen), x)  # p=1: never
    blurred = sum(not torch.equal(gaussian_blur(x, gen), x) for _ in range(200))
    assert 70 <= blurred <= 130, blurred
    # hue rotation: red -> green after a third of a turn, identity at 0, value/saturation kept
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 0.8
    green = hue_shift(red, torch.tensor([1 / 3]))
    assert torch.allclose(green[:, 1], torch.full((1, 2, 2), 0.8), atol=1e-5)
    assert torch.allclose(green[:, [0, 2]], torch.zeros(1, 2, 2, 2), atol=1e-5)
    assert torch.allclose(hue_shift(x, torch.zeros(4)), x, atol=1e-5)
    shifted = hue_shift(x, torch.full((4,), 0.37))
    assert torch.allclose(shifted.amax(1), x.amax(1), atol=1e-5)
    assert torch.allclose(shifted.amin(1), x.amin(1), atol=1e-5)


def test_optimiser_groups_and_poly_warmup_schedule_follow_the_official_config(tiny_mit):
    from polyprompt.adapt.selftrain import _UDAModule, param_groups, poly_warmup_factor

    cfg = _cfg(100, lr=6e-5, weight_decay=0.01, warmup_iters=10)
    wrapper = _UDAModule(_student(tiny_mit, savpt=True), cfg, Variant.CODA)
    named = [(n, p) for n, p in wrapper.named_parameters() if p.requires_grad]
    groups = param_groups(named, cfg.lr, cfg.weight_decay, cfg)
    assert sum(len(g["params"]) for g in groups) == len(named)
    by_id = {id(p): g for g in groups for p in g["params"]}
    for name, p in named:
        g = by_id[id(p)]
        head, norm = "decode_head" in name, "norm" in name
        assert g["lr"] == pytest.approx(6e-4 if head else 6e-5), name
        assert g["weight_decay"] == pytest.approx(0.0 if norm else 0.01), name
    assert any("decode_head" in n for n, _ in named) and any("norm" in n for n, _ in named)
    # mmcv poly (power 1, min_lr 0) with a linear warm-up from 1e-6
    assert poly_warmup_factor(0, 100, 10) == pytest.approx(1e-6)
    assert poly_warmup_factor(5, 100, 10) == pytest.approx(0.95 * (0.5 + 0.5e-6))
    assert poly_warmup_factor(10, 100, 10) == pytest.approx(0.9)
    assert poly_warmup_factor(100, 100, 10) == 0.0
    assert poly_warmup_factor(50, 100, 0, power=0.0) == 1.0
    # scaled(): DAFormer's 1500/40000 warm-up share
    assert SelfTrainingConfig.scaled(80).warmup_iters == 3
    assert SelfTrainingConfig.scaled(40000).warmup_iters == 1500


def test_uda_trainer_uses_the_official_lr_schedule(tiny_task, tiny_mit):
    student = _student(tiny_mit, savpt=False)
    res = UDATrainer(
        _cfg(4, iters_per_epoch=4, warmup_iters=2), "self_training", progress=False
    ).fit(student, tiny_task.source, tiny_task.target_train)
    assert res.iterations == 4
    lr = res.history[-1].get("lr")
    # after one epoch of 4 steps: poly factor 0 -> the groups' lr reached 0
    assert lr is not None and lr == pytest.approx(0.0, abs=1e-12), res.history
