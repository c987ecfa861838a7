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


def test_self_training_resumes_exactly(tiny_task, tiny_mit, tmp_path):
    cfg4 = _cfg(4, mic=True)
    full = _student(tiny_mit, savpt=True)
    UDATrainer(cfg4, Variant.CODA, progress=False).fit(
        full, tiny_task.source, tiny_task.target_train
    )

    part = _student(tiny_mit, savpt=True)
    ck = str(tmp_path / "ck")
    cfg2 = cfg4.replace(iterations=2)
    UDATrainer(cfg2, Variant.CODA, progress=False, checkpoint_dir=ck).fit(
        part, tiny_task.source, tiny_task.target_train
    )
    resumed = _student(tiny_mit, savpt=True)  # a fresh process: weights come from the checkpoint
    res = UDATrainer(cfg4, Variant.CODA, progress=False, checkpoint_dir=ck).fit(
        resumed, tiny_task.source, tiny_task.target_train
    )
    for k, v in full.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k
    assert res.teacher is not None
